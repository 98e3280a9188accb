"""Colorectal-Liver-Metastases: overall survival (``crlm_survival``) and disease-free survival (``crlm_dfs``).

Data: TCIA collection Colorectal-Liver-Metastases (Memorial Sloan Kettering: 197 patients who had their
colorectal liver metastases resected, each with the pre-operative contrast-enhanced CT and a DICOM SEG of liver,
future liver remnant, hepatic and portal veins and one segment per tumour), in IDC as
``colorectal_liver_metastases``: ``lesionbench download crlm --out RAW`` (the collection's own SEGs and the CT
series of their studies; the AI-derived SEGs IDC also holds are left out; the SEG names the CT it was drawn on,
which prepare picks). The clinical workbook ``Colorectal-Liver-Metastases-Clinical-data-April-2023.xlsx`` is
not in IDC: download it from the collection page (:data:`CLINICAL`) into RAW, or pass ``--clinical FILE``
(.xlsx needs openpyxl; a CSV export of its sheet works too); then ``lesionbench prepare crlm_survival --raw RAW``.

Citation: Simpson AL, Peoples J, Creasy JM, et al. Preoperative CT and survival data for patients undergoing
resection of colorectal liver metastases. Sci Data 11 (2024), doi:10.1038/s41597-024-02981-2; data:
Colorectal-Liver-Metastases, TCIA, doi:10.7937/QXK2-QG03.

Licence: CC BY 4.0 (TCIA; the licence the IDC index lists for every CT and SEG series of the collection).

Lesion: the largest tumour of the SEG (:func:`lesionbench.tasks._dicom.largest_tumour_segment`: among the
segments whose label names a tumour, ``Tumor_1``, ``Tumor_2`` ..., the one with most voxels; liver, remnant and
vessel segments are never the lesion). Why the largest: a patient has one survival label but up to many
metastases, the largest carries most of the tumour burden and is the most reliably segmented, and it is
TumorImagingBench's rule. Seed = the segment's physical centroid (LPS mm), ``diameter_mm`` = equivalent-sphere
diameter. One lesion per patient.

Labels, from the workbook's first sheet (``Patient-ID`` is the patient; column names as TumorImagingBench's
``data/eval/colorectal_liver_metastases`` notebook lists them; months are converted to days at 365.25 / 12 days a
month; the table codes missing values as ``-999``, so a negative or empty time and an event other than 0/1 exclude
the patient, saying why):

* ``crlm_survival``: ``time`` = ``overall_survival_months`` in days, ``event`` = ``vital_status`` (1 = died);
* ``crlm_dfs``: ``time`` = ``months_to_DFS_progression`` in days, ``event`` = ``vital_status_DFS``
  (the table's DFS event: 1 = recurrence or progression, or death; 0 = censored).

Both are survival tasks scored by Harrell's C-index (main) and the 2-year AUC
(:func:`lesionbench.benchmark.scoring.endpoints.two_year_label`: event on or before day 730 = 1, followed to day 730
= 0, censored earlier = excluded from that AUC). Two tasks rather than an endpoint option: each endpoint is its
own leaderboard row and ``lesionbench tasks list`` entry, as ``kits_malignancy`` / ``kits_subtype`` are for one download.
Splits: five patient-grouped folds stratified by the event (seed 0), fold ``k`` test, ``k + 1`` validation.

TumorImagingBench: includes every patient with a converted image, a tumour mask and a clinical row (as here:
all 197 when the download is complete); seeds at the centroid of the largest connected component of the largest
tumour mask (lesionbench: the whole largest tumour segment; a ``Tumor_N`` segment is one metastasis, so the two
agree unless a segment holds separate islands); scores only overall survival, as a 2-year label
(``overall_survival_months >= 24`` survivor, death before 24 months non-survivor, censored earlier excluded: the
same labels as ``label_2y`` except for a time in the half day between day 730 and 24 months), with a k-NN probe.
lesionbench adds the C-index on all patients, DFS, and seeded patient-grouped folds; numbers compare in kind.
Not verified (no copy of the workbook here): whether a survival column holds the ``-999`` code TIB's notebook shows in
other columns; either way a negative or empty time excludes the patient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._dicom import largest_tumour_segment
from lesionbench.tasks.cohorts._binary import ClinicalWorkbook, SegCohortSpec, SegCohortTask

_PAGE = "https://www.cancerimagingarchive.net/collection/colorectal-liver-metastases/"
#: The collection's clinical workbook (TCIA, April 2023).
CLINICAL = ClinicalWorkbook(
    cohort="crlm",
    filename="Colorectal-Liver-Metastases-Clinical-data-April-2023.xlsx",
    url=_PAGE,
    page=_PAGE,
    glob="Colorectal-Liver-Metastases-Clinical-data*",
    columns=("Patient-ID", "overall_survival_months", "vital_status", "months_to_DFS_progression", "vital_status_DFS"),
)
#: Days in a month: the mean Gregorian month.
DAYS_PER_MONTH = 365.25 / 12
#: The endpoint of each task: (time column in months, event column).
ENDPOINTS: dict[str, tuple[str, str]] = {
    "os": ("overall_survival_months", "vital_status"),
    "dfs": ("months_to_DFS_progression", "vital_status_DFS"),
}
_CITATION = (
    "Simpson AL et al. Preoperative CT and survival data for patients undergoing resection of colorectal liver metastases, "
    "Sci Data 11 (2024), doi:10.1038/s41597-024-02981-2; Colorectal-Liver-Metastases, TCIA, doi:10.7937/QXK2-QG03."
)
_HOW = ("Run `lesionbench download crlm --out RAW` (IDC, via idc-index), put Colorectal-Liver-Metastases-Clinical-data-April-2023.xlsx "
        f"from {_PAGE} into RAW, then `lesionbench prepare {{name}} --raw RAW --out {{data_dir}}`.")  # fmt: skip


def crlm_outcomes(table: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """patient_id, time (days), event and the reason a patient is unusable, for endpoint ``os`` or ``dfs``."""
    if endpoint not in ENDPOINTS:
        raise DataPreparationError(f"Unknown CRLM endpoint {endpoint!r}; use one of {list(ENDPOINTS)}.")
    ids = table["Patient-ID"].astype(str).str.strip()
    dup = ids[ids.duplicated()].tolist()
    if dup:
        raise DataPreparationError(f"Colorectal-Liver-Metastases clinical table lists patient(s) {dup[:5]} more than once; use the original TCIA file.")
    time_col, event_col = ENDPOINTS[endpoint]
    months = pd.to_numeric(table[time_col], errors="coerce")
    event = pd.to_numeric(table[event_col], errors="coerce")
    bad_time, bad_event = ~(months >= 0), ~event.isin([0, 1])
    reason = np.where(bad_time, [f"{time_col} is {v!r} (months >= 0 expected; -999 means missing)" for v in table[time_col]],
                      np.where(bad_event, [f"{event_col} is {v!r} (0 or 1 expected)" for v in table[event_col]], ""))  # fmt: skip
    return pd.DataFrame({
        "patient_id": ids,
        "time": (months * DAYS_PER_MONTH).where(~bad_time & ~bad_event).astype(float),
        "event": event.where(~bad_time & ~bad_event).astype(float),
        "reason": reason,
    })  # fmt: skip


def _meta(name: str, what: str, derivation: str) -> TaskMeta:
    return TaskMeta(
        name=name,
        version="1.0",
        kind=TaskKind.SURVIVAL,
        description=f"Colorectal-Liver-Metastases: {what} after resection, from the largest metastasis (SEG) on the pre-operative CT; patient-grouped 5-fold protocol.",
        main_metric="c_index",
        metrics=("c_index", "auc_2y"),
        citation=_CITATION,
        licence="CC BY 4.0 (TCIA)",
        label_derivation=derivation + (
            " (months x 365.25/12 = days; negative (-999) or empty time, or an event other than 0/1: excluded). Lesion: the SEG's "
            "largest tumour segment. 2-year label = two_year_label(time, event). StratifiedGroupKFold(5, shuffle, seed 0) by "
            "patient on the event; fold k test, fold k+1 val, rest train."
        ),
    )


@TASKS.register("crlm_survival")
class CrlmSurvival(SegCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("Colorectal-Liver-Metastases",)
    cohort = SegCohortSpec(task="crlm_survival", clinical=CLINICAL, labels=lambda t: crlm_outcomes(t, "os"), download_name="crlm",
                           kind=TaskKind.SURVIVAL, segment=largest_tumour_segment)  # fmt: skip
    meta = _meta("crlm_survival", "overall survival", "time = overall_survival_months in days, event = vital_status (1 = died)")


@TASKS.register("crlm_dfs")
class CrlmDfs(SegCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("Colorectal-Liver-Metastases",)
    cohort = SegCohortSpec(task="crlm_dfs", clinical=CLINICAL, labels=lambda t: crlm_outcomes(t, "dfs"), download_name="crlm",
                           kind=TaskKind.SURVIVAL, segment=largest_tumour_segment)  # fmt: skip
    meta = _meta("crlm_dfs", "disease-free survival", "time = months_to_DFS_progression in days, event = vital_status_DFS (1 = recurrence, progression or death)")
