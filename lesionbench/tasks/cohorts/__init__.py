"""The peer benchmark's cohorts beyond the FMCIB tasks (one module per cohort; ``_binary`` holds their shared machinery).

Importing the package registers its tasks (the task registry imports ``lesionbench.tasks``' sub-packages).
"""

from __future__ import annotations

from types import SimpleNamespace

from lesionbench.tasks.cohorts import crlm, hcc_tace, kits, lndb, radiogenomics, rider  # noqa: F401

#: Test-retest sets: prepared with ``lesionbench prepare NAME`` like a task, never scored; the value has ``prepare``.
RETEST_SETS: dict[str, SimpleNamespace] = {"rider_retest": SimpleNamespace(prepare=rider.prepare_rider_retest)}
