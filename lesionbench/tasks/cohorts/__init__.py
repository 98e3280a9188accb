"""The peer benchmark's cohorts beyond the FMCIB tasks (one module per cohort; ``_binary`` holds their shared machinery).

Importing the package registers its tasks (the task registry imports ``lesionbench.tasks``' sub-packages).
"""

from __future__ import annotations

from lesionbench.tasks.cohorts import kits, radiogenomics  # noqa: F401
