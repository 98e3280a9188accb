"""What a task section says about the reach and the accuracy of its statistics (issue 21).

Two things a reader cannot see from the numbers alone:

- whether any difference *could* be significant: Holm over K (K - 1) / 2 pairs needs small enough
  permutation p-values, max-T at least 1 / alpha permutations, and with few test patients there are few
  distinct patient swaps; and which of the two corrected the section's p-values;
- whether an interval is approximate: on small test splits the percentile patient-bootstrap
  intervals of the ranking metrics cover less than 95%. The coverages quoted are the ones
  ``benchmarks/stats_calibration.py`` measured (``benchmarks/README.md``), per design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lesionbench.leaderboard import _stats

#: Test splits with fewer patients than this get the small-split interval note.
SMALL_SPLIT_PATIENTS = 30
#: Measured coverage of the nominal 95% percentile patient-bootstrap interval on small splits, with its
#: Monte-Carlo SE and the design (benchmarks/stats_calibration.py --part multiclass --part binary).
SMALL_SPLIT_COVERAGE: dict[str, tuple[float, float, str]] = {
    "auc": (0.868, 0.011, "binary split of 19 patients / 42 lesions at 20% prevalence"),
    "map": (0.702, 0.014, "8-class split of 19 patients / 42 lesions"),
    "balanced_accuracy": (0.905, 0.009, "8-class split of 19 patients / 42 lesions"),
}


#: Measured coverage of the 95% bootstrap rank interval for the best and the worst of five entries within
#: 0.02 AUC of each other (benchmarks/stats_calibration.py --part ranks): (coverage, MC SE).
RANK_INTERVAL_END_COVERAGE: tuple[float, float] | None = (0.86, 0.011)


def rank_note(n_entries: int) -> str:
    """A sentence on the rank intervals' measured under-coverage at the ends of the ranking (else empty)."""
    if n_entries < 3 or RANK_INTERVAL_END_COVERAGE is None:
        return ""
    cover, se = RANK_INTERVAL_END_COVERAGE
    return (
        f"rank intervals of the first and last entries are approximate: for five entries within 0.02 AUC the 95% "
        f"intervals covered the true rank of the ends in {cover:.2f} of simulated test sets (MC SE {se:.2f})"
    )


def reach_note(n_entries: int, n_perm: int, n_groups: int, alpha: float, correction: str = "holm") -> str:
    """A sentence when no paired test of the section can reach ``alpha`` under ``correction`` (else empty)."""
    method = _stats.correction_for(n_entries, correction)
    reach = _stats.smallest_adjusted_p(n_entries, n_perm, n_groups, method)
    if not math.isfinite(reach) or reach < alpha:
        return ""
    return (
        f"no difference can be significant here: with {n_entries} entries ({_stats.CORRECTION_NAMES[method]} over "
        f"{_stats.family_size(n_entries)} pairs) and {n_groups} test patients the smallest adjusted p is {reach:.3g} >= {alpha:g}"
    )


def method_note(n_entries: int, n_perm: int, correction: str = "auto") -> str:
    """A sentence naming the section's multiplicity correction, its family and its permutations."""
    if n_entries < 2 or n_perm <= 0:
        return ""
    family = _stats.family_size(n_entries)
    if _stats.correction_for(n_entries, correction) == "holm":
        return f"p adjusted by Holm over all {family} pair(s) of the {n_entries} entries ({_stats.permutations_for(n_entries, n_perm):,} patient swaps per test)"
    return (
        f"p adjusted by step-down max-T over all {family} pairs of the {n_entries} entries (Westfall-Young; {n_perm:,} joint "
        f"permutations of the entries' predictions within each patient); Holm's p of the same tests is in leaderboard.json (p_holm)"
    )


def interval_note(metric: str, n_groups: int) -> str:
    """A sentence labelling the main metric's intervals approximate on a small test split (else empty)."""
    if n_groups >= SMALL_SPLIT_PATIENTS or metric not in SMALL_SPLIT_COVERAGE:
        return ""
    cover, se, design = SMALL_SPLIT_COVERAGE[metric]
    return (
        f"approximate {metric} intervals: with {n_groups} test patients the 95% patient-bootstrap interval "
        f"covered {cover:.3f} (MC SE {se:.3f}) in a simulated {design}"
    )


def seed_mean_interval(values: Sequence[float], ci_lows: Sequence[float], ci_highs: Sequence[float], level_z: float = 1.959964) -> tuple[float, float, float]:
    """A k-shot entry's headline: the mean over the seeds' draws of the k-shot set, with a 95% normal
    interval whose variance adds the between-draw spread to the test set's.

    ``mean +- z * sqrt(se_test ** 2 + sd_draws ** 2 / n_seeds)``: ``se_test`` is the seeds' mean bootstrap
    SE (interval width / 2z; the test set is shared by every seed, so this part does not shrink with more
    seeds), ``sd_draws`` the SD of the seeds' values. Ranking on seed 0's draw alone reordered entries
    in a third of simulated tasks; its interval left the draw variance out. NaN bounds without any CI.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan"), float("nan"), float("nan")
    mean = float(v[ok].mean())
    widths = np.asarray(ci_highs, dtype=float) - np.asarray(ci_lows, dtype=float)
    widths = widths[np.isfinite(widths)]
    if not widths.size:
        return mean, float("nan"), float("nan")
    se_test = float(widths.mean() / (2 * level_z))
    sd = float(v[ok].std(ddof=1)) if ok.sum() > 1 else 0.0
    half = level_z * math.sqrt(se_test**2 + sd**2 / ok.sum())
    return mean, mean - half, mean + half
