"""HCC-TACE-Seg: response to TACE (``hcc_tace_response``) and overall survival (``hcc_tace_survival``).

Data: TCIA collection HCC-TACE-Seg (MD Anderson: 105 patients with hepatocellular carcinoma treated by
transarterial chemoembolisation, with the pre-procedure multiphase CT and a DICOM SEG of liver, tumour mass,
portal vein and aorta drawn on it), in IDC as ``hcc_tace_seg``: ``lesionbench download hcc_tace --out RAW`` (the
collection's own SEGs and the CT series of their studies; the AI-derived SEGs IDC also holds are left out; the
SEG names the CT series it was drawn on, which prepare picks). It also fetches the clinical workbook
``HCC-TACE-Seg_clinical_data-V2.xlsx`` (:data:`CLINICAL`; reading .xlsx needs openpyxl, a CSV export of its
first sheet works too); then ``lesionbench prepare hcc_tace_response --raw RAW``.

Citation: Moawad AW, Morshid A, Khalaf AM, et al. Multimodality annotated hepatocellular carcinoma data set
including pre- and post-TACE with imaging segmentation. Sci Data 10 (2023), doi:10.1038/s41597-023-01928-3;
data: HCC-TACE-Seg, TCIA, doi:10.7937/TCIA.5FNA-0924.

Licence: CC BY 4.0 (TCIA; the licence the IDC index lists for every CT and SEG series of the collection).

Lesion: the tumour segment of the SEG (``Mass``; liver, portal vein and aorta are never the lesion), the largest
one if a SEG held several (:func:`lesionbench.tasks._dicom.largest_tumour_segment`), mapped onto the CT series the
SEG references; seed = its physical centroid (LPS mm), ``diameter_mm`` = equivalent-sphere diameter.

Labels, from the workbook's first sheet (``TCIA_ID`` is the patient):

* ``hcc_tace_response`` (binary): the mRECIST response the three readers recorded after TACE, ``1_mRECIST``,
  ``2_mRECIST``, ``3_mRECIST``, coded 1 CR, 2 PR, 3 SD, 4 PD (the abbreviations are accepted too). A reader's
  reading is a response when CR or PR (objective response), none when SD or PD. ``label = 1`` (responder) when at
  least two readers read a response, ``0`` when at least two read none; otherwise (fewer than two usable readings
  agreeing) the patient is excluded, saying why. Why mRECIST: it measures the viable (arterially enhancing) tumour,
  which is what embolisation kills (RECIST counts necrotic tumour as tumour; EASL has one reader in the table), and
  the majority of three readers is steadier than any one of them.
* ``hcc_tace_survival`` (survival): ``time`` = ``OS`` x 7 days, ``event`` = ``Death_1_StillAliveorLostToFU_0``
  (1 = died; 0 = alive or lost to follow-up). Scored by Harrell's C-index (main) and the 2-year AUC
  (:func:`lesionbench.benchmark.scoring.endpoints.two_year_label`).

Splits: five patient-grouped folds stratified by the label or the event (seed 0), fold ``k`` test, ``k + 1``
validation.

Not verified against the workbook itself (no copy here): the column names are those public analyses of
``HCC-TACE-Seg_clinical_data-V2.xlsx`` read; that ``OS`` counts weeks (as they convert it) is assumed, and prepare
logs the median OS in months so a wrong unit shows (TACE cohorts live a median of about 1.5 years); the workbook
address is the collection's usual upload path. HCC-TACE-Seg's multiphase CT series are reported to hold several
acquisitions (phases) at the same slice positions, with SEGs referencing slices of more than one: prepare keeps the
acquisition the SEG references most and maps the SEG onto it by position
(:func:`lesionbench.tasks.cohorts._binary.one_acquisition`); a series it still cannot read is listed in ``excluded.csv``.
TumorImagingBench does not use this cohort.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._dicom import largest_tumour_segment
from lesionbench.tasks.cohorts._binary import ClinicalWorkbook, SegCohortSpec, SegCohortTask

logger = logging.getLogger(__name__)

_PAGE = "https://www.cancerimagingarchive.net/collection/hcc-tace-seg/"
READERS: tuple[str, ...] = ("1_mRECIST", "2_mRECIST", "3_mRECIST")
#: The collection's clinical workbook (TCIA, version 2).
CLINICAL = ClinicalWorkbook(
    cohort="hcc_tace",
    filename="HCC-TACE-Seg_clinical_data-V2.xlsx",
    url="https://www.cancerimagingarchive.net/wp-content/uploads/HCC-TACE-Seg_clinical_data-V2.xlsx",
    page=_PAGE,
    glob="HCC-TACE-Seg_clinical_data*",
    columns=("TCIA_ID", *READERS, "OS", "Death_1_StillAliveorLostToFU_0"),
)
#: mRECIST categories (as coded in the workbook, or abbreviated) -> objective response (CR, PR) or not (SD, PD).
RESPONSE = {"1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0, "cr": 1.0, "pr": 1.0, "sd": 0.0, "pd": 0.0}
DAYS_PER_WEEK = 7.0
_CITATION = (
    "Moawad AW et al. Multimodality annotated hepatocellular carcinoma data set including pre- and post-TACE with imaging "
    "segmentation, Sci Data 10 (2023), doi:10.1038/s41597-023-01928-3; HCC-TACE-Seg, TCIA, doi:10.7937/TCIA.5FNA-0924."
)
_HOW = "Run `lesionbench download hcc_tace --out RAW` (IDC, via idc-index), then `lesionbench prepare {name} --raw RAW --out {data_dir}`."


def _patients(table: pd.DataFrame) -> pd.Series:
    ids = table["TCIA_ID"].astype(str).str.strip()
    dup = ids[ids.duplicated()].tolist()
    if dup:
        raise DataPreparationError(f"HCC-TACE-Seg clinical table lists patient(s) {dup[:5]} more than once; use the original TCIA file.")
    return ids


def _reading(value: object) -> float:
    text = str(value).strip().lower()
    text = text[:-2] if text.endswith(".0") else text  # a workbook's numbers read as text: "1.0"
    return RESPONSE.get(text, np.nan)


def response_labels(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id, label (1 responder, 0 not, by the majority of the three mRECIST readers; NaN without one) and the reason."""
    reads = np.array([[_reading(v) for v in table[col].fillna("")] for col in READERS]).T  # patients x readers
    yes, no = (reads == 1).sum(axis=1), (reads == 0).sum(axis=1)
    label = np.where(yes >= 2, 1.0, np.where(no >= 2, 0.0, np.nan))
    raw = table[list(READERS)].fillna("").astype(str).agg(" / ".join, axis=1)
    reason = np.where(np.isnan(label), [f"{'/'.join(READERS)} are {r!r}: no two readers agree on CR/PR (1/2) vs SD/PD (3/4)" for r in raw], "")
    return pd.DataFrame({"patient_id": _patients(table), "label": label, "reason": reason})


