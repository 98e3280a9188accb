"""Machinery shared by the tumour-SEG cohorts, binary and survival (private: the tasks are the other modules here).

A cohort whose patients each have a CT and a DICOM SEG of the tumour (the IDC collections
``nsclc_radiogenomics``, ``c4kc_kits``, ``colorectal_liver_metastases``, ``hcc_tace_seg`` ...) plus a clinical
table becomes a task of its spec's ``kind``:

* the images as the NSCLC survival tasks make them (:mod:`lesionbench.tasks._nsclc`: the SEG's tumour
  segment mapped onto the CT series it references, NIfTI CT and mask per patient, seed at the mask's
  physical centroid, resumable per patient); which segment is the spec's ``segment`` rule
  (default :func:`lesionbench.tasks._dicom.choose_segment`; :func:`~lesionbench.tasks._dicom.largest_tumour_segment`
  for SEGs with one segment per tumour); a CT series holding several acquisitions at the same positions is cut to the
  one its SEG references most (:func:`one_acquisition`);
* the labels from the clinical table by the task's own ``labels`` function: ``label`` 0/1 (binary) or
  ``time`` (days) and ``event`` 0/1 (survival; prepare adds ``label_2y``,
  :func:`lesionbench.benchmark.scoring.endpoints.two_year_label`). NaN: not usable, listed in ``excluded.csv``
  with the reason, like patients without images;
* the clinical table as CSV, or as the Excel workbook TCIA publishes (:class:`ClinicalWorkbook`, first sheet);
* the protocol of the NSCLC tasks: five patient-grouped folds stratified by the label (binary) or the event
  (survival) (:func:`lesionbench.tasks._nsclc.assign_folds`, seed 0), fold ``k`` test, ``k + 1`` validation, the
  rest training; the fold is a task option (``fold=0`` by default) and part of the version.

The module keeps its first name, and ``BinaryCohortSpec``, ``BinaryCohortTask``, ``prepare_binary_cohort`` theirs (the binary
cohorts import them); ``SegCohortSpec``, ``SegCohortTask`` and ``prepare_seg_cohort`` are the same objects under general names.
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
from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._nsclc import ClinicalTable, CohortSpec, _cases, _convert_case, assign_folds, split_for_fold

logger = logging.getLogger(__name__)


#: The label columns a cohort's ``labels`` function returns, per task kind.
TARGETS: dict[TaskKind, tuple[str, ...]] = {TaskKind.BINARY: ("label",), TaskKind.SURVIVAL: ("time", "event")}


@dataclass(frozen=True)
class ClinicalWorkbook(ClinicalTable):
    """A clinical table TCIA publishes as an Excel workbook: its first sheet is read (a CSV export of it too)."""

    def read(self, path: Path) -> pd.DataFrame:
        path = Path(path)
        if path.suffix.lower() not in (".xlsx", ".xlsm", ".xls"):
            return super().read(path)
        try:
            df = pd.read_excel(path, sheet_name=0, dtype=str)
        except ImportError as exc:  # pandas reads .xlsx with openpyxl, an optional package
            raise DataPreparationError(
                f"Reading the workbook {path} needs openpyxl: pip install openpyxl (or 'lesionbench[idc]'); or save its "
                "first sheet as CSV and pass --clinical FILE.csv."
            ) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise DataPreparationError(f"Clinical workbook {path} could not be read ({type(exc).__name__}: {exc}). Re-download it from {self.page}.") from exc
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise DataPreparationError(
                f"Clinical workbook {path} lacks column(s) {missing} in its first sheet (found {list(df.columns)}). "
                f"It is not {self.filename}; download that file from {self.page}."
            )
        return df


@dataclass(frozen=True)
class BinaryCohortSpec:
    """What a tumour-SEG cohort needs to be prepared (binary or survival, by ``kind``)."""

    task: str
    clinical: ClinicalTable
    #: clinical table -> DataFrame(patient_id, *TARGETS[kind], reason): NaN targets with the reason they are unusable.
    labels: Callable[[pd.DataFrame], pd.DataFrame]
    #: ``lesionbench download <name>`` fetches its images.
    download_name: str
    kind: TaskKind = TaskKind.BINARY
    #: Picks the lesion's segment from a read SEG (None: the SEG's one segment, or its one tumour segment).
    segment: Callable[[Any], int] | None = None


#: The general name: a SEG cohort of either kind.
SegCohortSpec = BinaryCohortSpec


def _finish_labels(spec: BinaryCohortSpec, df: pd.DataFrame, raw: Path, clin_name: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Cast the targets, add ``label_2y`` (survival), refuse a cohort that cannot be scored; returns the counts too."""
    if spec.kind == TaskKind.BINARY:
        df["label"] = df["label"].astype(int)
        if df["label"].nunique() < 2:
            raise DataPreparationError(
                f"{spec.task}: all {len(df)} usable patients of {raw} have label {int(df['label'].iloc[0])} in {clin_name}; a binary "
                "task needs both classes. Prepare the whole download (not a subset of patients), or check the clinical table."
            )
        return df, {"n_patients": int(len(df)), "n_positive": int(df["label"].sum())}
    df["event"] = df["event"].astype(int)
    if not df["event"].any():
        raise DataPreparationError(
            f"{spec.task}: none of the {len(df)} usable patients of {raw} has an event in {clin_name}; a survival task needs "
            "events. Prepare the whole download (not a subset of patients), or check the clinical table."
        )
    df["label_2y"] = two_year_label(df["time"].to_numpy(float), df["event"].to_numpy(float))
    return df, {"n_patients": int(len(df)), "n_events": int(df["event"].sum()), "n_2y_known": int(df["label_2y"].notna().sum())}


