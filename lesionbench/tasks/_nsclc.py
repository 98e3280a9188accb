"""Machinery shared by the NSCLC survival tasks (private: the tasks live in ``lung1.py``, ``radio.py``
and ``nsclc_cross.py``).

* :class:`ClinicalTable`: a collection's clinical file, its documented TCIA address, and the
  columns the task reads, checked on use.
* :func:`prepare_cohort`: raw DICOM download + clinical table -> NIfTI CT and tumour mask per
  patient, seed at the mask centroid, one manifest. Resumable (each finished patient is recorded
  in ``cases/<patient>.json`` and skipped on the next run) and idempotent (same inputs, same files).
* The labels: ``time``/``event`` (days, death observed), ``label_2y`` from
  :func:`lesionbench.benchmark.scoring.endpoints.two_year_label`, and ``label_fmcib``, the published label;
  :func:`compare_label_variants` counts and explains where the two disagree.
* The protocol: patient-grouped folds stratified by event (:func:`assign_folds`), one fold test,
  the next validation, the rest training (:func:`split_for_fold`).
* :class:`NsclcSurvivalTask`: the within-cohort task with options ``fold`` and ``label_variant``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from lesionbench.benchmark.scoring.endpoints import TWO_YEARS_DAYS, two_year_label
from lesionbench.benchmark.errors import ConfigurationError, DataPreparationError, ManifestError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.data.manifest import ManifestTask, read_manifest, resolve_paths, validate_manifest
from lesionbench.benchmark.types import TaskKind, TaskMeta

logger = logging.getLogger(__name__)

#: Folds of the within-cohort protocol and the seed that draws them (part of the task version).
N_FOLDS = 5
FOLD_SEED = 0
#: Label variants: the default time-to-event task, and the published FMCIB labels (binary).
LABEL_VARIANTS: tuple[str, ...] = ("survival", "fmcib")
#: Written by ``lesionbench download`` into its folder: the series it chose, so prepare uses only those.
DOWNLOAD_MANIFEST = "lesionbench-download.csv"


# ---------------------------------------------------------------------------------- clinical
@dataclass(frozen=True)
class ClinicalTable:
    """A collection's clinical table: where to get it and which columns the task needs."""

    cohort: str
    filename: str
    url: str
    page: str
    glob: str
    columns: tuple[str, ...]

    def locate(self, raw: Path | None, clinical: Path | None) -> Path:
        """The table to read: ``clinical`` if given, else the newest match of :attr:`glob` under ``raw``."""
        if clinical is not None:
            clinical = Path(clinical)
            if not clinical.is_file():
                raise DataPreparationError(
                    f"Clinical table {clinical} not found. Download {self.filename} from {self.url} "
                    f"(collection page {self.page}); `lesionbench download {self.cohort}` fetches it too."
                )
            return clinical
        found = sorted(Path(raw).rglob(self.glob)) if raw is not None and Path(raw).is_dir() else []
        if not found:
            raise DataPreparationError(
                f"No {self.cohort.upper()} clinical table ({self.glob}) under {raw}. Download {self.filename} "
                f"from {self.url} (collection page {self.page}) into the raw folder or pass --clinical FILE; "
                f"`lesionbench download {self.cohort}` fetches it with the images."
            )
        return found[-1]

    def read(self, path: Path) -> pd.DataFrame:
        """Read the table and check it has :attr:`columns`."""
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataPreparationError(f"Clinical table {path} could not be read as CSV ({exc}). Re-download {self.url}.") from exc
        df.columns = [c.strip() for c in df.columns]
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise DataPreparationError(
                f"Clinical table {path} lacks column(s) {missing} (found {list(df.columns)}). It is not "
                f"{self.filename}; download that file from {self.url}."
            )
        return df


