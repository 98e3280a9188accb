"""Synthetic cohort, part 6a: the labels of the two extra tasks (:mod:`lesionbench.tasks.synthetic.extra`),
derived from the cohort's ``lesions.csv`` alone and written beside the first three tasks' manifests when the
cohort is generated or found. How each label is drawn is in :mod:`lesionbench.tasks.synthetic.extra`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.tasks.synthetic.anatomy import KIDNEY, LIVER

logger = logging.getLogger(__name__)

EXTRA_TASK_NAMES: tuple[str, ...] = ("synthetic_abdominal_malignancy", "synthetic_mutation")
#: The random stream of the mutation label's noise (streams 1-5 belong to the images and designs).
MUTATION_STREAM = 7
_COMMON = ["lesion_id", "patient_id", "image_path", "mask_path", "coordX", "coordY", "coordZ", "diameter_mm", "split"]


def mutation_label(seed: int, index: int, biology: float) -> int:
    """Patient ``index``'s mutation-like label from its tumour biology (see the module docstring)."""
    z = float(np.random.default_rng([seed, MUTATION_STREAM, index]).standard_normal())
    return int(0.9 * biology + 0.45 * z > 0.4)


def extra_manifests(lesions: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """The two tasks' manifests (paths relative to ``<cohort>/<task>/``) from the cohort's lesion table."""
    missing = [c for c in [*_COMMON, "site", "malignant", "biology"] if c not in lesions.columns]
    if missing:
        raise DataPreparationError(f"lesions.csv of the synthetic cohort lacks column(s) {missing}; regenerate it with `lesionbench synth`.")
    base = lesions[_COMMON].copy()
    for col in ("image_path", "mask_path"):
        base[col] = "../" + base[col].astype(str)
    abdominal = base[lesions["site"].isin([LIVER, KIDNEY])].copy()
    abdominal["label"] = lesions.loc[abdominal.index, "malignant"].astype(int)
    mutation = base.copy()
    index = lesions["patient_id"].astype(str).str[1:].astype(int)
    mutation["label"] = [mutation_label(seed, int(i), float(b)) for i, b in zip(index, lesions["biology"])]
    return {"synthetic_abdominal_malignancy": abdominal.reset_index(drop=True), "synthetic_mutation": mutation}


def write_extra_manifests(out: str | Path, *, seed: int) -> list[str]:
    """Write the manifests of :data:`EXTRA_TASK_NAMES` that ``out`` (a cohort folder) lacks; returns their names."""
    from lesionbench.benchmark.host import atomic_write

    out = Path(out)
    todo = [t for t in EXTRA_TASK_NAMES if not (out / t / "manifest.csv").is_file()]
    if not todo:
        return []
    lesions = pd.read_csv(out / "lesions.csv", dtype={"lesion_id": str, "patient_id": str})
    frames = extra_manifests(lesions, seed)
    for task in todo:
        (out / task).mkdir(exist_ok=True)
        atomic_write(out / task / "manifest.csv", lambda tmp, df=frames[task]: df.to_csv(tmp, index=False))
        logger.info("synthetic cohort: wrote %s/manifest.csv (%d lesions)", task, len(frames[task]))
    return todo
