"""C4KC-KiTS kidney tumours: malignancy (``kits_malignancy``) and clear-cell subtype (``kits_subtype``).

Data: TCIA collection C4KC-KiTS (the KiTS19 challenge cohort: 210 patients with a CT and a DICOM SEG of
kidney and tumour), in IDC as ``c4kc_kits``: ``lesionbench download kits --out RAW`` (the SEGs and the
CT series of their studies; the SEG names the CT it was drawn on, which prepare picks). The clinical table
``C4KC-KiTS_Clinical-Data_Version-1.csv`` is not in IDC: download it from the collection page
(:data:`CLINICAL`) into RAW or pass ``--clinical FILE``; then ``lesionbench prepare kits_malignancy --raw RAW``.

Citation: Heller N, Sathianathen N, Kalapara A, et al. The KiTS19 challenge data: 300 kidney tumor cases
with clinical context, CT semantic segmentations, and surgical outcomes. arXiv:1904.00445 (2019); data:
C4KC-KiTS, TCIA, doi:10.7937/TCIA.2019.IX49E8NX.

Licence: CC BY 3.0 (TCIA; the licence the IDC index lists for the CT and SEG series).

Lesion: the SEG segment that names the tumour (``Tumor``; the ``Kidney`` segment is not the lesion), mapped
onto its CT; seed = its physical centroid (LPS mm), ``diameter_mm`` = equivalent-sphere diameter.
Labels, from the clinical table:

* ``kits_malignancy``: ``label = 1`` if ``malignant`` is True, ``0`` if False; anything else excluded;
* ``kits_subtype``: ``label = 1`` if ``tumor_histologic_subtype`` is ``clear_cell_rcc``, ``0`` for any other
  recorded subtype (papillary, chromophobe, oncocytoma, angiomyolipoma ...); empty excluded.

Splits: five patient-grouped folds stratified by the label (seed 0), fold ``k`` test, ``k + 1`` validation.

TumorImagingBench (``data/eval/c4c-kits/preprocessing.ipynb``) includes every patient with a converted SEG
and a clinical row (as here), but seeds at the centroid of the whole SEG mask (kidney and tumour), and splits
lesion rows at random (50% train, then 20% / 80% of the rest val / test, seed 0). lesionbench seeds on the
tumour segment (the lesion the label describes) and uses patient-grouped folds, so numbers compare in kind.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._nsclc import ClinicalTable
from lesionbench.tasks.cohorts._binary import BinaryCohortSpec, BinaryCohortTask

_PAGE = "https://www.cancerimagingarchive.net/collection/c4kc-kits/"
#: The collection's clinical table (TCIA, version 1).
CLINICAL = ClinicalTable(
    cohort="kits",
    filename="C4KC-KiTS_Clinical-Data_Version-1.csv",
    url=_PAGE,
    page=_PAGE,
    glob="C4KC-KiTS_Clinical-Data*.csv",
    columns=("patient_id", "malignant", "tumor_histologic_subtype"),
)
_CITATION = (
    "Heller N et al. The KiTS19 challenge data, arXiv:1904.00445 (2019); C4KC-KiTS, TCIA, doi:10.7937/TCIA.2019.IX49E8NX."
)
_HOW = ("Run `lesionbench download kits --out RAW` (IDC, via idc-index), put C4KC-KiTS_Clinical-Data_Version-1.csv from "
        f"{_PAGE} into RAW, then `lesionbench prepare {{name}} --raw RAW --out {{data_dir}}`.")  # fmt: skip
CLEAR_CELL = "clear_cell_rcc"


def _patients(table: pd.DataFrame) -> pd.Series:
    dup = table["patient_id"][table["patient_id"].duplicated()].tolist()
    if dup:
        raise DataPreparationError(f"C4KC-KiTS clinical table lists patient(s) {dup[:5]} more than once; use the original TCIA file.")
    return table["patient_id"].astype(str).str.strip()


def malignancy_labels(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id, label (malignant True 1, False 0, else NaN) and the reason a patient is unusable."""
    raw = table["malignant"].fillna("").astype(str).str.strip()
    label = raw.str.lower().map({"true": 1.0, "false": 0.0})
    reason = np.where(label.isna(), [f"malignant is {v!r} (True or False expected)" for v in raw], "")
    return pd.DataFrame({"patient_id": _patients(table), "label": label.astype(float), "reason": reason})


def subtype_labels(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id, label (clear_cell_rcc 1, another recorded subtype 0, empty NaN) and the reason."""
    raw = table["tumor_histologic_subtype"].fillna("").astype(str).str.strip()
    label = pd.Series(np.where(raw == "", np.nan, (raw.str.lower() == CLEAR_CELL).astype(float)), index=table.index)
    reason = np.where(label.isna(), "tumor_histologic_subtype is empty", "")
    return pd.DataFrame({"patient_id": _patients(table), "label": label, "reason": reason})


def _meta(name: str, what: str, classes: tuple[str, str], derivation: str) -> TaskMeta:
    return TaskMeta(
        name=name,
        version="1.0",
        kind=TaskKind.BINARY,
        description=f"C4KC-KiTS: {what} of the kidney tumour (SEG) on its CT; patient-grouped 5-fold protocol.",
        main_metric="auc",
        metrics=("auc", "average_precision", "balanced_accuracy"),
        class_names=classes,
        citation=_CITATION,
        licence="CC BY 3.0 (TCIA)",
        label_derivation=derivation + " StratifiedGroupKFold(5, shuffle, seed 0) by patient on the label; fold k test, fold k+1 val, rest train.",
    )


@TASKS.register("kits_malignancy")
class KitsMalignancy(BinaryCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("C4KC-KiTS", "KiTS19")
    cohort = BinaryCohortSpec(task="kits_malignancy", clinical=CLINICAL, labels=malignancy_labels, download_name="kits")
    meta = _meta("kits_malignancy", "malignancy", ("benign", "malignant"), "label = clinical 'malignant' (True 1, False 0); other values excluded.")


@TASKS.register("kits_subtype")
class KitsSubtype(BinaryCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("C4KC-KiTS", "KiTS19")
    cohort = BinaryCohortSpec(task="kits_subtype", clinical=CLINICAL, labels=subtype_labels, download_name="kits")
    meta = _meta("kits_subtype", "clear-cell RCC vs other histologic subtypes", ("other subtype", "clear cell RCC"),
                 "label = 1 if tumor_histologic_subtype == clear_cell_rcc, 0 for any other recorded subtype; empty excluded.")
