"""Helpers shared by the real-data task modules: atomic writes, split variants, ``task.json``.

A prepared task folder holds ``manifest.csv`` and ``task.json``; the latter records which split
variant was prepared, so the task object built on that folder reports the matching version and
results of different variants never mix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, DataPreparationError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.data.manifest import ManifestTask
from lesionbench.benchmark.types import TaskMeta

logger = logging.getLogger(__name__)

#: The split variants every real task offers. ``grouped`` (the default) splits by patient, stratified and
#: seeded; ``fmcib`` reproduces the splits published with FMCIB, patient leaks included.
SPLIT_VARIANTS: tuple[str, ...] = ("grouped", "fmcib")
DEFAULT_SPLIT = "grouped"
TASK_JSON = "task.json"
#: The seed FMCIB used for its splits (``random_state=21``); the grouped variants use it too.
SPLIT_SEED = 21


def check_split_variant(split: str | None) -> str:
    """Return a valid split variant name (default ``grouped``) or raise :class:`ConfigurationError`."""
    split = DEFAULT_SPLIT if split is None else str(split).strip().lower()
    if split not in SPLIT_VARIANTS:
        raise ConfigurationError(f"Unknown split variant {split!r}. Use one of {list(SPLIT_VARIANTS)} (default {DEFAULT_SPLIT!r}).")
    return split


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_json(obj: Mapping[str, Any], path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"))


def grouped_split(
    labels: np.ndarray,
    groups: np.ndarray,
    folds: Mapping[str, int],
    *,
    seed: int = SPLIT_SEED,
) -> np.ndarray:
    """Assign each row to a split, keeping every group (patient) in one split, stratified by label.

    ``folds`` gives each split its number of folds out of ``sum(folds.values())`` equal folds drawn by
    :class:`sklearn.model_selection.StratifiedGroupKFold` (shuffled with ``seed``); e.g.
    ``{"train": 2, "val": 1, "test": 1}`` is 50/25/25 %. Deterministic for a given input order and seed.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    groups = np.asarray(groups)
    n_folds = int(sum(folds.values()))
    if len(np.unique(groups)) < n_folds:
        raise DataPreparationError(
            f"Cannot split {len(np.unique(groups))} patient(s) into {n_folds} patient-disjoint folds; "
            "prepare more data or use --split fmcib."
        )
    _, counts = np.unique(labels, return_counts=True)
    if counts.max() < n_folds:
        # scikit-learn cannot stratify when no class has a member per fold (tiny data sets): group only
        logger.warning("No class has %d members: splitting by patient without stratification", n_folds)
        labels = np.zeros(len(labels), dtype=int)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    out = np.empty(len(labels), dtype=object)
    names = [name for name, k in folds.items() for _ in range(k)]
    for fold, (_, idx) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
        out[idx] = names[fold]
    return out


class VariantManifestTask(ManifestTask):
    """A :class:`ManifestTask` whose version carries the split variant it was prepared with.

    The variant comes from ``task.json`` in the data folder (written by ``prepare``); a ``split``
    option must agree with it. The class attribute ``meta`` describes the default variant (for listings).
    """

    #: Version of the lesions and labels; the split variant is appended (``1.0+grouped``).
    base_version: str = "1.0"

    @classmethod
    def meta_for(cls, split: str) -> TaskMeta:
        raise NotImplementedError

    def __init__(self, data_dir: str | Path | None = None, manifest_path: str | Path | None = None, split: str | None = None):
        super().__init__(data_dir=data_dir, manifest_path=manifest_path)
        info_path = (self.manifest_path.parent if self.manifest_path is not None else self.data_dir) / TASK_JSON
        prepared = read_task_json(info_path).get("split") if info_path.exists() else None
        if split is not None and prepared is not None and check_split_variant(split) != prepared:
            raise ConfigurationError(
                f"{info_path} was prepared with split variant {prepared!r}, not {split!r}. Prepare the "
                f"{split!r} variant into another folder (`lesionbench prepare {self.meta.name} --split {split} --out DIR`) "
                "and point the task at it."
            )
        self.split_variant = check_split_variant(prepared if prepared is not None else split)
        self.meta = self.meta_for(self.split_variant)


def read_task_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataPreparationError(f"{path} could not be read ({exc}). Delete it and re-run `lesionbench prepare`.") from exc


def write_task_json(out: Path, meta: TaskMeta, split: str, **extra: Any) -> Path:
    from lesionbench._version import __version__

    info = {
        "task": meta.name,
        "version": meta.version,
        "split": split,
        "published_split": meta.published_split,
        "lesionbench_version": __version__,
        "prepared": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    return write_json(info, Path(out) / TASK_JSON)


def image_header(path: Path) -> tuple[Any, tuple[int, ...]]:
    """``(reference, size)``: a 1-voxel SimpleITK image with ``path``'s geometry, and the image size.

    Only the header is read, so seeds can be converted with the file's own geometry
    (``reference.TransformContinuousIndexToPhysicalPoint``) without loading the pixels.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    ref = sitk.Image([1] * reader.GetDimension(), sitk.sitkUInt8)
    ref.SetOrigin(reader.GetOrigin())
    ref.SetSpacing(reader.GetSpacing())
    ref.SetDirection(reader.GetDirection())
    return ref, tuple(reader.GetSize())


def split_counts(df: pd.DataFrame) -> dict[str, int]:
    return {k: int(v) for k, v in df["split"].value_counts().sort_index().items()}
