"""Clinical endpoints, defined once for every survival task and for the scorer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import TaskKind

#: The FMCIB survival endpoint: alive at two years.
TWO_YEARS_DAYS = 730.0


def two_year_label(time: np.ndarray, event: np.ndarray, *, horizon_days: float = TWO_YEARS_DAYS) -> np.ndarray:
    """The 2-year mortality label in time-to-event terms, as float with NaN where it is unknown.

    1.0: the event (death) was observed at or before ``horizon_days``;
    0.0: the patient was known alive at ``horizon_days``: followed to or beyond it without the event by
    then (censored at exactly ``horizon_days`` counts: followed two years alive);
    NaN: censored before ``horizon_days``, so the 2-year status is unknown. Such patients are
    excluded from fitting the 2-year probe and from the 2-year AUC, and counted in the results.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    out = np.full(time.shape, np.nan)
    out[time >= horizon_days] = 0.0
    out[(event == 1) & (time <= horizon_days)] = 1.0
    return out


def truth(rows: pd.DataFrame, kind: TaskKind) -> Any:
    """The labels a task's rows are scored against: ``(time, event)`` pairs for survival, else the class."""
    if kind == TaskKind.SURVIVAL:
        return rows[["time", "event"]].to_numpy(float)
    return rows["label"].to_numpy().astype(int)