def one_acquisition(case: Any) -> Any:
    """The case with each CT series cut to one acquisition where the series holds several at the same slice positions.

    HCC-TACE-Seg's multiphase series (``LIVER 3 PHASE``) are reported to hold every phase at the same positions, told
    apart by AcquisitionNumber, with SEGs that reference slices of more than one of them. The acquisition kept is the one whose
    slices the patient's SEG(s) reference most (ties: the lowest AcquisitionNumber); the SEG is then mapped onto it by
    position (:func:`lesionbench.tasks._dicom.seg_mask`). Series with one slice per position are left as they are.
    """
    from lesionbench.tasks import _dicom

    if case.ct.empty or not case.contours or "AcquisitionNumber" not in case.ct.columns:
        return case
    pydicom = _dicom._pydicom()
    referenced: set[str] = set()
    for path in case.contours:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as exc:  # converting the case reports the broken SEG for this patient only
            logger.debug("%s: SEG %s unreadable (%s); its series left as they are", case.patient_id, path, exc)
            return case
        for series in header.get("ReferencedSeriesSequence", []):
            referenced |= {str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedInstanceSequence", [])}
    kept = []
    for uid, rows in case.ct.groupby("SeriesInstanceUID", sort=False):
        if rows["ImagePositionPatient"].dropna().duplicated().any() and rows["AcquisitionNumber"].nunique() > 1:
            hits = rows.groupby("AcquisitionNumber")["SOPInstanceUID"].agg(lambda u: len(set(u) & referenced))
            acq = min(hits.index, key=lambda a: (-int(hits[a]), str(a).zfill(12)))
            logger.info("%s: CT series %s holds acquisitions %s at the same positions; keeping %s (%d slices the SEG references)",
                        case.patient_id, uid, sorted(hits.index), acq, int(hits[acq]))  # fmt: skip
            rows = rows[rows["AcquisitionNumber"] == acq]
        kept.append(rows)
    return replace(case, ct=pd.concat(kept, ignore_index=True))


def prepare_binary_cohort(spec: BinaryCohortSpec, raw: str | Path | None, out: str | Path, *, clinical: str | Path | None = None,
                          workers: int | None = None, progress: bool = True) -> Path:  # fmt: skip
    """Build the cohort's NIfTI files, ``manifest.csv``, ``excluded.csv`` and ``label_counts.json`` in ``out``.

    ``label_counts.json``: ``n_patients``, ``n_positive`` (binary) or ``n_events`` and ``n_2y_known`` (survival), ``n_excluded``.
    """
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
    cases = [one_acquisition(replace(c, segment=spec.segment)) for c in _cases(cohort, index, raw)]
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
    targets = list(TARGETS[spec.kind])
    missing = [c for c in ("patient_id", *targets) if c not in labels.columns]
    if missing:
        raise DataPreparationError(f"{spec.task}: its labels function returned no column(s) {missing}; a {spec.kind} cohort needs {targets}.")
    merged = images.merge(labels, on="patient_id", how="left", validate="one_to_one")
    unusable = merged[targets].isna().any(axis=1)
    why = merged["reason"] if "reason" in merged.columns else pd.Series("", index=merged.index)
    for pid, text in zip(merged.loc[unusable, "patient_id"], why[unusable]):
        excluded.append({"patient_id": pid, "reason": text if isinstance(text, str) and text else f"not in the clinical table {clin_path.name}"})
    for p in sorted(set(labels["patient_id"]) - set(index["PatientID"].astype(str))):
        excluded.append({"patient_id": p, "reason": "in the clinical table but not in the raw DICOM folder"})
    df = merged[~unusable].drop(columns=["reason"], errors="ignore").sort_values("patient_id", kind="stable").reset_index(drop=True)
    df, counts = _finish_labels(spec, df, raw, clin_path.name)
    df.insert(0, "lesion_id", df["patient_id"])
    df["cohort"] = spec.task
    df["fold"] = assign_folds(df.assign(event=df["label"]) if spec.kind == TaskKind.BINARY else df)
    df["split"] = split_for_fold(df["fold"].to_numpy(), 0)
    validate_manifest(resolve_paths(df, out), kind=spec.kind, source=f"{spec.task} manifest being written")
    manifest_path = out / "manifest.csv"
    df.to_csv(manifest_path, index=False)
    pd.DataFrame(excluded, columns=["patient_id", "reason"]).to_csv(out / "excluded.csv", index=False)
    counts["n_excluded"] = len(excluded)
    (out / "label_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    logger.info("%s: %s; excluded listed in %s", spec.task, counts, out / "excluded.csv")
    return manifest_path


class FoldedCohortTask(ManifestTask):
    """A cohort task on the patient-grouped 5-fold protocol: the manifest's ``fold`` column, fold ``fold`` (0-4)
    the test set, the next one validation; the fold is part of the version."""

    meta: ClassVar[TaskMeta]
    base_meta: ClassVar[TaskMeta]
    #: Datasets its data come from (the leaderboard marks encoders pre-trained on them).
    data_sources: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "meta" not in vars(cls):  # an intermediate base (BinaryCohortTask) names no task
            return
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


class BinaryCohortTask(FoldedCohortTask):
    """A tumour-SEG cohort task, binary or survival by its meta's kind: patient-grouped 5 folds, fold ``fold`` (0-4) the test set."""

    cohort: ClassVar[BinaryCohortSpec]

    @classmethod
    def prepare(cls, raw: str | Path | None, out: str | Path, *, clinical: str | Path | None = None, workers: int | None = None) -> Path:
        """Prepare the cohort from the raw IDC download and the clinical table (see the task's module docstring)."""
        return prepare_binary_cohort(cls.cohort, raw, out, clinical=clinical, workers=workers)


#: The general names: a SEG cohort task of either kind, and its preparer.
SegCohortTask = BinaryCohortTask
prepare_seg_cohort = prepare_binary_cohort
