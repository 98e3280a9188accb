"""Metrics from scores (never hard labels), percentile-bootstrap CIs and paired model comparisons.

Every metric is written once, in a *weighted* form ``f(y, scores, W) -> (B,)`` where each row of
``W`` holds per-case multiplicities. A row of ones is the plain metric on the test set; a row of
bootstrap counts is the metric on that resample, because a case drawn k times counts exactly like
k copies of it. That lets 1,000 resamples run as a few matrix operations instead of 1,000 calls, and
the point estimates agree with scikit-learn / lifelines (the tests check both, on saved predictions
and on explicit resamples):

=====================  ======================================================================
``balanced_accuracy``  ``sklearn.metrics.balanced_accuracy_score(y, scores.argmax(1))``
``map``                mean over classes of ``average_precision_score(y == k, scores[:, k])``;
                       on a binary task the AP of the positive class (= ``average_precision``)
``auc``                ``roc_auc_score`` (binary), or mean one-vs-rest AUC (multiclass)
``average_precision``  ``average_precision_score`` (binary)
``c_index``            ``lifelines.utils.concordance_index(time, -risk, event)``
``auc_2y``             ``roc_auc_score`` of the 2-year label (:func:`two_year_label`), censored
                       <= 730 days excluded
=====================  ======================================================================

Macro averages run over the classes present in ``y`` (a bootstrap resample, or a small test set,
may miss a rare class; scikit-learn's multiclass ``roc_auc_score`` would refuse, its balanced
accuracy already skips absent classes). A metric that is undefined on a resample (binary AUC with
no positive drawn) is NaN there and left out of the percentiles.

The bootstrap can resample whole patients (``groups``): lesions of one patient are correlated, and a
lesion-level bootstrap then gives intervals that are too narrow. The scorer does this by default; with
one lesion per patient it is the same as resampling lesions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError, did_you_mean
from lesionbench.benchmark.types import MetricValue, TaskKind

logger = logging.getLogger(__name__)

#: Metrics computed by default per task kind (a task's ``meta.metrics`` may pick others of its kind).
DEFAULT_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.MULTICLASS: ("balanced_accuracy", "map", "auc"),
    TaskKind.BINARY: ("auc", "average_precision", "balanced_accuracy"),
    TaskKind.SURVIVAL: ("auc_2y", "c_index"),
}
#: Other spellings found in papers and task files.
ALIASES: dict[str, str] = {
    "ba": "balanced_accuracy",
    "bacc": "balanced_accuracy",
    "balanced_acc": "balanced_accuracy",
    "mean_average_precision": "map",
    "ap": "average_precision",
    "roc_auc": "auc",
    "auroc": "auc",
    "cindex": "c_index",
    "c-index": "c_index",
    "concordance": "c_index",
    "auc2y": "auc_2y",
    "auc_2yr": "auc_2y",
    "two_year_auc": "auc_2y",
}
#: Bootstrap weight rows processed at once (bounds memory for large test sets).
_CHUNK = 256


# ------------------------------------------------------------------------------- inputs
def canonical_metric(name: str) -> str:
    """The canonical name of a metric (``"mAP"`` -> ``"map"``); unknown names raise with suggestions."""
    key = name.strip().lower().replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in _METRICS:
        known = sorted(_METRICS)
        hint = did_you_mean(key, known + sorted(ALIASES), aliases=ALIASES)
        raise UnknownNameError(f"Unknown metric {name!r}.{hint} Available: {', '.join(known)}.")
    return key


def metrics_for(kind: TaskKind | str, requested: Sequence[str] | None = None) -> tuple[str, ...]:
    """The metrics to compute for a task kind: ``requested`` (validated) or the kind's defaults."""
    kind = TaskKind(kind)
    names = [canonical_metric(m) for m in requested] if requested else list(DEFAULT_METRICS[kind])
    wrong = [m for m in names if kind not in _METRICS[m][1]]
    if wrong:
        raise ConfigurationError(
            f"Metric(s) {wrong} do not apply to a {kind} task. Use some of {list(DEFAULT_METRICS[kind])}."
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class _Target:
    """Ground truth in the form the weighted metrics use."""

    kind: TaskKind
    label: np.ndarray | None = None  # int class index (classification)
    time: np.ndarray | None = None
    event: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.label if self.label is not None else self.time)


