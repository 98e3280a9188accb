"""Statistics the leaderboard needs on saved predictions: metrics, paired tests, rank intervals, Holm and max-T.

Metric names, point estimates, bootstrap CIs, paired tests and the per-resample values behind the
rank intervals are the scorer's (:mod:`lesionbench.benchmark.scoring.metrics`), so a submission or a
leaderboard row is scored exactly like a run; this module converts the leaderboard's prediction
tables to them.
"""

from __future__ import annotations

import logging
import math
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
    from lesionbench.benchmark.scoring.metrics import canonical_metric

    return canonical_metric(name)


def main_metric(meta: TaskMeta) -> str:
    """A task's main metric, canonical."""
    return canonical(meta.main_metric) if meta.main_metric else task_metrics(meta)[0]


def task_metrics(meta: TaskMeta) -> tuple[str, ...]:
    """A task's reported metrics, main metric first (survival always has auc_2y and c_index): the scorer's."""
    from lesionbench.benchmark.scoring.scorer import task_metrics as scorer_task_metrics

    return scorer_task_metrics(meta)


def metric(name: str, kind: TaskKind, y_true: np.ndarray, scores: np.ndarray) -> float:
    """One metric by name on leaderboard-format scores (see :func:`compute_metrics`)."""
    return compute_metrics(kind, y_true, scores, [name])[canonical(name)]


def _scorer_scores(kind: TaskKind, scores: np.ndarray) -> Any:
    """Scores in the form :mod:`lesionbench.benchmark.scoring.metrics` takes (survival: risk and 2-year score)."""
    scores = np.asarray(scores, dtype=float)
    if kind is TaskKind.SURVIVAL:
        if scores.ndim == 1:
            return scores
        return {"risk": scores[:, 0], "score": scores[:, 1]}
    return scores


