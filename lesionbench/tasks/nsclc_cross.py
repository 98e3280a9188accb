"""Cross-cohort NSCLC survival protocols: train on one public cohort, test on the other.

The published FMCIB survival model was trained on a private cohort (HarvardRT) and tested on
LUNG1 and RADIO, which cannot be reproduced. These two named public protocols replace it:

* ``lung1_to_radio``: train and validate on LUNG1 (NSCLC-Radiomics; fold 0 of its patient-grouped
  5-fold assignment is validation, the other folds training), test on every RADIO patient;
* ``radio_to_lung1``: the reverse.

Both read the prepared cohorts ``$LESIONBENCH_DATA/lung1_survival`` and
``$LESIONBENCH_DATA/radio_survival`` (prepare those first; these tasks have no data of their own).
Citation, licences and label derivation: those of :mod:`lesionbench.tasks.lung1` (CC BY-NC 3.0)
and :mod:`lesionbench.tasks.radio` (CC BY 3.0); results inherit the more restrictive terms.
Labels: ``time``/``event`` and the 2-year endpoint
:func:`lesionbench.benchmark.scoring.endpoints.two_year_label`; option ``label_variant="fmcib"`` uses the
published binary labels instead (LUNG1: ``Survival.time >= 730``; RADIO: vital status), which
mean different things in the two cohorts; use it only to compare with published numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, ManifestError
from lesionbench.benchmark.data.manifest import read_manifest
from lesionbench.benchmark.paths import data_root
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._nsclc import _folds, finish_manifest, variant_meta
from lesionbench.tasks.lung1 import Lung1Survival
from lesionbench.tasks.radio import RadioSurvival

#: The source cohort's fold that is the validation set.
VAL_FOLD = 0


class CrossCohortTask:
    """Train/val on ``source`` cohort, test on ``target`` cohort. Options: ``source_dir``, ``target_dir``, ``label_variant``."""

    #: Both cohorts (the leaderboard marks encoders pre-trained on either).
    data_sources = ("NSCLC-Radiomics", "NSCLC-Radiogenomics")
    meta: TaskMeta
    source: type
    target: type

    def __init__(self, source_dir: str | Path | None = None, target_dir: str | Path | None = None, *, label_variant: str | None = None):
        self.source_dir = Path(source_dir) if source_dir is not None else data_root() / self.source.meta.name
        self.target_dir = Path(target_dir) if target_dir is not None else data_root() / self.target.meta.name
        self.label_variant = label_variant or "survival"
        self.meta = variant_meta(type(self).meta, label_variant=label_variant, fold=None)

    def _read(self, task: type, folder: Path) -> pd.DataFrame:
        path = folder / "manifest.csv"
        if not path.is_file():
            raise ManifestError(
                str(path),
                [f"{self.meta.name} combines two prepared cohorts and {task.meta.name} is not prepared there. "
                 f"Run `lesionbench prepare {task.meta.name} --raw RAW --out {folder}` first."],
            )
        return read_manifest(path)

    def manifest(self) -> pd.DataFrame:
        src = self._read(self.source, self.source_dir)
        tgt = self._read(self.target, self.target_dir)
        src_split = np.where(_folds(src, self.source_dir) == VAL_FOLD, "val", "train")
        tgt_split = np.full(len(tgt), "test", dtype=object)
        df = pd.concat([src, tgt], ignore_index=True)
        split = np.concatenate([src_split, tgt_split])
        return finish_manifest(df, self.meta, self.label_variant, split=split, source=f"{self.meta.name} ({self.source_dir} + {self.target_dir})")

    @classmethod
    def prepare(cls, raw=None, out=None, **options) -> Path:
        raise ConfigurationError(
            f"{cls.meta.name} has no raw data of its own: prepare {cls.source.meta.name} and {cls.target.meta.name} "
            f"(`lesionbench prepare {cls.source.meta.name} --raw RAW` and `lesionbench prepare {cls.target.meta.name} --raw RAW`)."
        )


def _meta(name: str, source: type, target: type) -> TaskMeta:
    return TaskMeta(
        name=name,
        version="1.0",
        kind=TaskKind.SURVIVAL,
        description=f"NSCLC overall survival: train/val on {source.meta.name}, test on {target.meta.name} (public cross-cohort protocol).",
        main_metric="auc_2y",
        metrics=("auc_2y", "c_index"),
        citation=f"{source.meta.citation} {target.meta.citation}",
        licence=f"{source.meta.name}: {source.meta.licence}; {target.meta.name}: {target.meta.licence}",
        label_derivation=(
            f"As {source.meta.name} and {target.meta.name} (time, event; 2-year label = two_year_label). "
            f"Source fold {VAL_FOLD} (StratifiedGroupKFold(5, seed 0) by patient, stratified by event) is validation, "
            "the other source folds training; every target patient is test."
        ),
    )


@TASKS.register("lung1_to_radio")
class Lung1ToRadio(CrossCohortTask):
    __doc__ = __doc__
    source, target = Lung1Survival, RadioSurvival
    meta = _meta("lung1_to_radio", Lung1Survival, RadioSurvival)


@TASKS.register("radio_to_lung1")
class RadioToLung1(CrossCohortTask):
    __doc__ = __doc__
    source, target = RadioSurvival, Lung1Survival
    meta = _meta("radio_to_lung1", RadioSurvival, Lung1Survival)
