"""Synthetic cohort, part 4: one patient's volume, masks and lesion rows, and the cohort folder on disk."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, DataPreparationError
from lesionbench.benchmark.host import usable_cores
from lesionbench.tasks.synthetic.anatomy import SITE_NAMES, _build_anatomy, _draw_geometry
from lesionbench.tasks.synthetic.labels import _block_choice, _malignancy_design, _patient_id, _site_design, _split_of, _survival
from lesionbench.tasks.synthetic.lesions import (
    MIN_DIAMETER_MM,
    N_LESION_PROBS,
    _bounding_radius,
    _LesionPlan,
    _paint_lesion,
    _place,
    _plan_lesion,
)

logger = logging.getLogger(__name__)

#: Bump whenever the generated images, lesions, labels or splits change.
GENERATOR_VERSION = "2"
#: Patients of the default cohort: about 215 lesions (1-4 per patient), every site in every split and
#: about 19 test patients (about 45 test lesions), enough for a test AUC that is not a coin toss.
DEFAULT_PATIENTS = 96
#: Folder under ``$LESIONBENCH_DATA`` that holds the default cohort.
COHORT_DIRNAME = "synthetic"
TASK_NAMES: tuple[str, ...] = ("synthetic_site", "synthetic_malignancy", "synthetic_survival")


def _generate_patient(out: str, seed: int, index: int, retest: bool = False) -> list[dict[str, Any]]:
    """Make, write and describe one patient; depends only on ``(seed, index)``.

    ``retest``: the patient's rescan instead (same anatomy, lesions and labels, moved by
    :func:`lesionbench.tasks.synthetic.rescan.retest_shift` and with a new noise draw of the same level).
    """
    import SimpleITK as sitk

    rng = np.random.default_rng([seed, 1, index])
    variant = _block_choice(seed, 3, index)
    geo = _draw_geometry(rng, variant)
    anat = _build_anatomy(rng, geo)
    hu = anat.hu
    labels = np.zeros(geo.size, dtype=np.uint8)
    n_lesions = int(rng.choice(4, p=N_LESION_PROBS)) + 1
    biology = float(rng.standard_normal())
    pid = _patient_id(index)

    placed: list[tuple[np.ndarray, float]] = []
    lesions: list[tuple[_LesionPlan, np.ndarray]] = []
    site_candidates: dict[int, np.ndarray] = {}
    for k in range(n_lesions):
        site = _site_design(seed, index, k)
        malignant = _malignancy_design(seed, index, k, site)
        for attempt in range(12):
            if site not in site_candidates:
                site_candidates[site] = np.flatnonzero(anat.region == site)
            plan = _plan_lesion(rng, site, anat, biology, malignant)
            # shrink on repeated failures (small organs, cramped thorax)
            if attempt >= 3:
                f = 0.8 ** (attempt - 2)
                plan = dataclasses.replace(plan, diameter_mm=round(max(MIN_DIAMETER_MM, plan.diameter_mm * f), 1))
            centre = _place(rng, plan, geo, anat.region, placed, site_candidates[site])
            if centre is not None:
                placed.append((centre, _bounding_radius(plan)))
                lesions.append((plan, centre))
                break
            if k > 0 and attempt >= 5:
                site = int(rng.integers(8))
        else:
            if k == 0:
                raise DataPreparationError(
                    f"synthetic patient {pid} (seed {seed}): no room for its {SITE_NAMES[site]} lesion. "
                    "This is a generator bug; report it with the seed and patient index."
                )
    for i, (plan, centre) in enumerate(lesions, start=1):
        _paint_lesion(rng, plan, centre, geo, hu, labels, i)

    noise_sd = rng.uniform(8.0, 22.0)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)  # drawn in the rescan too: the draws after it stay the same
    if retest:
        from lesionbench.tasks.synthetic.rescan import rescan

        hu, labels, lesions, noise = rescan(seed, index, geo, hu, labels, lesions)
    hu += noise * np.float32(noise_sd)
    del noise
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    img = geo.to_sitk(hu.astype(np.int16))
    del hu

    out_p = Path(out)
    img_rel = Path("images") / f"{pid}.nii.gz"
    sitk.WriteImage(img, str(out_p / img_rel), True, 1)

    time, event = _survival(rng, [p.aggressiveness for p, _ in lesions], max(p.diameter_mm for p, _ in lesions))

    rows = []
    for i, (plan, centre) in enumerate(lesions, start=1):
        lid = f"{pid}_L{i}"
        mask_rel = Path("masks") / f"{lid}.nii.gz"
        mask = geo.to_sitk((labels == i).astype(np.uint8))
        sitk.WriteImage(mask, str(out_p / mask_rel), True, 1)
        # The seed through the image's own index-to-world transform, from its continuous index.
        c_idx = tuple(float(v) for v in (centre - np.asarray(geo.lo)) / np.asarray(geo.spacing))
        pt = img.TransformContinuousIndexToPhysicalPoint(geo.image_index(c_idx))
        rows.append({
            "lesion_id": lid,
            "patient_id": pid,
            "image_path": img_rel.as_posix(),
            "mask_path": mask_rel.as_posix(),
            "coordX": round(pt[0], 4),
            "coordY": round(pt[1], 4),
            "coordZ": round(pt[2], 4),
            "diameter_mm": plan.diameter_mm,
            "site": plan.site,
            "site_name": SITE_NAMES[plan.site],
            "malignant": plan.malignant,
            "time": time,
            "event": event,
            "aggressiveness": round(plan.aggressiveness, 4),
            "biology": round(biology, 4),
            "appearance": plan.kind,
            "spiculation": round(plan.spiculation, 4),
            "lobulation": round(plan.lobulation, 4),
            "texture_hu": round(plan.texture_hu, 3),
            "edge_mm": round(plan.edge_mm, 3),
            "necrosis": int(plan.necrosis),
            "rim": int(plan.rim),
            "spacing": "x".join(f"{s:g}" for s in img.GetSpacing()),
            "direction": ",".join(f"{v:g}" for v in img.GetDirection()),
        })
    return rows


def _cohort_complete(out: Path, *, patients: int, seed: int) -> bool:
    info = out / "cohort.json"
    if not info.is_file() or not all((out / t / "manifest.csv").is_file() for t in TASK_NAMES):
        return False
    try:
        d = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    return d.get("generator_version") == GENERATOR_VERSION and d.get("patients") == patients and d.get("seed") == seed


def generate_cohort(out: str | Path, *, patients: int = DEFAULT_PATIENTS, seed: int = 0, workers: int = 1,
                    progress: bool = True) -> Path:
    """Generate the synthetic CT cohort into ``out`` and return ``out``.

    Writes ``images/<patient>.nii.gz`` (int16 HU), ``masks/<lesion>.nii.gz`` (one binary mask per
    lesion, same grid as its image), ``lesions.csv`` (every lesion with its hidden properties, for
    analysis), the three task manifests ``<task>/manifest.csv`` (paths relative to the manifest), the extra
    tasks' manifests derived from ``lesions.csv`` (:mod:`lesionbench.tasks.synthetic.extra`) and
    ``cohort.json`` (seed, patients, generator version; written last, so it marks a complete cohort).
    Output depends only on ``(patients, seed)``; ``workers`` > 1 generates patients in processes.
    """
    if patients < 1:
        raise ConfigurationError(f"patients must be at least 1, got {patients}.")
    if workers < 1:
        raise ConfigurationError(f"workers must be at least 1, got {workers}.")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    stale = out / "cohort.json"
    if stale.exists():
        stale.unlink()
    logger.info("generating %d synthetic patients (seed %d) into %s with %d worker(s)", patients, seed, out, workers)

    rows: list[dict[str, Any]] = []
    for patient_rows in _progress(_run_patients(str(out), seed, patients, workers), patients, progress):
        rows.extend(patient_rows)
    lesions = pd.DataFrame(rows)
    _remove_stale(out, set(lesions["image_path"]) | set(lesions["mask_path"]))
    lesions.insert(5, "split", [_split_of(seed, int(p[1:])) for p in lesions["patient_id"]])
    lesions.to_csv(out / "lesions.csv", index=False)

    common = ["lesion_id", "patient_id", "image_path", "mask_path", "coordX", "coordY", "coordZ", "diameter_mm", "split"]
    for task, labels in zip(TASK_NAMES, (["label"], ["label"], ["time", "event"]), strict=True):
        df = lesions[common].copy()
        if task == "synthetic_site":
            df["label"] = lesions["site"]
        elif task == "synthetic_malignancy":
            df["label"] = lesions["malignant"]
        else:
            df["time"] = lesions["time"]
            df["event"] = lesions["event"]
        for col in ("image_path", "mask_path"):
            df[col] = "../" + df[col]
        (out / task).mkdir(exist_ok=True)
        df[common + labels].to_csv(out / task / "manifest.csv", index=False)
    from lesionbench.tasks.synthetic.extra_labels import EXTRA_TASK_NAMES, write_extra_manifests

    for task in EXTRA_TASK_NAMES:  # derived from lesions.csv: rewritten for this cohort
        (out / task / "manifest.csv").unlink(missing_ok=True)
    write_extra_manifests(out, seed=seed)
    info = {
        "generator": "lesionbench.tasks.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "patients": patients,
        "lesions": len(lesions),
        "tasks": list(TASK_NAMES),
        "licence": "CC0-1.0",
    }
    (out / "cohort.json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info("synthetic cohort: %d patients, %d lesions in %s", patients, len(lesions), out)
    return out


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete volumes a previous, larger cohort left in ``out`` (only files named like ours)."""
    import re

    pattern = re.compile(r"P\d{5,}(_L\d+)?\.nii\.gz")
    for sub in ("images", "masks"):
        for f in (out / sub).iterdir():
            if pattern.fullmatch(f.name) and f"{sub}/{f.name}" not in keep:
                f.unlink()
                logger.debug("removed stale %s", f)


