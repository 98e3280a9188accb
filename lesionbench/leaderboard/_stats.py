"""Statistics the leaderboard needs on saved predictions: metrics, paired tests, rank intervals, Holm.

Point estimates, bootstrap CIs and paired tests are the scorer's (:mod:`lesionbench.benchmark.metrics`),
so a submission or a leaderboard row is scored exactly like a run. The bootstrap rank intervals
re-rank every model on each of a thousand resamples and use the vectorised per-resample metrics
below, each equal to scikit-learn / lifelines (checked by the tests, ties included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.types import TaskKind, TaskMeta

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- metrics
# Vectorised implementations: the leaderboard evaluates metrics tens of thousands of times (bootstrap
# rank intervals, paired bootstrap and permutation tests), where scikit-learn's input validation costs
# ~10 ms per call. Each one reproduces scikit-learn / lifelines exactly, ties included; the tests
# check that on random inputs with many ties.
def _binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with mid-ranks (= sklearn.metrics.roc_auc_score)."""
    from scipy.stats import rankdata

    pos = y == 1
    n1 = int(pos.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _binary_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision, step-wise over distinct thresholds (= sklearn.metrics.average_precision_score)."""
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    total = ys.sum()
    if total == 0:
        return float("nan")
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]  # last index of each distinct score
    tps = np.cumsum(ys)[last]
    precision = tps / (last + 1)
    recall = tps / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _balanced_accuracy(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    """Mean recall over the classes present in y (= sklearn.metrics.balanced_accuracy_score)."""
    yi = y.astype(int)
    pred = s.argmax(axis=1) if s.ndim == 2 else (s >= 0.5).astype(int)
    k = int(max(yi.max(initial=0), pred.max(initial=0))) + 1
    support = np.bincount(yi, minlength=k)
    hits = np.bincount(yi[pred == yi], minlength=k)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def _map(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    """AP (binary) or macro one-vs-rest AP over the classes present in y."""
    yi = y.astype(int)
    if s.ndim == 1:
        return _binary_ap(yi, s)
    return float(np.mean([_binary_ap((yi == c).astype(int), s[:, c]) for c in np.unique(yi)]))


def _auc(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC: binary, or macro one-vs-rest over the classes present (a resample may miss one)."""
    yi = y.astype(int)
    if s.ndim == 1:
        return _binary_auc(yi, s)
    present = np.unique(yi)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([_binary_auc((yi == c).astype(int), s[:, c]) for c in present]))


def _auc_2y(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    """AUC of the 2-year label from the 2-year score (column 1); censored-before-730-days excluded."""
    label = two_year_label(y[:, 0], y[:, 1])
    keep = ~np.isnan(label)
    return _binary_auc(label[keep].astype(int), s[keep, 1])


def _c_index(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    """Harrell's C of a risk score (= lifelines.utils.concordance_index(time, -risk, event)).

    A pair is comparable when the shorter time is an event (a censoring at the same time counts as
    outliving it); ties in risk count one half.
    """
    t, e = y[:, 0], y[:, 1].astype(bool)
    s = s[:, 0]  # survival scores are (risk, 2-year score)
    if len(t) > 4000:  # the pairwise matrices would be large; lifelines is O(n log n)
        from lifelines.utils import concordance_index

        return float(concordance_index(t, -s, e))
    comp = e[:, None] & ((t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :]))
    n = comp.sum()
    if n == 0:
        return float("nan")
    conc = ((s[:, None] > s[None, :]) & comp).sum() + 0.5 * ((s[:, None] == s[None, :]) & comp).sum()
    return float(conc / n)


METRICS: dict[str, Callable[[TaskKind, np.ndarray, np.ndarray], float]] = {
    "balanced_accuracy": _balanced_accuracy,
    "map": _map,
    "average_precision": _map,
    "auc": _auc,
    "auc_2y": _auc_2y,
    "c_index": _c_index,
}
#: The same names and defaults as lesionbench.benchmark.metrics (the scorer's module).
METRICS_BY_KIND: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.MULTICLASS: ("balanced_accuracy", "map", "auc"),
    TaskKind.BINARY: ("auc", "average_precision", "balanced_accuracy"),
    TaskKind.SURVIVAL: ("auc_2y", "c_index"),
}
ALIASES: dict[str, str] = {
    "ba": "balanced_accuracy", "bacc": "balanced_accuracy", "balanced_acc": "balanced_accuracy",
    "mean_average_precision": "map", "ap": "average_precision", "roc_auc": "auc", "auroc": "auc",
    "cindex": "c_index", "c-index": "c_index", "concordance": "c_index",
    "auc2y": "auc_2y", "auc_2yr": "auc_2y", "two_year_auc": "auc_2y",
}