def _target(kind: TaskKind, y_true: Any) -> _Target:
    if kind == TaskKind.SURVIVAL:
        if isinstance(y_true, Mapping) or hasattr(y_true, "columns"):
            time, event = np.asarray(y_true["time"], float), np.asarray(y_true["event"], float)
        else:
            arr = np.asarray(y_true, dtype=float)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise ConfigurationError(
                    f"Survival ground truth must be (n, 2) columns time, event (or a table with those columns); got shape {arr.shape}."
                )
            time, event = arr[:, 0], arr[:, 1]
        return _Target(kind, time=time, event=event)
    label = np.asarray(y_true)
    if label.ndim != 1:
        raise ConfigurationError(f"Class labels must be one-dimensional; got shape {label.shape}.")
    return _Target(kind, label=label.astype(int))


def _scores(kind: TaskKind, scores: Any, n: int) -> dict[str, np.ndarray]:
    """Normalise scores: ``proba`` (n, K) for classification; ``score`` and ``risk`` for survival."""
    if kind == TaskKind.SURVIVAL:
        if isinstance(scores, Mapping) or hasattr(scores, "columns"):
            risk = np.asarray(scores["risk"], float) if "risk" in scores else None
            score = np.asarray(scores["score"], float) if "score" in scores else None
            if risk is None and score is None:
                raise ConfigurationError("Survival scores need a 'risk' and/or a 'score' (2-year probability) column.")
            risk = risk if risk is not None else score
            score = score if score is not None else risk
        else:
            risk = score = np.asarray(scores, float)
        out = {"risk": risk, "score": score}
    else:
        p = np.asarray(scores, dtype=float)
        if kind == TaskKind.BINARY and p.ndim == 1:
            p = np.column_stack([1.0 - p, p])
        if p.ndim != 2:
            raise ConfigurationError(f"Scores for a {kind} task must be (n, n_classes) probabilities; got shape {p.shape}.")
        out = {"proba": p}
    for k, v in out.items():
        if len(v) != n:
            raise ConfigurationError(f"{len(v)} {k} scores for {n} cases: scores and labels must align row by row.")
        if not np.all(np.isfinite(v)):
            raise ConfigurationError(f"{int((~np.isfinite(v)).sum())} {k} scores are NaN or infinite; a probe must score every case.")
    return out