def _run_patients(out: str, seed: int, patients: int, workers: int) -> Iterator[list[dict[str, Any]]]:
    if workers == 1:
        for i in range(patients):
            yield _generate_patient(out, seed, i)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # map keeps patient order, so the lesion table does not depend on scheduling.
        yield from pool.map(_generate_patient, [out] * patients, [seed] * patients, range(patients))


def _progress(it: Iterator[Any], total: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc="synthetic patients", unit="patient")


def default_cohort_dir() -> Path:
    """``$LESIONBENCH_DATA/synthetic``: where the synthetic tasks look by default."""
    from lesionbench.benchmark.paths import data_root

    return data_root() / COHORT_DIRNAME


def ensure_cohort(root: str | Path | None = None, *, patients: int = DEFAULT_PATIENTS, seed: int = 0,
                  workers: int | None = None, progress: bool = True) -> Path:
    """Return the cohort folder, generating the cohort first if it is absent, incomplete or other.

    ``root`` defaults to :func:`default_cohort_dir`. A cohort counts as present when its
    ``cohort.json`` matches ``patients``, ``seed`` and the generator version and all three manifests exist.
    """
    root = Path(root) if root is not None else default_cohort_dir()
    if _cohort_complete(root, patients=patients, seed=seed):
        logger.info("synthetic cohort found in %s", root)
        from lesionbench.tasks.synthetic.extra_labels import write_extra_manifests

        write_extra_manifests(root, seed=seed)  # a cohort made before the extra tasks existed gains them, images untouched
        return root
    if workers is None:
        workers = min(4, usable_cores())
    return generate_cohort(root, patients=patients, seed=seed, workers=workers, progress=progress)


