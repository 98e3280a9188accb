"""RADIO (NSCLC-Radiogenomics): 2-year overall survival of surgically treated NSCLC patients.

Data: TCIA collection NSCLC Radiogenomics (Stanford / Palo Alto VA), in IDC as
``nsclc_radiogenomics``: 211 patients; the 144 ``R01-*`` patients have a DICOM SEG of the tumour
drawn on a pre-operative CT. Get them with ``lesionbench download radio --out RAW`` and the clinical
table ``NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv`` (:data:`CLINICAL`); then
``lesionbench prepare radio_survival --raw RAW``.

Citation: Bakr S, Gevaert O, Echegaray S, et al. Data for NSCLC Radiogenomics collection. The
Cancer Imaging Archive, 2017. doi:10.7937/K9/TCIA.2017.7hs46erv; and Bakr S et al., A radiogenomic
dataset of non-small cell lung cancer, Sci Data 5:180202 (2018). Used as a test cohort by Pai et
al., Nat Mach Intell 2024 (FMCIB).

Licence: CC BY 3.0 (TCIA; the licence the IDC index lists for the CT and SEG series).

Labels: ``event`` = ``Survival Status`` is Dead; ``time`` = ``Date of Last Known Alive`` minus
``CT Date`` in days, for the dead and the living. Why not ``Date of Death``: in the date-shifted
TCIA table it is inconsistent with ``Date of Last Known Alive`` for 15 of the 51 deaths, whereas
``Time to Death (days)`` + ``Days between CT and surgery`` equals ``Date of Last Known Alive`` -
``CT Date`` for 50 of them; this is also the published ``Survival.time``. The 2-year endpoint is
:func:`lesionbench.benchmark.scoring.endpoints.two_year_label`. Lesion: the tumour segment of the SEG mapped
onto its CT (the SEG's one segment, whatever its label says); seed = the mask's physical centroid
(LPS mm), ``diameter_mm`` = equivalent-sphere diameter.
Label variant ``fmcib``: the published ``survival`` column, which is the vital status at last
follow-up (Alive = 1), not survival past 730 days.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._nsclc import ClinicalTable, CohortSpec, NsclcSurvivalTask

logger = logging.getLogger(__name__)

#: The clinical table of NSCLC Radiogenomics (TCIA, 2018-05-22, date-shifted).
CLINICAL = ClinicalTable(
    cohort="radio",
    filename="NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv",
    url="https://www.cancerimagingarchive.net/wp-content/uploads/NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv",
    page="https://www.cancerimagingarchive.net/collection/nsclc-radiogenomics/",
    glob="NSCLCR01Radiogenomic_DATA_LABELS*.csv",
    columns=("Case ID", "Survival Status", "Date of Last Known Alive", "CT Date"),
)
DATE_FORMAT = "%m/%d/%Y"


def radio_outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id, time (days), event, label_fmcib (vital status Alive) from the RADIO clinical table.

    Unparseable dates, unknown vital status or a last-known-alive date before the CT leave NaN
    (prepare excludes those patients and says why).
    """
    dup = table["Case ID"][table["Case ID"].duplicated()].tolist()
    if dup:
        raise DataPreparationError(f"RADIO clinical table lists patient(s) {dup[:5]} more than once; use the original TCIA file.")
    status = table["Survival Status"].str.strip().str.lower()
    event = status.map({"dead": 1.0, "alive": 0.0})
    ct = pd.to_datetime(table["CT Date"], format=DATE_FORMAT, errors="coerce")
    last = pd.to_datetime(table["Date of Last Known Alive"], format=DATE_FORMAT, errors="coerce")
    time = (last - ct).dt.days.astype(float)
    time = time.where(time >= 0)
    if "Date of Death" in table.columns:
        death = pd.to_datetime(table["Date of Death"], format=DATE_FORMAT, errors="coerce")
        off = (event == 1) & death.notna() & (death != last)
        if off.any():
            logger.info(
                "RADIO: Date of Death differs from Date of Last Known Alive for %d of %d deaths (date shifting); "
                "time uses Date of Last Known Alive, consistent with Time to Death (days).",
                int(off.sum()), int((event == 1).sum()),
            )
    return pd.DataFrame(
        {
            "patient_id": table["Case ID"].astype(str).str.strip(),
            "time": time,
            "event": event,
            "label_fmcib": np.where(event.notna(), (event == 0).astype(float), np.nan),
        }
    )


@TASKS.register("radio_survival")
class RadioSurvival(NsclcSurvivalTask):
    __doc__ = __doc__
    data_sources = ("NSCLC-Radiogenomics",)
    cohort = CohortSpec(
        task="radio_survival",
        contour_modality="SEG",
        roi_name="",
        clinical=CLINICAL,
        outcomes=radio_outcomes,
        download_name="radio",
    )
    meta = TaskMeta(
        name="radio_survival",
        version="1.0",
        kind=TaskKind.SURVIVAL,
        description="NSCLC-Radiogenomics (RADIO): overall survival from the tumour SEG of the pre-operative CT; patient-grouped 5-fold protocol.",
        main_metric="auc_2y",
        metrics=("auc_2y", "c_index"),
        citation="Bakr S et al. Data for NSCLC Radiogenomics collection, TCIA 2017, doi:10.7937/K9/TCIA.2017.7hs46erv; Bakr et al., Sci Data 5:180202 (2018).",
        licence="CC BY 3.0 (TCIA)",
        label_derivation=(
            "event = Survival Status == Dead; time = Date of Last Known Alive - CT Date (days); 2-year label = "
            "two_year_label(time, event) (death <= 730 d: 1; alive at 730 d: 0; censored before 730 d: excluded from auc_2y). "
            "fmcib variant: label = Survival Status == Alive (vital status at last follow-up). Splits: "
            "StratifiedGroupKFold(5, shuffle, seed 0) by patient, stratified by event; fold k test, fold k+1 val, rest train."
        ),
    )