# ------------------------------------------------------------------ weighted metric kernels
def _grouped(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score value, highest score first: (B, G) each."""
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    Wo = W[:, order]
    po = pos[order]
    P = np.add.reduceat(Wo * po, starts, axis=1)
    N = np.add.reduceat(Wo * ~po, starts, axis=1)
    return P, N


def _w_auc(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC (ties count one half), NaN where a resample lacks either class."""
    P, N = _grouped(pos, s, W)
    ptot, ntot = P.sum(1), N.sum(1)
    below = ntot[:, None] - np.cumsum(N, axis=1)  # negatives with a strictly lower score
    num = (P * (below + 0.5 * N)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((ptot > 0) & (ntot > 0), num / (ptot * ntot), np.nan)


def _w_ap(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted average precision, sum over thresholds of (recall step) x precision, as scikit-learn."""
    P, N = _grouped(pos, s, W)
    tp, fp = np.cumsum(P, axis=1), np.cumsum(N, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ptot = P.sum(1)
        return np.where(ptot > 0, (P * prec).sum(1) / ptot, np.nan)


def _macro(values: list[np.ndarray]) -> np.ndarray:
    """Mean over classes of per-class values, skipping classes undefined on a resample."""
    stack = np.vstack(values)
    ok = np.isfinite(stack)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(0), np.where(ok, stack, 0.0).sum(0) / ok.sum(0), np.nan)


def _balanced_accuracy(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    p = s["proba"]
    correct = (p.argmax(1) == t.label).astype(float)
    recalls = []
    for k in range(p.shape[1]):
        m = (t.label == k).astype(float)
        support = W @ m
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(support > 0, (W @ (m * correct)) / support, np.nan))
    return _macro(recalls)


def _map(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    p = s["proba"]
    if t.kind == TaskKind.BINARY:
        # one positive class: averaging in the AP of "negative" (class 0 ranked by 1 - p) would
        # reward detecting negatives, which no binary task asks for
        return _average_precision(t, s, W)
    return _macro([_w_ap(t.label == k, p[:, k], W) for k in range(p.shape[1])])


def _auc(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    p = s["proba"]
    if t.kind == TaskKind.BINARY:
        return _w_auc(t.label == 1, p[:, 1], W)
    return _macro([_w_auc(t.label == k, p[:, k], W) for k in range(p.shape[1])])


def _average_precision(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    return _w_ap(t.label == 1, s["proba"][:, 1], W)


def _c_index(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    """Harrell's C with lifelines' rules: pair (i, j) is comparable when i died first, or at the
    same time as a censored j; concordant when i has the higher risk; tied risks count one half."""
    time, event, risk = t.time, t.event.astype(bool), s["risk"]
    comparable = event[:, None] & ((time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~event[None, :]))
    value = np.where(risk[:, None] > risk[None, :], 1.0, np.where(risk[:, None] == risk[None, :], 0.5, 0.0))
    A = comparable.astype(float)
    AV = A * value
    den = np.einsum("bi,ij,bj->b", W, A, W, optimize=True)
    num = np.einsum("bi,ij,bj->b", W, AV, W, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _auc_2y(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    y2 = two_year_label(t.time, t.event)
    known = np.isfinite(y2)
    return _w_auc(y2[known] == 1, s["score"][known], W[:, known])


_Kernel = Callable[[_Target, dict[str, np.ndarray], np.ndarray], np.ndarray]
#: name -> (weighted kernel, task kinds it applies to)
_METRICS: dict[str, tuple[_Kernel, tuple[TaskKind, ...]]] = {
    "balanced_accuracy": (_balanced_accuracy, (TaskKind.MULTICLASS, TaskKind.BINARY)),
    "map": (_map, (TaskKind.MULTICLASS, TaskKind.BINARY)),
    "auc": (_auc, (TaskKind.MULTICLASS, TaskKind.BINARY)),
    "average_precision": (_average_precision, (TaskKind.BINARY,)),
    "c_index": (_c_index, (TaskKind.SURVIVAL,)),
    "auc_2y": (_auc_2y, (TaskKind.SURVIVAL,)),
}


def _evaluate(name: str, t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    kernel = _METRICS[name][0]
    if len(W) <= _CHUNK:
        return kernel(t, s, W)
    return np.concatenate([kernel(t, s, W[i : i + _CHUNK]) for i in range(0, len(W), _CHUNK)])


# ---------------------------------------------------------------------------- public API
def compute_metrics(kind: TaskKind | str, y_true: Any, scores: Any, metrics: Sequence[str] | None = None) -> dict[str, float]:
    """Point estimates of ``metrics`` (default: the kind's :data:`DEFAULT_METRICS`) on one test set.

    ``y_true``: class indices (classification) or (n, 2) ``[time, event]`` / a table with ``time`` and
    ``event`` (survival). ``scores``: class probabilities (n, K) (binary also (n,) = P(class 1)); for
    survival a table/mapping with ``risk`` (higher = earlier death, for the C-index) and ``score``
    (2-year death probability, for ``auc_2y``), or one array used for both.
    """
    kind = TaskKind(kind)
    names = metrics_for(kind, metrics)
    t = _target(kind, y_true)
    s = _scores(kind, scores, t.n)
    ones = np.ones((1, t.n))
    return {m: float(_evaluate(m, t, s, ones)[0]) for m in names}


def bootstrap_weights(n: int, n_boot: int, seed: int | Sequence[int], groups: Sequence[Any] | None = None) -> np.ndarray:
    """(n_boot, n) multiplicities of ``n_boot`` resamples with replacement, drawn from ``default_rng(seed)``.

    With ``groups`` (e.g. patient ids) whole groups are resampled (cluster bootstrap): a case's
    multiplicity is the number of times its group was drawn. With one case per group this is the
    plain case bootstrap, draw for draw.
    """
    codes, g = _group_codes(n, groups)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g, size=(n_boot, g))
    flat = (idx + g * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * g).reshape(n_boot, g).astype(float)
    return counts[:, codes]


def resampled_values(
    kind: TaskKind | str, y_true: Any, scores: Any, metric: str, *, n_boot: int = 1000, seed: int | Sequence[int] = 0, groups: Sequence[Any] | None = None
) -> np.ndarray:
    """``metric`` on each of ``n_boot`` resamples of the test set (:func:`bootstrap_weights`): NaN where
    it is undefined (a class not drawn). The same ``n``, ``n_boot``, ``seed`` and ``groups`` give the
    same resamples, so several models' values line up resample by resample."""
    kind = TaskKind(kind)
    (name,) = metrics_for(kind, [metric])
    t = _target(kind, y_true)
    return _evaluate(name, t, _scores(kind, scores, t.n), bootstrap_weights(t.n, n_boot, seed, groups))


def bootstrap_ci(
    kind: TaskKind | str,
    y_true: Any,
    scores: Any,
    metrics: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
    level: float = 0.95,
    groups: Sequence[Any] | None = None,
) -> dict[str, MetricValue]:
    """Point estimate and ``level`` percentile-bootstrap CI of each metric over ``n_boot`` test-set resamples.

    All metrics share the same resamples. ``groups`` (patient ids) resamples whole patients, so lesions
    of one patient, which are not independent, do not make the interval too narrow.
    ``n_boot=0`` gives point estimates with NaN bounds.
    """
    kind = TaskKind(kind)
    names = metrics_for(kind, metrics)
    t = _target(kind, y_true)
    s = _scores(kind, scores, t.n)
    point = {m: float(_evaluate(m, t, s, np.ones((1, t.n)))[0]) for m in names}
    if n_boot <= 0:
        return {m: MetricValue(point[m]) for m in names}
    W = bootstrap_weights(t.n, n_boot, seed, groups)
    out = {}
    for m in names:
        lo, hi = _percentiles(_evaluate(m, t, s, W), level, m)
        out[m] = MetricValue(point[m], lo, hi)
    return out


def _percentiles(values: np.ndarray, level: float, name: str) -> tuple[float, float]:
    ok = np.isfinite(values)
    if not ok.any():
        return float("nan"), float("nan")
    if (~ok).any():
        logger.debug("%s undefined on %d of %d bootstrap resamples (a class not drawn); left out", name, (~ok).sum(), len(values))
    a = (1.0 - level) / 2.0
    lo, hi = np.percentile(values[ok], [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


#: Alternatives of the paired test: A differs from B (default), A is better, A is worse.
ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class PairedComparison:
    """Model A minus model B on the same test cases.

    ``p_value``: patient-level permutation test of "A and B are equally good" against ``alternative``
    (``"two-sided"`` by default; ``"greater"``: A is better; ``"less"``: A is worse). Each of ``n_perm``
    permutations swaps the two models' predictions of whole patients (``groups``; single cases without
    them), on a scale-free form of the scores (:func:`paired_comparison`); p = (1 + k) / (1 + n_perm)
    with k the permutations at least as extreme as the observed difference. NaN when the metric is
    undefined on the test set or ``n_perm`` is 0.
    """

    metric: str
    value_a: float
    value_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_boot: int
    n_perm: int
    alternative: str = "two-sided"
    n_groups: int | None = None

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


def infer_kind(y_true: Any, scores: Any, metric: str) -> TaskKind:
    """The task kind implied by a metric and the score shape (for callers that do not pass one)."""
    name = canonical_metric(metric)
    if TaskKind.SURVIVAL in _METRICS[name][1]:
        return TaskKind.SURVIVAL
    p = np.asarray(scores)
    return TaskKind.MULTICLASS if p.ndim == 2 and p.shape[1] > 2 else TaskKind.BINARY


def paired_comparison(
    y_true: Any,
    scores_a: Any,
    scores_b: Any,
    metric: str,
    *,
    kind: TaskKind | str | None = None,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: Sequence[Any] | None = None,
    alternative: str = "two-sided",
) -> PairedComparison:
    """Difference ``metric(A) - metric(B)``, its paired bootstrap CI and a permutation p-value.

    Resampling unit: whole ``groups`` (patient ids) when given, else single cases, for both the
    bootstrap (both models on the same resample, as in the FMCIB paper) and the permutation test
    (a patient's predictions are swapped between the models together: its lesions are not
    independent, and swapping them one by one understates the null variance).

    The permutation test swaps a *scale-free* form of each model's scores, the form the metric
    depends on: within-model ranks scaled to (0, 1] for the ranking metrics (AUC, AP, mAP, C-index,
    2-year AUC) and the predicted class for balanced accuracy. Swapping raw scores would mix two
    models' scales, so a monotone rescaling of one model (same metric) would change p. Under the
    null that each patient's two (scale-free) predictions are exchangeable, the test is exact;
    ``benchmarks/stats_calibration.py`` measures its type-I error with clustered lesions, also for
    two equally good models that are not exchangeable.
    """
    if alternative not in ALTERNATIVES:
        raise ConfigurationError(f"alternative must be one of {', '.join(ALTERNATIVES)}; got {alternative!r}.")
    name = canonical_metric(metric)
    kind = TaskKind(kind) if kind is not None else infer_kind(y_true, scores_a, name)
    metrics_for(kind, [name])
    t = _target(kind, y_true)
    sa, sb = _scores(kind, scores_a, t.n), _scores(kind, scores_b, t.n)
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ConfigurationError("The two models' scores have different shapes; compare predictions of the same task.")
    codes, n_groups = _group_codes(t.n, groups)
    ones = np.ones((1, t.n))
    va, vb = float(_evaluate(name, t, sa, ones)[0]), float(_evaluate(name, t, sb, ones)[0])
    diff = va - vb
    lo = hi = float("nan")
    if n_boot > 0:
        W = bootstrap_weights(t.n, n_boot, [seed, 0], groups)
        lo, hi = _percentiles(_evaluate(name, t, sa, W) - _evaluate(name, t, sb, W), level, name)
    p = float("nan")
    if n_perm > 0 and np.isfinite(diff):
        swap = np.random.default_rng([seed, 1]).random((n_perm, n_groups)) < 0.5
        p = _permutation_p(name, t, sa, sb, swap[:, codes].astype(float), diff, alternative)
    return PairedComparison(name, va, vb, diff, float(lo), float(hi), p, t.n, n_boot, n_perm, alternative, n_groups)


def _group_codes(n: int, groups: Sequence[Any] | None) -> tuple[np.ndarray, int]:
    """Integer group index of each case and the number of groups (each case its own group without ``groups``)."""
    if groups is None:
        return np.arange(n), n
    codes, uniques = pd.factorize(pd.Series(list(groups)))
    if len(codes) != n:
        raise ConfigurationError(f"{len(codes)} group ids for {n} cases; give one group (patient) id per case.")
    return codes, len(uniques)


def _scale_free(name: str, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scores in the form ``name`` depends on, on a scale two models share (see :func:`paired_comparison`)."""
    from scipy.stats import rankdata

    if name == "balanced_accuracy":
        p = s["proba"]
        return {"proba": np.eye(p.shape[1])[p.argmax(1)]}
    # ranks (ties keep their mid-rank, so tied scores stay tied) scaled by n: the case's quantile
    return {k: rankdata(v, axis=0) / len(v) for k, v in s.items()}


def _stacked(t: _Target, sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> tuple[_Target, dict[str, np.ndarray]]:
    """Both models' cases as one test set of 2n: a weight row [1 - swap, swap] then selects model A
    with the swapped cases taken from B, so every permutation runs through the weighted kernels."""
    both = _Target(
        t.kind,
        label=None if t.label is None else np.r_[t.label, t.label],
        time=None if t.time is None else np.r_[t.time, t.time],
        event=None if t.event is None else np.r_[t.event, t.event],
    )
    return both, {k: np.concatenate([sa[k], sb[k]]) for k in sa}


def _permutation_p(name: str, t: _Target, sa: dict[str, np.ndarray], sb: dict[str, np.ndarray], swap: np.ndarray, diff: float, alternative: str) -> float:
    both, s = _stacked(t, _scale_free(name, sa), _scale_free(name, sb))
    keep = 1.0 - swap
    d = _evaluate(name, both, s, np.hstack([keep, swap])) - _evaluate(name, both, s, np.hstack([swap, keep]))
    # a tolerance so that permutations reproducing the observed difference count as "at least as extreme"
    tol = 1e-12
    if alternative == "greater":
        k = np.sum(d >= diff - tol)
    elif alternative == "less":
        k = np.sum(d <= diff + tol)
    else:
        k = np.sum(np.abs(d) >= abs(diff) - tol)
    return float((1 + k) / (1 + len(swap)))