def canonical(name: str) -> str:
    """The canonical metric name (``"AP"`` -> ``"average_precision"``)."""
    key = name.strip().lower().replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in METRICS:
        raise ConfigurationError(f"Unknown metric {name!r}; the leaderboard knows {sorted(METRICS)}.")
    return key


def main_metric(meta: TaskMeta) -> str:
    """A task's main metric, canonical."""
    return canonical(meta.main_metric) if meta.main_metric else task_metrics(meta)[0]


def task_metrics(meta: TaskMeta) -> tuple[str, ...]:
    """A task's reported metrics, main metric first (survival always has auc_2y and c_index), like the scorer."""
    names = [meta.main_metric, *meta.metrics] if meta.main_metric else list(meta.metrics)
    if meta.kind is TaskKind.SURVIVAL:
        names += ["auc_2y", "c_index"]
    return tuple(dict.fromkeys(canonical(m) for m in names)) or METRICS_BY_KIND[meta.kind]


def metric(name: str, kind: TaskKind, y_true: np.ndarray, scores: np.ndarray) -> float:
    """One metric by name (see :data:`METRICS`)."""
    fn = METRICS[canonical(name)]
    return fn(TaskKind(kind), np.asarray(y_true, dtype=float), np.asarray(scores, dtype=float))


def _scorer_scores(kind: TaskKind, scores: np.ndarray) -> Any:
    """Scores in the form :mod:`lesionbench.benchmark.metrics` takes (survival: risk and 2-year score)."""
    scores = np.asarray(scores, dtype=float)
    if kind is TaskKind.SURVIVAL:
        if scores.ndim == 1:
            return scores
        return {"risk": scores[:, 0], "score": scores[:, 1]}
    return scores


