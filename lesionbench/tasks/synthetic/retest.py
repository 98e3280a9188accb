"""Synthetic cohort, part 5: the test-retest twin, so that the test-retest protocol runs offline.

A patient's rescan has the same anatomy, lesions and labels as its scan in the cohort; the patient lies
a little elsewhere (a rigid translation of 1-3 mm in a random direction, applied to the noise-free volume
by linear resampling, to the masks by nearest neighbour, and to the seed points exactly) and the scanner
noise is a new draw at the same level. It is generated on demand into ``<cohort>/retest/`` for the
patients of the requested splits (the test split by default: only test lesions are scored), seeded by the
cohort's seed and the patient index, and described by ``retest/manifest.csv`` in the RIDER layout of
:mod:`lesionbench.benchmark.robustness.retest` (one row per lesion and scan, ``scan`` = ``test`` / ``retest``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, ManifestError
from lesionbench.tasks.synthetic.rescan import RETEST_SHIFT_MM, rescan, retest_shift  # noqa: F401 (public here too)

logger = logging.getLogger(__name__)

RETEST_DIRNAME = "retest"
def retest_dir(cohort: str | Path) -> Path:
    return Path(cohort) / RETEST_DIRNAME


def ensure_retest_twin(cohort: str | Path, *, splits: Sequence[str] = ("test",), workers: int = 1) -> Path:
    """The twin's manifest (``<cohort>/retest/manifest.csv``), generating the rescans first when absent or other."""
    from lesionbench.tasks.synthetic.cohort import GENERATOR_VERSION, _generate_patient

    cohort = Path(cohort)
    info_path = cohort / "cohort.json"
    try:
        info = json.loads(info_path.read_text())
        seed, patients = int(info["seed"]), int(info["patients"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ManifestError(str(cohort), [f"no complete synthetic cohort (cannot read {info_path.name}). Generate it first with `lesionbench synth`."]) from None
    bad = sorted(set(splits) - {"train", "val", "test"})
    if bad or not splits:
        raise ConfigurationError(f"Unknown split(s) {bad or list(splits)} for the test-retest twin; choose from train, val, test.")
    out = retest_dir(cohort)
    want = {"generator_version": GENERATOR_VERSION, "seed": seed, "patients": patients, "splits": sorted(set(splits)), "shift_mm": list(RETEST_SHIFT_MM)}
    marker = out / "retest.json"
    if marker.is_file() and (out / "manifest.csv").is_file():
        try:
            if json.loads(marker.read_text()) == want:
                return out / "manifest.csv"
        except ValueError:
            pass
    marker.unlink(missing_ok=True)
    lesions = pd.read_csv(cohort / "lesions.csv", dtype={"lesion_id": str, "patient_id": str})
    chosen = lesions[lesions["split"].isin(want["splits"])]
    indices = sorted({int(p[1:]) for p in chosen["patient_id"]})
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    logger.info("generating the test-retest twin of %d patients (%s) into %s", len(indices), ", ".join(want["splits"]), out)
    if workers > 1 and len(indices) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            rescans = [r for rows in pool.map(_generate_patient, [str(out)] * len(indices), [seed] * len(indices), indices, [True] * len(indices)) for r in rows]
    else:
        rescans = [r for i in indices for r in _generate_patient(str(out), seed, i, True)]
    cols = ["lesion_id", "patient_id", "image_path", "mask_path", "coordX", "coordY", "coordZ", "diameter_mm"]
    test = chosen[cols + ["split"]].copy()
    test["image_path"] = "../" + test["image_path"]
    test["mask_path"] = "../" + test["mask_path"]
    test.insert(2, "scan", "test")
    again = pd.DataFrame(rescans)[cols].merge(chosen[["lesion_id", "split"]], on="lesion_id", how="left", validate="one_to_one")
    again.insert(2, "scan", "retest")
    manifest = pd.concat([test, again], ignore_index=True)
    manifest.to_csv(out / "manifest.csv", index=False)
    marker.write_text(json.dumps(want, indent=2) + "\n")  # last: marks a complete twin
    return out / "manifest.csv"