def _numbers(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce")


# -------------------------------------------------------------------------------------- labels
def compare_label_variants(df: pd.DataFrame) -> dict[str, Any]:
    """How the time-to-event 2-year label and the published ``label_fmcib`` differ, with reasons.

    ``df`` has ``time``, ``event`` and ``label_fmcib`` (1 = survivor, as published). The 2-year
    mortality label (1 = died within 730 days) is compared with ``1 - label_fmcib``.
    """
    y2 = two_year_label(df["time"].to_numpy(float), df["event"].to_numpy(float))
    fm = df["label_fmcib"].to_numpy(float)
    t, e = df["time"].to_numpy(float), df["event"].to_numpy(float)
    unknown = np.isnan(y2)
    differ = ~unknown & (y2 != 1.0 - fm)
    reasons: dict[str, int] = {}

    def count(reason: str, mask: np.ndarray) -> None:
        if int(mask.sum()):
            reasons[reason] = int(mask.sum())

    count("censored before 730 d (2-year status unknown, excluded from auc_2y) but labelled survivor by fmcib", unknown & (fm == 1))
    count("censored before 730 d (2-year status unknown, excluded from auc_2y) but labelled non-survivor by fmcib", unknown & (fm == 0))
    count("died after 730 d (a 2-year survivor) but labelled non-survivor by fmcib (vital status at last follow-up)", differ & (e == 1) & (t > TWO_YEARS_DAYS))
    count("died on or before day 730 but labelled survivor by fmcib", differ & (e == 1) & (t <= TWO_YEARS_DAYS))
    count("followed beyond 730 d alive but labelled non-survivor by fmcib", differ & (e == 0))
    return {
        "n_patients": int(len(df)),
        "n_2y_known": int((~unknown).sum()),
        "n_2y_excluded": int(unknown.sum()),
        "n_agree": int((~unknown & ~differ).sum()),
        "n_differ": int(differ.sum() + unknown.sum()),
        "reasons": reasons,
    }


# -------------------------------------------------------------------------------------- splits
def assign_folds(df: pd.DataFrame, *, n_folds: int = N_FOLDS, seed: int = FOLD_SEED) -> np.ndarray:
    """Patient-grouped folds stratified by ``event`` (seeded): one fold index per row."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = df["patient_id"].nunique()
    if n_groups < 3:
        raise DataPreparationError(f"A cohort of {n_groups} patient(s) cannot be split into train, val and test; prepare more patients.")
    # scikit-learn refuses more folds than the larger event class has members (tiny cohorts only)
    largest_class = int(df.groupby("patient_id")["event"].first().value_counts().max())
    n = min(n_folds, n_groups, largest_class)
    if n < 3:
        raise DataPreparationError(f"A cohort of {n_groups} patient(s) cannot be split into train, val and test; prepare more patients.")
    if n < n_folds:
        logger.warning("Only %d patients: using %d folds instead of %d.", n_groups, n, n_folds)
    folds = np.full(len(df), -1, dtype=int)
    cv = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(df)), df["event"].astype(int), groups=df["patient_id"])):
        folds[test] = k
    return folds


def split_for_fold(folds: np.ndarray, fold: int) -> np.ndarray:
    """``test`` for fold ``fold``, ``val`` for the next fold (cyclically), ``train`` for the others."""
    folds = np.asarray(folds, dtype=int)
    n = int(folds.max()) + 1
    if not 0 <= fold < n:
        raise ConfigurationError(f"fold={fold} is out of range: this manifest has folds 0..{n - 1}.")
    split = np.full(len(folds), "train", dtype=object)
    split[folds == fold] = "test"
    split[folds == (fold + 1) % n] = "val"
    return split


# ------------------------------------------------------------------------------------- prepare
@dataclass(frozen=True)
class CohortSpec:
    """What differs between the NSCLC cohorts when they are prepared."""

    task: str
    #: Modality of the tumour contour: "RTSTRUCT" (ROI ``roi_name``) or "SEG" (the tumour segment).
    contour_modality: str
    roi_name: str
    clinical: ClinicalTable
    #: clinical table -> DataFrame(patient_id, time, event, label_fmcib); NaN where unusable.
    outcomes: Callable[[pd.DataFrame], pd.DataFrame]
    download_name: str


@dataclass(frozen=True)
class _Case:
    patient_id: str
    ct: pd.DataFrame  # scan rows of the patient's CT slices (all series)
    contours: tuple[str, ...]  # candidate contour files (RTSTRUCT or SEG)
    modality: str
    roi_name: str
    segment: Callable[[Any], int] | None = None  # a SEG's segment rule (None: _dicom.choose_segment)


def _case_json(out: Path, pid: str) -> Path:
    return out / "cases" / f"{pid}.json"


def _convert_case(case: _Case, out: Path) -> dict[str, Any]:
    """Convert one patient; returns its manifest record, or {"patient_id", "error"}."""
    try:
        return _convert_case_unchecked(case, out)
    except (DataPreparationError, RuntimeError, OSError, ValueError, KeyError, AttributeError) as exc:
        # One broken patient must not stop a 400-patient cohort: it is listed in excluded.csv.
        return {"patient_id": case.patient_id, "error": f"{type(exc).__name__}: {exc}"}


def _pick_contour(case: _Case) -> tuple[str, list[str]]:
    from lesionbench.tasks import _dicom

    problems = []
    usable = []
    for path in case.contours:
        if case.modality == "RTSTRUCT":
            names = _dicom.rtstruct_roi_names(path)
            if any(_dicom._normalise_roi_name(n) == _dicom._normalise_roi_name(case.roi_name) for n in names):
                usable.append((path, _dicom.rtstruct_referenced_series(path)))
            else:
                problems.append(f"{path}: no ROI {case.roi_name!r} (has {names})")
        else:
            usable.append((path, _dicom.seg_referenced_series(path)))
    if not usable:
        raise DataPreparationError(f"no usable {case.modality}: " + "; ".join(problems or ["none found"]))
    if len(usable) > 1:
        raise DataPreparationError(
            f"{len(usable)} candidate {case.modality} files ({[u[0] for u in usable]}); keep the tumour contour only "
            f"(`lesionbench download` selects it) and re-run."
        )
    return usable[0]


def _convert_case_unchecked(case: _Case, out: Path) -> dict[str, Any]:
    from lesionbench.tasks import _dicom

    contour_path, referenced = _pick_contour(case)
    series = case.ct["SeriesInstanceUID"].unique().tolist()
    chosen = [s for s in series if s in referenced]
    if not chosen:
        if len(series) != 1:
            raise DataPreparationError(
                f"{contour_path} references CT series {referenced}, which are not in the raw folder "
                f"(found {series}); download the referenced series."
            )
        chosen = series
    ct_uid = chosen[0]
    contour_uid = _dicom._pydicom().dcmread(contour_path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
    image_rel = f"images/{case.patient_id}_CT.nii.gz"
    mask_rel = f"masks/{case.patient_id}_tumour.nii.gz"
    record_path = _case_json(out, case.patient_id)
    if record_path.is_file() and (out / image_rel).is_file() and (out / mask_rel).is_file():
        record = json.loads(record_path.read_text())
        if record.get("ct_series_uid") == ct_uid and record.get("contour_sop_uid") == str(contour_uid):
            return record  # resumed: converted by an earlier run from the same sources

    ct = _dicom.read_ct_series(case.ct[case.ct["SeriesInstanceUID"] == ct_uid])
    if case.modality == "RTSTRUCT":
        mask = _dicom.rtstruct_mask(contour_path, ct.image, case.roi_name)
    else:
        mask = _dicom.seg_mask(contour_path, ct, segment=case.segment)
    geom = _dicom.mask_geometry(mask)
    _dicom.write_image_atomic(ct.image, out / image_rel)
    _dicom.write_image_atomic(mask, out / mask_rel)
    record = {
        "patient_id": case.patient_id,
        "image_path": image_rel,
        "mask_path": mask_rel,
        "coordX": geom.centroid_lps[0],
        "coordY": geom.centroid_lps[1],
        "coordZ": geom.centroid_lps[2],
        "diameter_mm": geom.diameter_mm,
        "volume_ml": geom.volume_ml,
        "n_mask_voxels": geom.n_voxels,
        "ct_series_uid": ct_uid,
        "contour_sop_uid": str(contour_uid),
        "contour_file": str(contour_path),
    }
    atomic_write(record_path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return record


def _cases(spec: CohortSpec, index: pd.DataFrame, raw: Path) -> list[_Case]:
    planned = raw / DOWNLOAD_MANIFEST
    if planned.is_file():
        # Only the series `lesionbench download` chose (RADIO also holds AI-generated SEGs in IDC).
        keep = set(pd.read_csv(planned, dtype=str)["SeriesInstanceUID"])
        index = index[index["SeriesInstanceUID"].isin(keep)]
    cases = []
    for pid, rows in index.groupby("PatientID", sort=True):
        cases.append(
            _Case(
                patient_id=str(pid),
                ct=rows[rows["Modality"] == "CT"].reset_index(drop=True),
                contours=tuple(sorted(rows.loc[rows["Modality"] == spec.contour_modality, "path"])),
                modality=spec.contour_modality,
                roi_name=spec.roi_name,
            )
        )
    return cases


def prepare_cohort(
    spec: CohortSpec,
    raw: str | Path | None,
    out: str | Path,
    *,
    clinical: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Build a cohort's NIfTI files and manifest; see the module docstring. Returns the manifest path."""
    from tqdm.auto import tqdm

    from lesionbench.tasks import _dicom

    if raw is None or not Path(raw).is_dir():
        raise DataPreparationError(
            f"{spec.task} needs the raw DICOM download (--raw DIR); {raw} is not a folder. "
            f"Get it with `lesionbench download {spec.download_name} --out DIR` (IDC, via idc-index)."
        )
    raw, out = Path(raw), Path(out)
    clin_path = spec.clinical.locate(raw, Path(clinical) if clinical else None)
    outcomes = spec.outcomes(spec.clinical.read(clin_path))
    logger.info("%s: clinical table %s, %d patients", spec.task, clin_path, len(outcomes))

    index = _dicom.scan_dicom(raw, progress=progress)
    if index.empty:
        raise DataPreparationError(f"No DICOM files under {raw}. Download them with `lesionbench download {spec.download_name} --out {raw}`.")
    cases = _cases(spec, index, raw)
    no_ct = [c.patient_id for c in cases if c.ct.empty]
    no_contour = [c.patient_id for c in cases if not c.contours]
    if len(no_ct) == len(cases) or len(no_contour) == len(cases):
        what = "CT series" if len(no_ct) == len(cases) else f"{spec.contour_modality} files"
        raise DataPreparationError(
            f"No {what} found under {raw} for any of {len(cases)} patients. Download CT and "
            f"{spec.contour_modality} with `lesionbench download {spec.download_name} --out {raw}`."
        )
    out.mkdir(parents=True, exist_ok=True)
    excluded = [{"patient_id": p, "reason": "no CT series in the raw folder"} for p in no_ct]
    excluded += [{"patient_id": p, "reason": f"no {spec.contour_modality} in the raw folder"} for p in no_contour if p not in no_ct]
    todo = [c for c in cases if not c.ct.empty and c.contours]

    records = []
    n_workers = max(1, int(workers or 1))
    bar = tqdm(total=len(todo), desc=f"preparing {spec.task}", unit="patient", disable=not progress)
    if n_workers == 1:
        results = (_convert_case(c, out) for c in todo)
        for r in results:
            records.append(r)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for r in pool.map(_convert_case, todo, [out] * len(todo)):
                records.append(r)
                bar.update()
    bar.close()
    failed = [r for r in records if "error" in r]
    excluded += [{"patient_id": r["patient_id"], "reason": r["error"]} for r in failed]
    for r in failed:
        logger.warning("%s: patient %s excluded: %s", spec.task, r["patient_id"], r["error"])
    images = pd.DataFrame([r for r in records if "error" not in r])
    if images.empty:
        raise DataPreparationError(f"No patient of {raw} could be converted; first reasons: {[e['reason'] for e in excluded[:3]]}.")

    merged = images.merge(outcomes, on="patient_id", how="left", validate="one_to_one")
    no_clin = merged["time"].isna() | merged["event"].isna()
    excluded += [
        {"patient_id": p, "reason": f"no usable time/event in the clinical table {clin_path.name}"} for p in merged.loc[no_clin, "patient_id"]
    ]
    for p in sorted(set(outcomes["patient_id"]) - set(index["PatientID"].astype(str))):
        excluded.append({"patient_id": p, "reason": "in the clinical table but not in the raw DICOM folder"})
    df = merged[~no_clin].reset_index(drop=True)
    df["event"] = df["event"].astype(int)
    df["label_fmcib"] = df["label_fmcib"].astype(int)
    df["label_2y"] = two_year_label(df["time"].to_numpy(float), df["event"].to_numpy(float))
    df.insert(0, "lesion_id", df["patient_id"])
    df["cohort"] = spec.task
    df = df.sort_values("patient_id", kind="stable").reset_index(drop=True)
    df["fold"] = assign_folds(df)
    df["split"] = split_for_fold(df["fold"].to_numpy(), 0)

    validate_manifest(resolve_paths(df, out), kind=TaskKind.SURVIVAL, source=f"{spec.task} manifest being written")
    comparison = compare_label_variants(df)
    manifest_path = out / "manifest.csv"
    df.to_csv(manifest_path, index=False)
    pd.DataFrame(excluded, columns=["patient_id", "reason"]).to_csv(out / "excluded.csv", index=False)
    (out / "label_comparison.json").write_text(json.dumps(comparison, indent=1))
    logger.info(
        "%s: %d patients in the manifest, %d excluded (see %s); 2-year label known for %d; "
        "fmcib labels differ for %d: %s",
        spec.task, len(df), len(excluded), out / "excluded.csv", comparison["n_2y_known"], comparison["n_differ"], comparison["reasons"],
    )
    return manifest_path


# ---------------------------------------------------------------------------------------- tasks
def variant_meta(meta: TaskMeta, *, label_variant: str | None, fold: int | None) -> TaskMeta:
    """The meta of a task option combination: fold and label variant are part of the version."""
    variant = label_variant or "survival"
    if variant not in LABEL_VARIANTS:
        raise ConfigurationError(f"Unknown label_variant {label_variant!r} for {meta.name}; use one of {list(LABEL_VARIANTS)}.")
    version = meta.version + (f"-fold{fold}" if fold is not None else "")
    if variant == "fmcib":
        return replace(
            meta,
            version=version + "-fmcib",
            kind=TaskKind.BINARY,
            main_metric="auc",
            metrics=("auc", "average_precision"),
            class_names=("non-survivor", "survivor"),
            description=meta.description + " Published FMCIB labels (label = label_fmcib, 1 = survivor).",
        )
    return replace(meta, version=version)


class NsclcSurvivalTask(ManifestTask):
    """A within-cohort NSCLC survival task: patient-grouped 5-fold protocol, fold ``fold`` is the test set.

    Options: ``fold`` (0..4; the next fold is validation, the rest training) and
    ``label_variant`` (``"survival"``: time/event, scored by auc_2y and c_index; ``"fmcib"``: the
    published binary labels as ``label``).
    """

    cohort: ClassVar[CohortSpec]
    meta: ClassVar[TaskMeta]
    #: The meta without options; subclasses define ``meta`` and it becomes this (``meta`` is then fold 0).
    base_meta: ClassVar[TaskMeta]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.base_meta = cls.meta
        cls.meta = variant_meta(cls.meta, label_variant=None, fold=0)

    def __init__(
        self,
        data_dir: str | Path | None = None,
        manifest_path: str | Path | None = None,
        *,
        fold: int = 0,
        label_variant: str | None = None,
    ):
        base = type(self).base_meta
        super().__init__(data_dir, manifest_path)
        self.fold = int(fold)
        self.label_variant = label_variant or "survival"
        self.meta = variant_meta(base, label_variant=label_variant, fold=self.fold)

    def manifest(self) -> pd.DataFrame:
        path = self.resolve_manifest_path()
        if not path.exists():
            raise self.missing_manifest(path)  # with the task's folder when --data-dir is the one above it
        df = read_manifest(path)
        return finish_manifest(df, self.meta, self.label_variant, split=split_for_fold(_folds(df, path), self.fold), source=str(path))

    @classmethod
    def prepare(
        cls,
        raw: str | Path | None,
        out: str | Path,
        *,
        clinical: str | Path | None = None,
        workers: int | None = None,
        label_variant: str | None = None,
    ) -> Path:
        """Prepare the cohort (both label variants are always written; ``label_variant`` is only checked)."""
        variant_meta(cls.base_meta, label_variant=label_variant, fold=None)
        return prepare_cohort(cls.cohort, raw, out, clinical=clinical, workers=workers)


def _folds(df: pd.DataFrame, source: Path | str) -> np.ndarray:
    if "fold" not in df.columns:
        raise ManifestError(str(source), ["no 'fold' column: this manifest was not written by `lesionbench prepare` for an NSCLC task; re-run it."])
    return pd.to_numeric(df["fold"], errors="raise").to_numpy(int)


def finish_manifest(df: pd.DataFrame, meta: TaskMeta, label_variant: str, *, split: np.ndarray, source: str) -> pd.DataFrame:
    """Set the split and (fmcib variant) the ``label`` column, then validate against ``meta``."""
    df = df.copy()
    df["split"] = split
    if label_variant == "fmcib":
        if "label_fmcib" not in df.columns:
            raise ManifestError(source, ["no 'label_fmcib' column; re-run `lesionbench prepare` for this cohort."])
        df["label"] = df["label_fmcib"]
    return validate_manifest(df, meta=meta, source=source)
