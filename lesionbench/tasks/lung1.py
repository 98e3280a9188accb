"""LUNG1 (NSCLC-Radiomics): 2-year overall survival of 422 NSCLC patients treated with radiotherapy.

Data: TCIA collection NSCLC-Radiomics (Maastro), in IDC as ``nsclc_radiomics``: one planning CT and
one RTSTRUCT per patient. Get it with ``lesionbench download lung1 --out RAW`` and the clinical table
``NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv`` (:data:`CLINICAL`); then
``lesionbench prepare lung1_survival --raw RAW``.

Citation: Aerts HJWL, Wee L, Rios Velazquez E, et al. Data from NSCLC-Radiomics (version 4). The
Cancer Imaging Archive, 2019. doi:10.7937/K9/TCIA.2015.PF0M9REI; and Aerts HJWL et al., Decoding
tumour phenotype by noninvasive imaging using a quantitative radiomics approach, Nat Commun 5:4006
(2014). Used as a test cohort by Pai et al., Nat Mach Intell 2024 (FMCIB).

Licence: CC BY-NC 3.0 (TCIA; the licence the IDC index lists for the CT and RTSTRUCT series).

Labels: ``time`` = ``Survival.time`` (days), ``event`` = ``deadstatus.event`` (1 = death observed).
The 2-year endpoint is :func:`lesionbench.benchmark.scoring.endpoints.two_year_label` (death at or before
730 d = 1, followed to 730 d or beyond = 0, censored before 730 d = unknown and excluded from the
2-year AUC); the C-index uses all patients. Lesion: the ROI ``GTV-1`` of the RTSTRUCT rasterised on
the CT; seed = the mask's physical centroid (LPS mm), ``diameter_mm`` = equivalent-sphere diameter.
Label variant ``fmcib``: the published ``survival`` label, ``Survival.time >= 730`` (1 = survivor),
which ignores censoring: a patient censored before 730 d is a non-survivor there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lesionbench.benchmark.scoring.endpoints import TWO_YEARS_DAYS
from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._nsclc import ClinicalTable, CohortSpec, NsclcSurvivalTask, _numbers

#: The clinical table of NSCLC-Radiomics (TCIA, version 3, October 2019).
CLINICAL = ClinicalTable(
    cohort="lung1",
    filename="NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv",
    url="https://www.cancerimagingarchive.net/wp-content/uploads/NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv",
    page="https://www.cancerimagingarchive.net/collection/nsclc-radiomics/",
    glob="NSCLC-Radiomics-Lung1.clinical*.csv",
    columns=("PatientID", "Survival.time", "deadstatus.event"),
)


def lung1_outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id, time (days), event, label_fmcib (``Survival.time >= 730``) from the LUNG1 clinical table.

    Rows whose time or event is missing or invalid keep NaN there (prepare excludes them and says why).
    """
    dup = table["PatientID"][table["PatientID"].duplicated()].tolist()
    if dup:
        raise DataPreparationError(f"LUNG1 clinical table lists patient(s) {dup[:5]} more than once; use the original TCIA file.")
    time = _numbers(table, "Survival.time")
    event = _numbers(table, "deadstatus.event")
    time = time.where(time >= 0)
    event = event.where(event.isin([0, 1]))
    return pd.DataFrame(
        {
            "patient_id": table["PatientID"].astype(str).str.strip(),
            "time": time.astype(float),
            "event": event.astype(float),
            # the published rule, censoring-blind on purpose
            "label_fmcib": np.where(time.notna(), (time >= TWO_YEARS_DAYS).astype(float), np.nan),
        }
    )


@TASKS.register("lung1_survival")
class Lung1Survival(NsclcSurvivalTask):
    __doc__ = __doc__
    data_sources = ("NSCLC-Radiomics",)
    cohort = CohortSpec(
        task="lung1_survival",
        contour_modality="RTSTRUCT",
        roi_name="GTV-1",
        clinical=CLINICAL,
        outcomes=lung1_outcomes,
        download_name="lung1",
    )
    meta = TaskMeta(
        name="lung1_survival",
        version="1.0",
        kind=TaskKind.SURVIVAL,
        description="NSCLC-Radiomics (LUNG1): overall survival from the GTV-1 of the planning CT; patient-grouped 5-fold protocol.",
        main_metric="auc_2y",
        metrics=("auc_2y", "c_index"),
        citation="Aerts HJWL et al. Data from NSCLC-Radiomics, TCIA 2019, doi:10.7937/K9/TCIA.2015.PF0M9REI; Aerts et al., Nat Commun 5:4006 (2014).",
        licence="CC BY-NC 3.0 (TCIA)",
        label_derivation=(
            "time = Survival.time (days), event = deadstatus.event; 2-year label = two_year_label(time, event) "
            "(death <= 730 d: 1; alive at 730 d: 0; censored before 730 d: excluded from auc_2y). fmcib variant: "
            "label = Survival.time >= 730 (censoring ignored). Splits: StratifiedGroupKFold(5, shuffle, seed 0) by "
            "patient, stratified by event; fold k test, fold k+1 val, rest train."
        ),
    )
