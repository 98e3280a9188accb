"""What the leaderboard trusts instead of a result's own word: the registered task's meta and labels.

A result file comes from many hands (see :mod:`lesionbench.leaderboard.validate`), so the page takes a
section's main metric, task kind and description from the task registry when the task is registered at
that version, and the ground truth for its statistics and recomputed values from the task's manifest
(the public results hold no test labels: :func:`lesionbench.benchmark.scoring.run_one.predictions_frame`).

:class:`Truth` answers both, once per task version and build. ``Truth(None)`` trusts nothing outside the
results (a build with no registered tasks at hand); then the results of a section must agree on their
task's meta (:func:`agreed_meta`), and statistics use the labels a predictions file carries, if any.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.scoring.run_one import label_columns
from lesionbench.benchmark.types import TaskMeta

logger = logging.getLogger(__name__)

#: (task name, version) -> the registered task's meta, or None when it is not registered at that version.
MetaSource = Callable[[str, str], "TaskMeta | None"]
#: TaskMeta -> the task's test rows (lesion_id, patient_id, split, label columns), or None when unavailable.
LabelSource = Callable[[TaskMeta], "pd.DataFrame | None"]


def _task(name: str, data_root: str | Path | None) -> object:
    from lesionbench.benchmark.encoders.plugins import get_task

    return get_task(name, data_dir=None if data_root is None else Path(data_root) / name)


def registry_meta(name: str, version: str, data_root: str | Path | None = None) -> TaskMeta | None:
    """The registered task ``name``'s meta when it is at ``version`` (None otherwise, or when not registered);
    ``data_root``: where its prepared data is (``<data_root>/<name>``; a task's version may name its data)."""
    try:
        meta = _task(name, data_root).meta
    except (LesionbenchError, OSError, ValueError, TypeError) as exc:
        logger.debug("Task %r is not registered here (%s); its results must agree on the task's meta.", name, exc)
        return None
    return meta if meta.version == version else None


def registry_labels(meta: TaskMeta, data_root: str | Path | None = None) -> pd.DataFrame | None:
    """The test rows of the registered task's manifest (its prepared data: ``<data_root>/<task>``, default the
    task's own default folder), when it is at ``meta``'s version."""
    try:
        task = _task(meta.name, data_root)
        if task.meta.version != meta.version:  # not registered at this version, or the data there is of another one
            return None
        manifest = task.manifest()
    except (LesionbenchError, OSError, ValueError, KeyError, TypeError) as exc:
        logger.info("Task %s (version %s) is not registered here or its prepared data cannot be read (%s); its statistics use the labels the "
                    "predictions files carry, if any.", meta.name, meta.version, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)  # fmt: skip
        return None
    cols = [c for c in ("lesion_id", "patient_id", "split", *label_columns(meta.kind)) if c in manifest.columns]
    test = manifest.loc[manifest["split"] == "test", cols].copy()
    test["lesion_id"] = test["lesion_id"].astype(str)
    return test.reset_index(drop=True)


class Truth:
    """The task meta and test labels one leaderboard build trusts (module docstring); answers are cached."""

    def __init__(self, labels: LabelSource | None = registry_labels, meta: MetaSource | None = registry_meta):
        self._labels, self._meta = labels, meta
        self._label_cache: dict[tuple[str, str], pd.DataFrame | None] = {}
        self._meta_cache: dict[tuple[str, str], TaskMeta | None] = {}

    def labels(self, meta: TaskMeta) -> pd.DataFrame | None:
        key = (meta.name, meta.version)
        if key not in self._label_cache:
            self._label_cache[key] = None if self._labels is None else self._labels(meta)
        return self._label_cache[key]

    def meta(self, name: str, version: str) -> TaskMeta | None:
        key = (name, version)
        if key not in self._meta_cache:
            self._meta_cache[key] = None if self._meta is None else self._meta(name, version)
        return self._meta_cache[key]


#: The task fields a section shows: results of one section must agree on them (when the task is not registered).
SECTION_FIELDS = ("kind", "main_metric", "metrics", "class_names", "description", "citation", "published_split")
#: The fields that decide how a result was scored: a result differing from the registered task's is skipped.
SCORING_FIELDS = ("kind", "main_metric", "metrics", "class_names", "published_split")


def _meta_key(meta: TaskMeta, fields: Sequence[str]) -> str:
    d = meta.to_dict()
    return json.dumps({k: d.get(k) for k in fields}, sort_keys=True, default=str)


def agreed_meta(name: str, version: str, metas: Sequence[TaskMeta], truth: Truth) -> tuple[TaskMeta, list[int]]:
    """The meta a section of task ``name`` ``version`` uses, and the indices of ``metas`` to skip.

    The registry's meta when the task is registered at that version (results scored another way,
    :data:`SCORING_FIELDS`, are skipped); otherwise the meta most results carry (ties: the first in sorted
    order, never the order the files were found in), and results differing in what the section shows
    (:data:`SECTION_FIELDS`) are skipped: one file must not set the section's main metric, kind or
    description for all.
    """
    registered = truth.meta(name, version)
    if registered is not None:
        want = _meta_key(registered, SCORING_FIELDS)
        return registered, [i for i, m in enumerate(metas) if _meta_key(m, SCORING_FIELDS) != want]
    counts = Counter(_meta_key(m, SECTION_FIELDS) for m in metas)
    want = min(counts, key=lambda k: (-counts[k], k))
    chosen = next(m for m in metas if _meta_key(m, SECTION_FIELDS) == want)
    return chosen, [i for i, m in enumerate(metas) if _meta_key(m, SECTION_FIELDS) != want]


def describe_difference(a: TaskMeta, b: TaskMeta) -> str:
    """The section fields of two task metas that differ, for a warning (``main_metric 'auc' != 'balanced_accuracy'``)."""
    da, db = a.to_dict(), b.to_dict()
    diffs = [f"{k} {str(da.get(k))[:40]!r} != {str(db.get(k))[:40]!r}" for k in SECTION_FIELDS if da.get(k) != db.get(k)]
    return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
