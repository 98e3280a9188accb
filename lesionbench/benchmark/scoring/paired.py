"""The studentized paired permutation test behind :func:`lesionbench.benchmark.scoring.metrics.paired_comparison`.

Statistic: ``T = (metric(A) - metric(B)) / SE``, with ``SE`` the patient-clustered standard error of the
difference (:mod:`.clustered_variance`: DeLong/Obuchowski for AUC, the leave-one-patient-out jackknife
for the others). Each permutation swaps the two models' predictions of whole patients and recomputes
``T`` (the difference *and* its standard error) on the swapped data.

Why studentize: swapping is exact only when each patient's two predictions are exchangeable. Two
equally good models need not be: with crossing ROC curves (one better at high specificity, the other
at high sensitivity) the swapped differences have a smaller spread than the observed one, and the
unstudentized test rejects 10-13% of the time at alpha 0.05 (the review of issue 21). ``T`` is
asymptotically N(0, 1) both on the data and under the swaps whatever the two models' joint law, so
the test stays exact under exchangeability and becomes asymptotically valid without it (Janssen 1997;
Chung & Romano 2013). ``benchmarks/stats_calibration.py`` measures it.

Scale: swapping needs the two models on one scale. Each model's scores are replaced by the form the
metric depends on (within-model mid-ranks scaled to (0, 1] for the ranking metrics, the predicted class
for balanced accuracy), so a monotone rescaling of either model changes neither the statistic nor p.
"""

from __future__ import annotations

import numpy as np

from lesionbench.benchmark.scoring._kernels import _evaluate, _Target
from lesionbench.benchmark.scoring.clustered_variance import DELONG_METRICS, influence_variance, jackknife_values, jackknife_variance, metric_influence

#: Permutation rows processed at once (bounds the memory of the jackknife's rows x patients values).
_CHUNK = 128


def scale_free(name: str, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scores in the form ``name`` depends on, on a scale two models share."""
    if name == "balanced_accuracy":
        p = s["proba"]
        return {"proba": np.eye(p.shape[1])[p.argmax(1)]}
    return {k: quantiles(v) for k, v in s.items()}


def quantiles(v: np.ndarray) -> np.ndarray:
    """Within-column ranks scaled by n (tied scores share their mid-rank, so they stay tied)."""
    if v.ndim == 2:
        return np.column_stack([quantiles(col) for col in v.T])
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    mid = np.cumsum(counts) - (counts - 1) / 2.0
    return mid[inverse.ravel()] / len(v)


def stacked(t: _Target, sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> tuple[_Target, dict[str, np.ndarray]]:
    """Both models' cases as one test set of 2n: a weight row [1 - swap, swap] then selects model A
    with the swapped cases taken from B, so every permutation runs through the weighted kernels."""
    both = _Target(
        t.kind,
        label=None if t.label is None else np.r_[t.label, t.label],
        time=None if t.time is None else np.r_[t.time, t.time],
        event=None if t.event is None else np.r_[t.event, t.event],
    )
    return both, {k: np.concatenate([sa[k], sb[k]]) for k in sa}


def studentized(name: str, t: _Target, s: dict[str, np.ndarray], Wa: np.ndarray, Wb: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Difference ``metric(Wa) - metric(Wb)`` of each pair of weight rows and its patient-clustered SE."""
    if name in DELONG_METRICS:
        va, pa = metric_influence(name, t, s, Wa, codes, n_groups)
        vb, pb = metric_influence(name, t, s, Wb, codes, n_groups)
        return va - vb, np.sqrt(influence_variance(pa - pb))
    d = _evaluate(name, t, s, Wa) - _evaluate(name, t, s, Wb)
    J = jackknife_values(name, t, s, Wa, codes, n_groups) - jackknife_values(name, t, s, Wb, codes, n_groups)
    return d, np.sqrt(jackknife_variance(J))


def t_statistic(d: np.ndarray, se: np.ndarray) -> np.ndarray:
    """``d / se``; a zero SE gives 0 for a zero difference (identical predictions) and +-inf otherwise."""
    tiny = 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(se > tiny, d / np.where(se > tiny, se, 1.0), np.where(np.abs(d) <= tiny, 0.0, np.sign(d) * np.inf))


def swap_statistics(name: str, t: _Target, sa: dict[str, np.ndarray], sb: dict[str, np.ndarray], swap: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """The studentized statistic A - B of each row of ``swap`` ((R, patients), True: that patient's
    predictions swapped), on the scale-free scores. Row of all False: the observed statistic."""
    both, s = stacked(t, scale_free(name, sa), scale_free(name, sb))
    codes2 = np.r_[codes, codes]
    out = np.empty(len(swap))
    for i in range(0, len(swap), _CHUNK):
        sw = swap[i : i + _CHUNK][:, codes].astype(float)
        keep = 1.0 - sw
        d, se = studentized(name, both, s, np.hstack([keep, sw]), np.hstack([sw, keep]), codes2, n_groups)
        out[i : i + _CHUNK] = t_statistic(d, se)
    return out


def permutation_p(observed: float, null: np.ndarray, alternative: str) -> float:
    """``(1 + k) / (1 + len(null))``, k the permuted statistics at least as extreme as ``observed``."""
    tol = 1e-9 * max(1.0, abs(observed)) if np.isfinite(observed) else 0.0  # permutations reproducing it count
    if alternative == "greater":
        k = np.sum(null >= observed - tol)
    elif alternative == "less":
        k = np.sum(null <= observed + tol)
    else:
        k = np.sum(np.abs(null) >= abs(observed) - tol)
    return float((1 + k) / (1 + len(null)))


def studentized_permutation_p(
    name: str, t: _Target, sa: dict[str, np.ndarray], sb: dict[str, np.ndarray], swap: np.ndarray, codes: np.ndarray, n_groups: int, alternative: str
) -> tuple[float, float]:
    """(p, observed statistic) of the studentized paired permutation test (module docstring)."""
    stats = swap_statistics(name, t, sa, sb, np.vstack([np.zeros((1, swap.shape[1]), bool), swap]), codes, n_groups)
    observed = float(stats[0])
    if np.isnan(observed):
        return float("nan"), observed
    null = stats[1:]
    return permutation_p(observed, null[~np.isnan(null)], alternative), observed
