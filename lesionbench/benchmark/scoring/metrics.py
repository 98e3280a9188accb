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
``auc_2y``             ``sksurv.metrics.cumulative_dynamic_auc(y, y, score, [730])``: the 2-year
                       AUC with inverse-probability-of-censoring weights (censoring distribution
                       from the test set, or the resample)
``auc_2y_known``       ``roc_auc_score`` of the 2-year label (:func:`two_year_label`), censored
                       before 730 days excluded (a reference column; biased by early censoring)
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.scoring._kernels import _METRICS, _evaluate, _scores, _target
from lesionbench.benchmark.scoring.paired import studentized_permutation_p
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
    "auc_2y_plain": "auc_2y_known",
}


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
    return weighted_values(kind, y_true, scores, metric, bootstrap_weights(_target(kind, y_true).n, n_boot, seed, groups))


def weighted_values(kind: TaskKind | str, y_true: Any, scores: Any, metric: str, weights: np.ndarray) -> np.ndarray:
    """``metric`` under each row of ``weights`` ((B, n) per-case multiplicities, e.g. bootstrap counts drawn
    jointly for several tasks): NaN where it is undefined. A row of ones is the plain metric."""
    kind = TaskKind(kind)
    (name,) = metrics_for(kind, [metric])
    t = _target(kind, y_true)
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != t.n:
        raise ConfigurationError(f"weights must be (resamples, {t.n}) for {t.n} cases; got {w.shape}.")
    return _evaluate(name, t, _scores(kind, scores, t.n), w)


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

    ``p_value``: patient-level studentized permutation test of "A and B are equally good" against
    ``alternative`` (``"two-sided"`` by default; ``"greater"``: A is better; ``"less"``: A is worse). Each
    of ``n_perm`` permutations swaps the two models' predictions of whole patients (``groups``; single
    cases without them), on a scale-free form of the scores (:func:`paired_comparison`);
    p = (1 + k) / (1 + n_perm) with k the permutations whose difference / clustered SE is at least as
    extreme as the observed one. NaN when the metric is
    undefined on the test set or ``n_perm`` is 0. ``n_groups``: the resampling units (patients; the
    cases themselves without ``groups``).
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

    The permutation test is studentized (:mod:`lesionbench.benchmark.scoring.paired`): its statistic is
    the difference divided by its patient-clustered standard error (DeLong/Obuchowski for AUC, the
    leave-one-patient-out jackknife for the other metrics), recomputed on every swap of a *scale-free*
    form of the scores (within-model ranks for the ranking metrics, the predicted class for balanced
    accuracy), so a monotone rescaling of one model does not change p. Exact when each patient's two
    predictions are exchangeable, asymptotically valid when they are not (equally good models with
    crossing ROC curves); ``benchmarks/stats_calibration.py`` measures its type-I error in both cases.
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
        p, _ = studentized_permutation_p(name, t, sa, sb, swap, codes, n_groups, alternative)
    return PairedComparison(name, va, vb, diff, float(lo), float(hi), p, t.n, n_boot, n_perm, alternative, n_groups)


def _group_codes(n: int, groups: Sequence[Any] | None) -> tuple[np.ndarray, int]:
    """Integer group index of each case and the number of groups (each case its own group without ``groups``)."""
    if groups is None:
        return np.arange(n), n
    codes, uniques = pd.factorize(pd.Series(list(groups)))
    if len(codes) != n:
        raise ConfigurationError(f"{len(codes)} group ids for {n} cases; give one group (patient) id per case.")
    return codes, len(uniques)