def compute_metrics(kind: TaskKind | str, y_true: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
    """Every metric of a task kind (or ``names``): the scorer's :func:`lesionbench.benchmark.scoring.metrics.compute_metrics`.

    ``y_true``: class indices (n,) for classification, ``(n, 2)`` [time, event] for survival;
    ``scores``: (n, k) class probabilities, (n,) positive-class probability, or for survival
    ``(n, 2)`` [risk, 2-year death probability] (a single (n,) risk is used for both).
    """
    from lesionbench.benchmark.scoring import metrics as scorer_metrics

    kind = TaskKind(kind)
    return scorer_metrics.compute_metrics(kind, y_true, _scorer_scores(kind, scores), names)


def metric_values(
    kind: TaskKind, y_true: np.ndarray, scores: np.ndarray, names: Sequence[str], *, n_boot: int = 1000, seed: int = 0, groups: Sequence[Any] | None = None
) -> dict[str, MetricValue]:
    """Point estimate and 95% percentile-bootstrap CI of each metric in ``names``, all on the same
    resamples (the scorer's :func:`~lesionbench.benchmark.scoring.metrics.bootstrap_ci`; ``n_boot=0``: NaN bounds).
    ``groups`` (patient ids, see :func:`bootstrap_groups`) resamples whole patients, as the scorer does."""
    from lesionbench.benchmark.scoring import metrics as scorer_metrics

    kind = TaskKind(kind)
    return scorer_metrics.bootstrap_ci(kind, y_true, _scorer_scores(kind, scores), names, n_boot=n_boot, seed=seed, groups=groups)


def bootstrap_groups(table: pd.DataFrame, unit: str = "patient") -> np.ndarray | None:
    """The resampling groups of a predictions table for a result's ``bootstrap_unit``: its patient ids
    (``"patient"``, the scorer's default) or ``None`` (``"lesion"``: single lesions are resampled).

    One unit everywhere: the scorer, a submission and the leaderboard resample the same way, so the
    same predictions get the same intervals. A table without ``patient_id`` cannot be resampled by
    patient; that is said (lesion-level intervals are too narrow when patients have several lesions).
    """
    if unit == "lesion":
        return None
    if unit != "patient":
        raise ValueError(f"bootstrap unit must be 'patient' or 'lesion'; got {unit!r}")
    if "patient_id" not in table.columns:
        logger.warning("Predictions without a patient_id column: the bootstrap resamples single lesions, not patients.")
        return None
    return table["patient_id"].astype(str).to_numpy()


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
    """Model A minus model B on the same test lesions: paired bootstrap CI and permutation p (NaN when undefined)."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    alternative: str = "two-sided"


def paired_comparison(
    kind: TaskKind,
    y_true: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    name: str,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    alternative: str = "two-sided",
) -> Comparison:
    """Does A differ from B? The scorer's paired bootstrap CI and permutation p-value, both resampling
    ``groups`` (patients) when given: :func:`lesionbench.benchmark.scoring.metrics.paired_comparison`.

    Two-sided by default: the leaderboard picks the top entry from the same data, so a one-sided
    test "the top is better" would reject about twice as often as its level under the null.
    """
    from lesionbench.benchmark.scoring import metrics as scorer_metrics

    kind = TaskKind(kind)
    c = scorer_metrics.paired_comparison(
        y_true, _scorer_scores(kind, scores_a), _scorer_scores(kind, scores_b), canonical(name),
        kind=kind, n_boot=n_boot, n_perm=n_perm, seed=seed, groups=groups, alternative=alternative,
    )  # fmt: skip
    return Comparison(c.difference, c.ci_low, c.ci_high, c.p_value, c.alternative)


def holm(p_values: Sequence[float], *, family: int | None = None) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order.

    A NaN p (no test: undefined metric, ``n_perm=0``) stays NaN and is left out of the family, so it
    neither counts as significant nor makes the others' correction stricter. ``family``: the number of
    hypotheses the tests were picked from, when larger than the number given (the rest count as not
    rejected, p = 1): Holm over that whole family, which stays valid when the data chose which of
    its hypotheses to test, e.g. every entry against the data's top entry among all pairs.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = max(len(tested), family or 0)
    running = 0.0
    for i, j in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, (m - i) * p[j])
        adjusted[j] = min(1.0, running)
    return adjusted.tolist()


#: Permutations per comparison of the page's Holm family: with ``40 * family`` permutations the smallest
#: Holm-adjusted p is about 1/40 = 0.025, so a clear difference can reach alpha 0.05 at any K.
PERMS_PER_COMPARISON = 40


def family_size(n_entries: int) -> int:
    """Hypotheses in the page's family: all K (K - 1) / 2 pairs of K entries (see :func:`versus_top`)."""
    return n_entries * (n_entries - 1) // 2


def permutations_for(n_entries: int, n_perm: int) -> int:
    """The permutations each page test draws: ``n_perm``, raised to :data:`PERMS_PER_COMPARISON` per
    hypothesis of the family (0 stays 0: no tests)."""
    return max(n_perm, PERMS_PER_COMPARISON * family_size(n_entries)) if n_perm > 0 else 0


#: The page's multiplicity corrections over all pairs of a section's entries: "maxt" (Westfall-Young step-down
#: max-T on joint permutations, :mod:`lesionbench.benchmark.scoring.maxt`), "holm" (Holm on the pairwise
#: tests), "auto" (max-T from :data:`MAXT_FROM` entries on, Holm below: with two entries both are the one test).
CORRECTIONS = ("auto", "maxt", "holm")
MAXT_FROM = 3


def correction_for(n_entries: int, correction: str = "auto") -> str:
    """The correction a section of ``n_entries`` entries uses: ``"maxt"`` or ``"holm"`` (see :data:`CORRECTIONS`)."""
    if correction not in CORRECTIONS:
        from lesionbench.benchmark.errors import ConfigurationError

        raise ConfigurationError(f"correction must be one of {', '.join(CORRECTIONS)}; got {correction!r}.")
    if correction == "auto":
        return "maxt" if n_entries >= MAXT_FROM else "holm"
    return correction


def smallest_adjusted_p(n_entries: int, n_perm: int, n_groups: int, correction: str = "holm") -> float:
    """The smallest adjusted p the page can show. Holm: family x the smallest permutation p, which is
    ``1 / (n_perm + 1)`` or, with few patients, two of the ``2 ** n_groups`` patient swaps (two-sided).
    Max-T: ``1 / (n_perm + 1)`` whatever the family, or with few patients ``(K!) ** (1 - n_groups)`` (the K!
    relabellings of the entries alike for every patient give the same maximum)."""
    if correction_for(n_entries, correction) == "maxt":
        if n_perm <= 0 or n_entries < 2:
            return float("nan")
        return min(1.0, max(1.0 / (n_perm + 1), math.exp((1 - n_groups) * math.lgamma(n_entries + 1))))
    perms = permutations_for(n_entries, n_perm)
    if perms <= 0 or n_entries < 2:
        return float("nan")
    smallest = max(1.0 / (perms + 1), 2.0 ** (1 - n_groups))
    return min(1.0, family_size(n_entries) * smallest)


def versus_top(
    kind: TaskKind,
    y_true: np.ndarray,
    scores: Mapping[Any, np.ndarray],
    name: str,
    *,
    top: Any,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    alpha: float = 0.05,
    correction: str = "auto",
) -> dict[Any, tuple[Comparison, float]]:
    """The leaderboard's tests: every entry of ``scores`` against ``top``, the entry the data ranked
    first, as ``{entry: (comparison top - entry, adjusted p)}``, adjusted by ``correction`` (:func:`correction_for`).

    Two-sided, because the direction was picked by looking at the data; corrected over all K (K - 1) / 2
    pairs of the K entries, because so was the pair: over the K - 1 tests alone, three equally good
    entries give a false "significant" in 7-9% of draws at alpha 0.05 (``benchmarks/stats_calibration.py``).
    Each paired test (the comparison's p, and Holm's) draws :func:`permutations_for` permutations (at least 40
    per pair of the family), so that Holm does not put significance out of reach at K >= 11.
    Max-T (:func:`lesionbench.benchmark.scoring.maxt.family_maxt`) draws ``n_perm`` joint permutations of all
    entries and finds more of the real differences at the same family-wise error; Holm's p of the same tests
    is ``holm([c.p_value ...], family=family_size(K))``. :func:`smallest_adjusted_p` says when nothing can be significant.
    """
    others = [i for i in scores if i != top]
    method = correction_for(len(scores), correction)
    perms = permutations_for(len(scores), n_perm)
    comps = {i: paired_comparison(kind, y_true, scores[top], scores[i], name, n_boot=n_boot, n_perm=perms, seed=seed, groups=groups) for i in others}
    family = family_size(len(scores))
    n_groups = len(set(groups)) if groups is not None else len(np.asarray(y_true))
    reach = smallest_adjusted_p(len(scores), n_perm, n_groups, method)
    if others and np.isfinite(reach) and reach >= alpha:
        logger.warning(
            "With %d entries and %d patients no difference can be significant at %g: the smallest %s-adjusted p is %.3g.",
            len(scores), n_groups, alpha, CORRECTION_NAMES[method], reach,
        )  # fmt: skip
    if method == "holm":
        adjusted = holm([comps[i].p_value for i in others], family=family)
    else:
        from lesionbench.benchmark.scoring.maxt import family_maxt

        keys = list(scores)
        kind = TaskKind(kind)
        fam = family_maxt(y_true, [_scorer_scores(kind, scores[k]) for k in keys], canonical(name), kind=kind, n_perm=n_perm, seed=seed, groups=groups)
        adjusted = [fam.p_for(keys.index(top), keys.index(i)) for i in others]
    return {i: (comps[i], p) for i, p in zip(others, adjusted)}


#: How the page names each correction.
CORRECTION_NAMES = {"maxt": "max-T", "holm": "Holm"}


# ------------------------------------------------------------------------- rank intervals
def bootstrap_rank_intervals(
    kind: TaskKind,
    y_true: np.ndarray,
    scores: Mapping[str, np.ndarray],
    name: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    higher_is_better: bool = True,
    groups: Sequence[Any] | None = None,
) -> dict[str, tuple[int, int]]:
    """95% interval of each model's rank (1 = best) over bootstrap resamples of the test set
    (whole ``groups``, i.e. patients, when given; single lesions otherwise).

    Every model is scored on the same resample, then ranked; resamples where a metric is undefined
    (a class missing) are skipped. Ties share the best rank.
    """
    from scipy.stats import rankdata

    from lesionbench.benchmark.scoring.metrics import resampled_values

    models = list(scores)
    kind = TaskKind(kind)
    # (n_boot, models): every model on the same resamples, those where all are defined kept
    vals = np.column_stack([resampled_values(kind, y_true, _scorer_scores(kind, scores[m]), name, n_boot=n_boot, seed=seed, groups=groups) for m in models])
    vals = vals[np.isfinite(vals).all(axis=1)]
    if not len(vals):
        return {}
    r = rankdata(-vals if higher_is_better else vals, method="min", axis=1)
    lo = np.percentile(r, 2.5, axis=0, method="lower")
    hi = np.percentile(r, 97.5, axis=0, method="higher")
    return {m: (int(lo[i]), int(hi[i])) for i, m in enumerate(models)}
