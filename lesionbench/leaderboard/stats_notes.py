"""What a task section says about the reach and the accuracy of its statistics (issue 21).

Two things a reader cannot see from the numbers alone:

- whether any difference *could* be significant: Holm over K (K - 1) / 2 pairs needs small enough
  permutation p-values, and with few test patients there are few distinct patient swaps;
- whether an interval is approximate: on small test splits the percentile patient-bootstrap
  intervals of the ranking metrics cover less than 95%. The coverages quoted are the ones
  ``benchmarks/stats_calibration.py`` measured (``benchmarks/README.md``), per design.
"""

from __future__ import annotations

import math

from lesionbench.leaderboard import _stats

#: Test splits with fewer patients than this get the small-split interval note.
SMALL_SPLIT_PATIENTS = 30
#: Measured coverage of the nominal 95% percentile patient-bootstrap interval on small splits, with its
#: Monte-Carlo SE and the design (benchmarks/stats_calibration.py --part multiclass --part binary).
SMALL_SPLIT_COVERAGE: dict[str, tuple[float, float, str]] = {}


def reach_note(n_entries: int, n_perm: int, n_groups: int, alpha: float) -> str:
    """A sentence when no paired test of the section can reach ``alpha`` (else empty)."""
    reach = _stats.smallest_adjusted_p(n_entries, n_perm, n_groups)
    if not math.isfinite(reach) or reach < alpha:
        return ""
    return (
        f"no difference can be significant here: with {n_entries} entries (Holm over {_stats.family_size(n_entries)} pairs) "
        f"and {n_groups} test patients the smallest adjusted p is {reach:.3g} >= {alpha:g}"
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
