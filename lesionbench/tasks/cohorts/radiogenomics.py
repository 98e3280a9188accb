"""NSCLC-Radiogenomics mutation status: EGFR (``radiogenomics_egfr``) and KRAS (``radiogenomics_kras``).

Data: TCIA collection NSCLC Radiogenomics, in IDC as ``nsclc_radiogenomics`` (211 patients; the 144
``R01-*`` patients have a DICOM SEG of the tumour on a pre-operative CT): the same download as
``radio_survival``, ``lesionbench download radio --out RAW``, which also fetches the clinical table
``NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv`` (:data:`lesionbench.tasks.radio.CLINICAL`);
then ``lesionbench prepare radiogenomics_egfr --raw RAW``.

Citation: Bakr S, Gevaert O, Echegaray S, et al. A radiogenomic dataset of non-small cell lung cancer,
Sci Data 5:180202 (2018), doi:10.1038/sdata.2018.202; the collection, doi:10.7937/K9/TCIA.2017.7hs46erv.

Licence: CC BY 3.0 (TCIA; the licence the IDC index lists for the CT and SEG series).

Labels (one lesion per patient: the SEG's tumour segment, seed at its physical centroid, as in
``radio_survival``): ``label = 1`` when the clinical table's ``EGFR mutation status`` (``KRAS mutation
status`` for KRAS) is ``Mutant``, ``0`` when ``Wildtype``; ``Unknown``, ``Not collected``, empty or any
other value excludes the patient (``excluded.csv`` names the value). Splits: five patient-grouped folds
stratified by the label (seed 0), fold ``k`` test, ``k + 1`` validation (:mod:`._binary`).

TumorImagingBench: its NSCLC-Radiogenomics split (``data/eval/nsclc_radiogenomics/make_split.ipynb``) is an
unseeded ``train_test_split`` of lesion rows, not reproducible; lesionbench uses the seeded, patient-grouped
folds instead and the collection's own mutation columns, so its numbers compare with TIB's only in kind.
Pre-training overlap: NSCLC-Radiogenomics (declared by each encoder's card; FMCIB's is DeepLesion).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks.cohorts._binary import BinaryCohortSpec, BinaryCohortTask
from lesionbench.tasks.radio import CLINICAL as RADIO_CLINICAL

_CITATION = (
    "Bakr S et al. A radiogenomic dataset of non-small cell lung cancer, Sci Data 5:180202 (2018), doi:10.1038/sdata.2018.202; "
    "NSCLC Radiogenomics collection, TCIA, doi:10.7937/K9/TCIA.2017.7hs46erv."
)
_HOW = "Run `lesionbench download radio --out RAW` (IDC, via idc-index), then `lesionbench prepare {name} --raw RAW --out {data_dir}`."
VALUES = {"mutant": 1.0, "wildtype": 0.0}


def mutation_labels(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """patient_id, label (Mutant 1, Wildtype 0, else NaN) and the reason a patient is unusable."""
    dup = table["Case ID"][table["Case ID"].duplicated()].tolist()
    if dup:
        raise DataPreparationError(f"NSCLC-Radiogenomics clinical table lists patient(s) {dup[:5]} more than once; use the original TCIA file.")
    raw = table[column].fillna("").astype(str).str.strip()
    label = raw.str.lower().map(VALUES)
    reason = np.where(label.isna(), [f"{column} is {v!r} (only Mutant and Wildtype are labels)" for v in raw], "")
    return pd.DataFrame({"patient_id": table["Case ID"].astype(str).str.strip(), "label": label.astype(float), "reason": reason})


def _meta(gene: str) -> TaskMeta:
    return TaskMeta(
        name=f"radiogenomics_{gene.lower()}",
        version="1.0",
        kind=TaskKind.BINARY,
        description=f"NSCLC-Radiogenomics: {gene} mutation status (mutant vs wild type) from the tumour SEG of the pre-operative CT; patient-grouped 5-fold protocol.",
        main_metric="auc",
        metrics=("auc", "average_precision", "balanced_accuracy"),
        class_names=("wild type", "mutant"),
        citation=_CITATION,
        licence="CC BY 3.0 (TCIA)",
        label_derivation=(
            f"label = 1 if '{gene} mutation status' == Mutant, 0 if Wildtype; Unknown / Not collected / empty: excluded. "
            "StratifiedGroupKFold(5, shuffle, seed 0) by patient on the label; fold k test, fold k+1 val, rest train."
        ),
    )


@TASKS.register("radiogenomics_egfr")
class RadiogenomicsEgfr(BinaryCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("NSCLC-Radiogenomics",)
    cohort = BinaryCohortSpec(
        task="radiogenomics_egfr",
        clinical=replace(RADIO_CLINICAL, columns=("Case ID", "EGFR mutation status")),
        labels=lambda t: mutation_labels(t, "EGFR mutation status"),
        download_name="radio",
    )
    meta = _meta("EGFR")


@TASKS.register("radiogenomics_kras")
class RadiogenomicsKras(BinaryCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("NSCLC-Radiogenomics",)
    cohort = BinaryCohortSpec(
        task="radiogenomics_kras",
        clinical=replace(RADIO_CLINICAL, columns=("Case ID", "KRAS mutation status")),
        labels=lambda t: mutation_labels(t, "KRAS mutation status"),
        download_name="radio",
    )
    meta = _meta("KRAS")
