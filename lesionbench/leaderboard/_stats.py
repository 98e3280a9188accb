"""Statistics the leaderboard needs on saved predictions: metrics, paired tests, rank intervals, Holm.

Metric names, point estimates, bootstrap CIs, paired tests and the per-resample values behind the
rank intervals are the scorer's (:mod:`lesionbench.benchmark.metrics`), so a submission or a
leaderboard row is scored exactly like a run; this module converts the leaderboard's prediction
tables to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import MetricValue, TaskKind, TaskMeta

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- metrics
def canonical(name: str) -> str:
    """The canonical metric name (``"AP"`` -> ``"average_precision"``): the scorer's."""
    from lesionbench.benchmark.metrics import canonical_metric

    return canonical_metric(name)


def main_metric(meta: TaskMeta) -> str:
    """A task's main metric, canonical."""
    return canonical(meta.main_metric) if meta.main_metric else task_metrics(meta)[0]


def task_metrics(meta: TaskMeta) -> tuple[str, ...]:
    """A task's reported metrics, main metric first (survival always has auc_2y and c_index): the scorer's."""
    from lesionbench.benchmark.scorer import task_metrics as scorer_task_metrics

    return scorer_task_metrics(meta)


def metric(name: str, kind: TaskKind, y_true: np.ndarray, scores: np.ndarray) -> float:
    """One metric by name on leaderboard-format scores (see :func:`compute_metrics`)."""
    return compute_metrics(kind, y_true, scores, [name])[canonical(name)]


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
    return scorer_metrics.compute_metrics(kind, y_true, _scorer_scores(kind, scores), names)


def metric_values(kind: TaskKind, y_true: np.ndarray, scores: np.ndarray, names: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict[str, MetricValue]:
    """Point estimate and 95% percentile-bootstrap CI of each metric in ``names``, all on the same
    resamples (the scorer's :func:`~lesionbench.benchmark.metrics.bootstrap_ci`; ``n_boot=0``: NaN bounds)."""
    from lesionbench.benchmark import metrics as scorer_metrics

    kind = TaskKind(kind)
    return scorer_metrics.bootstrap_ci(kind, y_true, _scorer_scores(kind, scores), names, n_boot=n_boot, seed=seed)


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

    from lesionbench.benchmark.metrics import resampled_values

    models = list(scores)
    kind = TaskKind(kind)
    # (n_boot, models): every model on the same resamples, those where all are defined kept
    vals = np.column_stack([resampled_values(kind, y_true, _scorer_scores(kind, scores[m]), name, n_boot=n_boot, seed=seed) for m in models])
    vals = vals[np.isfinite(vals).all(axis=1)]
    if not len(vals):
        return {}
    r = rankdata(-vals if higher_is_better else vals, method="min", axis=1)
    lo = np.percentile(r, 2.5, axis=0, method="lower")
    hi = np.percentile(r, 97.5, axis=0, method="higher")
    return {m: (int(lo[i]), int(hi[i])) for i, m in enumerate(models)}
