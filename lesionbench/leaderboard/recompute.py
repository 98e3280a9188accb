"""Recompute what a result claims from its own predictions and the task's labels, before the page shows it.

A result's headline value is a number in a file anyone can edit; its predictions are what it measured. When
the predictions of the headline run are there, the leaderboard recomputes each shown metric's point value
from them with the task's labels (:mod:`lesionbench.leaderboard.truth`; the file's own label columns only
when the task's are not at hand) and shows the recomputed value. A value that disagrees loses its interval
(the file's interval belongs to the value it claimed) and its rank, with the reason on the page.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.scoring.run_one import attach_labels
from lesionbench.benchmark.types import TaskMeta
from lesionbench.leaderboard import _stats

logger = logging.getLogger(__name__)

#: Recomputed and stated values closer than this agree (the files carry rounded JSON floats).
TOLERANCE = 1e-6


def test_arrays(df: pd.DataFrame, meta: TaskMeta, labels: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(test rows, lesion ids, y_true, scores) of a predictions table; the labels are ``labels``' (the task's)
    when given, else the table's own. Raises ``KeyError``/``ValueError``/:class:`LesionbenchError` when it cannot."""
    test = df[df["split"] == "test"] if "split" in df.columns else df
    if labels is not None:
        test = attach_labels(test, labels, meta.kind, source="predictions")
    ids, y, s = _stats.prediction_arrays(test, meta)
    return test, ids, y, s


def _point_values(meta: TaskMeta, y: np.ndarray, s: np.ndarray, names: list[str]) -> dict[str, float]:
    values = _stats.metric_values(meta.kind, y, s, names, n_boot=0)
    return {m: float(v.value) for m, v in values.items()}


def _disagree(stated: Any, recomputed: float) -> bool:
    """Whether a stated value (None: undefined) differs from a finite recomputed one."""
    return stated is None or abs(float(stated) - recomputed) > TOLERANCE


def _show(x: Any) -> str:
    return "undefined" if x is None else f"{float(x):.4f}"


def recheck_measured(entry: dict[str, Any], df: pd.DataFrame | None, meta: TaskMeta, labels: pd.DataFrame | None, where: str) -> str | None:
    """Recompute ``entry``'s metric values from its headline run's predictions ``df`` (in place); returns
    why it may not be ranked when a stated value disagrees (None otherwise, or when there is nothing to check)."""
    if df is None:
        return None
    try:
        _, _, y, s = test_arrays(df, meta, labels)
        values = _point_values(meta, y, s, list(entry["metrics"]))
    except (KeyError, ValueError, LesionbenchError) as exc:
        logger.debug("%s: predictions not recomputable (%s)", where, exc)
        return None
    wrong = []
    for m, shown in entry["metrics"].items():
        v = values.get(m, float("nan"))
        if not math.isfinite(v):
            continue
        # a k-shot entry shows the seeds' mean; its lowest seed's own value is the one these predictions give
        stated = shown.get("value_seed", shown.get("value"))
        if _disagree(stated, v):
            wrong.append(f"{m} {_show(stated)} (its predictions give {v:.4f})")
            shown.update(value=v, ci_low=None, ci_high=None)
            if "value_seed" in shown:
                shown["value_seed"] = v
    if not wrong:
        return None
    logger.warning("%s: the stated %s; the recomputed value is shown, unranked.", where, ", ".join(wrong))
    return "its stated value disagrees with its own predictions: " + ", ".join(wrong)


def recheck_submission(entry: dict[str, Any], df: pd.DataFrame | None, meta: TaskMeta, labels: pd.DataFrame | None, where: str) -> bool:
    """Recompute a submission's public values from its public predictions ``df`` and the task's labels (in
    place); True when a stated value disagreed. Needs the task's labels (the public part is theirs to say)."""
    if df is None or labels is None:
        return False
    from lesionbench.leaderboard.submissions.submit import public_private_split

    try:
        manifest = labels.assign(split="test") if "split" not in labels.columns else labels
        part = public_private_split(meta, manifest)
        public_ids = set(part.index[part.to_numpy()])
        table = df[df["lesion_id"].astype(str).isin(public_ids)]
        if set(table["lesion_id"].astype(str)) != public_ids:
            return False  # not every public lesion predicted: nothing comparable to recompute
        _, _, y, s = test_arrays(table, meta, labels)
        values = _point_values(meta, y, s, list(entry["public"]))
    except (KeyError, ValueError, LesionbenchError) as exc:
        logger.debug("%s: submission not recomputable (%s)", where, exc)
        return False
    wrong = False
    for m, shown in entry["public"].items():
        v = values.get(m, float("nan"))
        if math.isfinite(v) and _disagree(shown.get("value"), v):
            logger.warning("%s: the stated public %s %s disagrees with its predictions (%.4f); the recomputed value is shown.", where, m, _show(shown.get("value")), v)
            shown.update(value=v, ci_low=None, ci_high=None)
            wrong = True
    return wrong
