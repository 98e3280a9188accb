"""Statistics the leaderboard needs on saved predictions: metrics, paired tests, rank intervals, Holm.

Metric values come from scores (probabilities or risks), never from hard labels, and are computed
with scikit-learn / lifelines directly so every number can be re-derived from a predictions CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.types import TaskKind, TaskMeta

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- metrics
def _balanced_accuracy(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    pred = s.argmax(axis=1) if s.ndim == 2 else (s >= 0.5).astype(int)
    return float(balanced_accuracy_score(y.astype(int), pred))


def _map(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if s.ndim == 1:
        return float(average_precision_score(y.astype(int), s))
    k = s.shape[1]
    onehot = np.eye(k, dtype=int)[y.astype(int)]
    present = onehot.sum(axis=0) > 0
    # A class absent from the (resampled) test set has no defined AP; average over present ones.
    return float(np.mean([average_precision_score(onehot[:, c], s[:, c]) for c in range(k) if present[c]]))


def _auc(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if kind is TaskKind.SURVIVAL:
        # 2-year AUC: censored-before-730-days lesions have no 2-year label and are excluded.
        label = two_year_label(y[:, 0], y[:, 1])
        keep = ~np.isnan(label)
        label, s = label[keep].astype(int), s[keep]
        if label.min(initial=1) == label.max(initial=0):
            return float("nan")
        return float(roc_auc_score(label, s))
    yi = y.astype(int)
    if len(np.unique(yi)) < 2:
        return float("nan")
    if s.ndim == 1:
        return float(roc_auc_score(yi, s))
    present = np.unique(yi)
    if len(present) < s.shape[1]:
        # Macro one-vs-rest AUC over the classes present (a bootstrap resample may miss a class).
        from sklearn.metrics import roc_auc_score as _r

        return float(np.mean([_r((yi == c).astype(int), s[:, c]) for c in present]))
    return float(roc_auc_score(yi, s, multi_class="ovr", average="macro"))


def _c_index(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    from lifelines.utils import concordance_index

    # lifelines expects higher = longer survival; a risk is the opposite.
    return float(concordance_index(y[:, 0], -s, y[:, 1]))


def _average_precision(kind: TaskKind, y: np.ndarray, s: np.ndarray) -> float:
    return _map(kind, y, s)


METRICS: dict[str, Callable[[TaskKind, np.ndarray, np.ndarray], float]] = {
    "balanced_accuracy": _balanced_accuracy,
    "map": _map,
    "ap": _average_precision,
    "auc": _auc,
    "c_index": _c_index,
}
METRICS_BY_KIND: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.MULTICLASS: ("balanced_accuracy", "map", "auc"),
    TaskKind.BINARY: ("auc", "ap", "balanced_accuracy"),
    TaskKind.SURVIVAL: ("c_index", "auc"),
}


def metric(name: str, kind: TaskKind, y_true: np.ndarray, scores: np.ndarray) -> float:
    """One metric by name (see :data:`METRICS`)."""
    try:
        fn = METRICS[name]
    except KeyError:
        raise ConfigurationError(f"Unknown metric {name!r}; the leaderboard knows {sorted(METRICS)}.") from None
    return fn(TaskKind(kind), np.asarray(y_true, dtype=float), np.asarray(scores, dtype=float))


def compute_metrics(kind: TaskKind | str, y_true: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
    """Every metric of a task kind (or ``names``) from labels and scores.

    ``y_true``: class indices (n,) for classification, ``(n, 2)`` [time, event] for survival;
    ``scores``: (n, k) class probabilities, (n,) positive-class probability, or (n,) risk.
    """
    kind = TaskKind(kind)
    return {m: metric(m, kind, y_true, scores) for m in (names or METRICS_BY_KIND[kind])}


def bootstrap_ci(kind: TaskKind, y_true: np.ndarray, scores: np.ndarray, name: str, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of one metric over resampled test lesions."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = metric(name, kind, y_true[idx], scores[idx])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


# ------------------------------------------------------------------------ predictions tables
def score_columns(meta: TaskMeta, columns: Sequence[str]) -> list[str]:
    """The score columns a task's predictions use, in class order.

    Multiclass: ``score_<class name>`` (or ``score_0 .. score_<k-1>``); binary: ``score``;
    survival: ``risk``. Raises ``KeyError`` naming the missing columns.
    """
    cols = set(columns)
    if meta.kind is TaskKind.SURVIVAL:
        want = ["risk"]
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
    """Is A better than B? Paired bootstrap CI of the difference and a permutation p-value.

    The permutation test swaps the two models' predictions lesion by lesion (REFERENCE.md section 4);
    p is one-sided (H1: A > B) with the +1 correction so it is never 0.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    observed = metric(name, kind, y_true, scores_a) - metric(name, kind, y_true, scores_b)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        d = metric(name, kind, y_true[idx], scores_a[idx]) - metric(name, kind, y_true[idx], scores_b[idx])
        if np.isfinite(d):
            diffs.append(d)
    lo, hi = (np.percentile(diffs, [2.5, 97.5]) if diffs else (np.nan, np.nan))
    hits = 0
    for _ in range(n_perm):
        swap = rng.random(n) < 0.5
        swap_s = swap.reshape((-1,) + (1,) * (scores_a.ndim - 1))
        pa = np.where(swap_s, scores_b, scores_a)
        pb = np.where(swap_s, scores_a, scores_b)
        if metric(name, kind, y_true, pa) - metric(name, kind, y_true, pb) >= observed:
            hits += 1
    return Comparison(float(observed), float(lo), float(hi), (hits + 1) / (n_perm + 1))


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