def compute_metrics(kind: TaskKind | str, y_true: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
    """Every metric of a task kind (or ``names``): the scorer's :func:`lesionbench.benchmark.metrics.compute_metrics`.

    ``y_true``: class indices (n,) for classification, ``(n, 2)`` [time, event] for survival;
    ``scores``: (n, k) class probabilities, (n,) positive-class probability, or for survival
    ``(n, 2)`` [risk, 2-year death probability] (a single (n,) risk is used for both).
    """
    from lesionbench.benchmark import metrics as scorer_metrics

    kind = TaskKind(kind)
    names = [canonical(m) for m in (names or METRICS_BY_KIND[kind])]
    return scorer_metrics.compute_metrics(kind, y_true, _scorer_scores(kind, scores), names)


def bootstrap_ci(kind: TaskKind, y_true: np.ndarray, scores: np.ndarray, name: str, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of one metric (the scorer's :func:`~lesionbench.benchmark.metrics.bootstrap_ci`)."""
    from lesionbench.benchmark import metrics as scorer_metrics

    kind = TaskKind(kind)
    mv = scorer_metrics.bootstrap_ci(kind, y_true, _scorer_scores(kind, scores), [canonical(name)], n_boot=n_boot, seed=seed)[canonical(name)]
    return mv.ci_low, mv.ci_high


# ------------------------------------------------------------------------ predictions tables
def score_columns(meta: TaskMeta, columns: Sequence[str]) -> list[str]:
    """The score columns a task's predictions use, in class order.

    Multiclass: ``score_<class name>`` (or ``score_0 .. score_<k-1>``); binary: ``score``;
    survival: ``risk`` (plus ``score``, the 2-year death probability, when present; the risk
    stands in for it otherwise). Raises ``KeyError`` naming the missing columns.
    """
    cols = set(columns)
    if meta.kind is TaskKind.SURVIVAL:
        want = ["risk", "score"] if "score" in cols else ["risk"]
    elif meta.kind is TaskKind.BINARY:
        want = ["score"]
    else:
        by_name = [f"score_{c}" for c in meta.class_names]
        by_index = [f"score_{i}" for i in range(meta.n_classes)]
        want = by_name if set(by_name) <= cols else by_index
    missing = [c for c in want if c not in cols]
    if missing:
        raise KeyError(f"missing score column(s) {missing}")
    return want


def prediction_arrays(df: pd.DataFrame, meta: TaskMeta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lesion ids, y_true, scores) from a predictions table with label and score columns."""
    ids = df["lesion_id"].astype(str).to_numpy()
    if meta.kind is TaskKind.SURVIVAL:
        y = df[["time", "event"]].to_numpy(dtype=float)
    else:
        y = df["label"].to_numpy(dtype=float)
    cols = score_columns(meta, df.columns)
    s = df[cols].to_numpy(dtype=float)
    if meta.kind is TaskKind.SURVIVAL:
        return ids, y, (s if s.shape[1] == 2 else np.c_[s[:, 0], s[:, 0]])
    if s.shape[1] == 1:
        s = s[:, 0]
    return ids, y, s


# -------------------------------------------------------------------------- paired comparison
@dataclass(frozen=True)
class Comparison:
    """Model A minus model B on the same test lesions: bootstrap CI and one-sided permutation p."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_comparison(
    kind: TaskKind, y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, name: str, *, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0
) -> Comparison:
    """Is A better than B? The scorer's paired bootstrap CI and one-sided permutation p-value.

    See :func:`lesionbench.benchmark.metrics.paired_comparison` (REFERENCE.md section 4: predictions
    swapped lesion by lesion; p = (1 + k) / (1 + n_perm)).
    """
    from lesionbench.benchmark import metrics as scorer_metrics

    kind = TaskKind(kind)
    c = scorer_metrics.paired_comparison(
        y_true, _scorer_scores(kind, scores_a), _scorer_scores(kind, scores_b), canonical(name), kind=kind, n_boot=n_boot, n_perm=n_perm, seed=seed
    )
    return Comparison(c.difference, c.ci_low, c.ci_high, c.p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, (m - i) * p[j])
        adjusted[j] = min(1.0, running)
    return adjusted.tolist()


# ------------------------------------------------------------------------- rank intervals
def bootstrap_rank_intervals(
    kind: TaskKind, y_true: np.ndarray, scores: Mapping[str, np.ndarray], name: str, *, n_boot: int = 1000, seed: int = 0, higher_is_better: bool = True
) -> dict[str, tuple[int, int]]:
    """95% interval of each model's rank (1 = best) over bootstrap resamples of the test lesions.

    Every model is scored on the same resample, then ranked; resamples where a metric is undefined
    (a class missing) are skipped. Ties share the best rank.
    """
    from scipy.stats import rankdata

    models = list(scores)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    ranks = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        vals = np.array([metric(name, kind, y_true[idx], scores[m][idx]) for m in models])
        if not np.all(np.isfinite(vals)):
            continue
        ranks.append(rankdata(-vals if higher_is_better else vals, method="min"))
    if not ranks:
        return {}
    r = np.asarray(ranks)
    lo = np.percentile(r, 2.5, axis=0, method="lower")
    hi = np.percentile(r, 97.5, axis=0, method="higher")
    return {m: (int(lo[i]), int(hi[i])) for i, m in enumerate(models)}