def survival_outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id, time (days: OS weeks x 7), event (Death_1_StillAliveorLostToFU_0) and the reason a patient is unusable."""
    weeks = pd.to_numeric(table["OS"], errors="coerce")
    event = pd.to_numeric(table["Death_1_StillAliveorLostToFU_0"], errors="coerce")
    bad_time, bad_event = ~(weeks >= 0), ~event.isin([0, 1])
    reason = np.where(bad_time, [f"OS is {v!r} (weeks >= 0 expected)" for v in table["OS"]],
                      np.where(bad_event, [f"Death_1_StillAliveorLostToFU_0 is {v!r} (0 or 1 expected)" for v in table["Death_1_StillAliveorLostToFU_0"]], ""))  # fmt: skip
    ok = ~bad_time & ~bad_event
    if ok.any():
        logger.info("HCC-TACE-Seg: median OS %.1f months (OS read as weeks)", float(weeks[ok].median()) * DAYS_PER_WEEK / (365.25 / 12))
    return pd.DataFrame({"patient_id": _patients(table), "time": (weeks * DAYS_PER_WEEK).where(ok).astype(float),
                         "event": event.where(ok).astype(float), "reason": reason})  # fmt: skip


_SPLITS = " StratifiedGroupKFold(5, shuffle, seed 0) by patient on the {what}; fold k test, fold k+1 val, rest train."


@TASKS.register("hcc_tace_response")
class HccTaceResponse(SegCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("HCC-TACE-Seg",)
    cohort = SegCohortSpec(task="hcc_tace_response", clinical=CLINICAL, labels=response_labels, download_name="hcc_tace", segment=largest_tumour_segment)
    meta = TaskMeta(
        name="hcc_tace_response",
        version="1.0",
        kind=TaskKind.BINARY,
        description="HCC-TACE-Seg: objective response to TACE (mRECIST CR/PR vs SD/PD) from the tumour SEG of the pre-procedure CT; patient-grouped 5-fold protocol.",
        main_metric="auc",
        metrics=("auc", "average_precision", "balanced_accuracy"),
        class_names=("non-responder (SD/PD)", "responder (CR/PR)"),
        citation=_CITATION,
        licence="CC BY 4.0 (TCIA)",
        label_derivation=(
            "label = 1 if at least two of 1_mRECIST, 2_mRECIST, 3_mRECIST are CR or PR (codes 1, 2), 0 if at least two are SD or PD "
            "(3, 4); otherwise excluded. Lesion: the SEG's (largest) tumour segment." + _SPLITS.format(what="label")
        ),
    )


@TASKS.register("hcc_tace_survival")
class HccTaceSurvival(SegCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("HCC-TACE-Seg",)
    cohort = SegCohortSpec(task="hcc_tace_survival", clinical=CLINICAL, labels=survival_outcomes, download_name="hcc_tace",
                           kind=TaskKind.SURVIVAL, segment=largest_tumour_segment)  # fmt: skip
    meta = TaskMeta(
        name="hcc_tace_survival",
        version="1.0",
        kind=TaskKind.SURVIVAL,
        description="HCC-TACE-Seg: overall survival after TACE from the tumour SEG of the pre-procedure CT; patient-grouped 5-fold protocol.",
        main_metric="c_index",
        metrics=("c_index", "auc_2y"),
        citation=_CITATION,
        licence="CC BY 4.0 (TCIA)",
        label_derivation=(
            "time = OS x 7 days (OS in weeks), event = Death_1_StillAliveorLostToFU_0 (1 = died); negative or empty OS, or an event "
            "other than 0/1: excluded. 2-year label = two_year_label(time, event). Lesion: the SEG's (largest) tumour segment."
            + _SPLITS.format(what="event")
        ),
    )
