"""Machinery shared by the binary tumour-SEG cohorts (private: the tasks are the other modules here).

A cohort whose patients each have a CT and a DICOM SEG of the tumour (the IDC collections
``nsclc_radiogenomics``, ``c4kc_kits`` ...) plus a clinical table becomes a binary task:

* the images as the NSCLC survival tasks make them (:mod:`lesionbench.tasks._nsclc`: the SEG's tumour
  segment mapped onto the CT series it references, NIfTI CT and mask per patient, seed at the mask's
  physical centroid, resumable per patient);
* the labels from the clinical table by the task's own ``labels`` function (NaN: not usable, listed in
  ``excluded.csv`` with the reason, like patients without images);
* the protocol of the NSCLC tasks: five patient-grouped folds stratified by the label
  (:func:`lesionbench.tasks._nsclc.assign_folds`, seed 0), fold ``k`` test, ``k + 1`` validation, the rest
  training; the fold is a task option (``fold=0`` by default) and part of the version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError, ManifestError
from lesionbench.benchmark.data.manifest import ManifestTask, read_manifest, resolve_paths, validate_manifest
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._nsclc import ClinicalTable, CohortSpec, _cases, _convert_case, assign_folds, split_for_fold

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BinaryCohortSpec:
    """What a binary tumour-SEG cohort needs to be prepared."""

    task: str
    clinical: ClinicalTable
    #: clinical table -> DataFrame(patient_id, label, reason): label 0/1, or NaN with the reason it is unusable.
    labels: Callable[[pd.DataFrame], pd.DataFrame]
    #: ``lesionbench download <name>`` fetches its images.
    download_name: str


def prepare_binary_cohort(spec: BinaryCohortSpec, raw: str | Path | None, out: str | Path, *, clinical: str | Path | None = None,
                          workers: int | None = None, progress: bool = True) -> Path:  # fmt: skip
    """Build the cohort's NIfTI files, ``manifest.csv``, ``excluded.csv`` and ``label_counts.json`` in ``out``."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from lesionbench.tasks import _dicom

    if raw is None or not Path(raw).is_dir():
        raise DataPreparationError(
            f"{spec.task} needs the raw DICOM download (--raw DIR); {raw} is not a folder. "
            f"Get it with `lesionbench download {spec.download_name} --out DIR` (IDC, via idc-index)."
        )
    raw, out = Path(raw), Path(out)
    clin_path = spec.clinical.locate(raw, Path(clinical) if clinical else None)
    labels = spec.labels(spec.clinical.read(clin_path))
    index = _dicom.scan_dicom(raw, progress=progress)
    if index.empty:
        raise DataPreparationError(f"No DICOM files under {raw}. Download them with `lesionbench download {spec.download_name} --out {raw}`.")
    # the NSCLC machinery picks each patient's SEG and the CT series it references
    cohort = CohortSpec(task=spec.task, contour_modality="SEG", roi_name="", clinical=spec.clinical, outcomes=lambda t: t, download_name=spec.download_name)
    cases = _cases(cohort, index, raw)
    excluded = [{"patient_id": c.patient_id, "reason": "no CT series in the raw folder"} for c in cases if c.ct.empty]
    excluded += [{"patient_id": c.patient_id, "reason": "no SEG in the raw folder"} for c in cases if not c.contours and not c.ct.empty]
    todo = [c for c in cases if not c.ct.empty and c.contours]
    if not todo:
        raise DataPreparationError(f"No patient under {raw} has both a CT series and a SEG. Download CT and SEG with `lesionbench download {spec.download_name} --out {raw}`.")
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), desc=f"preparing {spec.task}", unit="patient", disable=not progress)
    records = []
    with ProcessPoolExecutor(max_workers=max(1, int(workers or 1))) as pool:
        for r in pool.map(_convert_case, todo, [out] * len(todo)):
            records.append(r)
            bar.update()
    bar.close()
    for r in records:
        if "error" in r:
            logger.warning("%s: patient %s excluded: %s", spec.task, r["patient_id"], r["error"])
            excluded.append({"patient_id": r["patient_id"], "reason": r["error"]})
    images = pd.DataFrame([r for r in records if "error" not in r])
    if images.empty:
        raise DataPreparationError(f"No patient of {raw} could be converted; first reasons: {[e['reason'] for e in excluded[:3]]}.")
    merged = images.merge(labels, on="patient_id", how="left", validate="one_to_one")
    unusable = merged["label"].isna()
    for pid, why in zip(merged.loc[unusable, "patient_id"], merged.loc[unusable, "reason"]):
        excluded.append({"patient_id": pid, "reason": why if isinstance(why, str) and why else f"not in the clinical table {clin_path.name}"})
    for p in sorted(set(labels["patient_id"]) - set(index["PatientID"].astype(str))):
        excluded.append({"patient_id": p, "reason": "in the clinical table but not in the raw DICOM folder"})
    df = merged[~unusable].drop(columns=["reason"]).sort_values("patient_id", kind="stable").reset_index(drop=True)
    df["label"] = df["label"].astype(int)
    if df["label"].nunique() < 2:
        raise DataPreparationError(
            f"{spec.task}: all {len(df)} usable patients of {raw} have label {int(df['label'].iloc[0])} in {clin_path.name}; a binary "
            "task needs both classes. Prepare the whole download (not a subset of patients), or check the clinical table."
        )
    df.insert(0, "lesion_id", df["patient_id"])
    df["cohort"] = spec.task
    df["fold"] = assign_folds(df.assign(event=df["label"]))
    df["split"] = split_for_fold(df["fold"].to_numpy(), 0)
    validate_manifest(resolve_paths(df, out), kind=TaskKind.BINARY, source=f"{spec.task} manifest being written")
    manifest_path = out / "manifest.csv"
    df.to_csv(manifest_path, index=False)
    pd.DataFrame(excluded, columns=["patient_id", "reason"]).to_csv(out / "excluded.csv", index=False)
    counts = {"n_patients": int(len(df)), "n_positive": int(df["label"].sum()), "n_excluded": len(excluded)}
    (out / "label_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    logger.info("%s: %d patients (%d positive), %d excluded (see %s)", spec.task, counts["n_patients"], counts["n_positive"], len(excluded), out / "excluded.csv")
    return manifest_path


class BinaryCohortTask(ManifestTask):
    """A binary tumour-SEG cohort task: patient-grouped 5-fold protocol, fold ``fold`` (0-4) is the test set."""

    cohort: ClassVar[BinaryCohortSpec]
    meta: ClassVar[TaskMeta]
    base_meta: ClassVar[TaskMeta]
    #: Datasets its data come from (the leaderboard marks encoders pre-trained on them).
    data_sources: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.base_meta = cls.meta
        cls.meta = replace(cls.meta, version=f"{cls.meta.version}-fold0")

    def __init__(self, data_dir: str | Path | None = None, manifest_path: str | Path | None = None, *, fold: int = 0):
        super().__init__(data_dir, manifest_path)
        self.fold = int(fold)
        self.meta = replace(type(self).base_meta, version=f"{type(self).base_meta.version}-fold{self.fold}")

    def manifest(self) -> pd.DataFrame:
        path = self.resolve_manifest_path()
        if not path.exists():
            raise self.missing_manifest(path)  # with the task's folder when --data-dir is the one above it
        df = read_manifest(path)
        if "fold" not in df.columns:
            raise ManifestError(str(path), ["no 'fold' column: this manifest was not written by `lesionbench prepare`; re-run it."])
        df["split"] = split_for_fold(pd.to_numeric(df["fold"], errors="raise").to_numpy(int), self.fold)
        return validate_manifest(df, meta=self.meta, source=str(path))

    @classmethod
    def prepare(cls, raw: str | Path | None, out: str | Path, *, clinical: str | Path | None = None, workers: int | None = None) -> Path:
        """Prepare the cohort from the raw IDC download and the clinical table (see the task's module docstring)."""
        return prepare_binary_cohort(cls.cohort, raw, out, clinical=clinical, workers=workers)
