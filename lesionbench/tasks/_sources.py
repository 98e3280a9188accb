"""Which datasets share images, and does an encoder's pre-training data overlap a task's data? One alias table.

Model cards and tasks name datasets differently: a card says "LUNA16" where a task says "LIDC-IDRI",
"MSD Task06 Lung" where a task says "NSCLC-Radiogenomics", "Imaging Data Commons" for a pool of TCIA
collections. Every name, on either side, is normalised here (:func:`related`) before they are compared:

- **spelling**: case, spaces, underscores and hyphens do not matter, nor a leading "TCIA" ("TCIA
  NSCLC-Radiomics" is NSCLC-Radiomics);
- **aliases** (:data:`ALIASES`): a name stands for every dataset whose images it shares. LUNA16's 888 scans
  are LIDC-IDRI scans; the Medical Segmentation Decathlon's lung task is NSCLC-Radiogenomics (Stanford) and its
  liver task LiTS; KiTS19's cases are TCIA's C4KC-KiTS, and KiTS21/KiTS23 contain them;
- **collections** (:data:`COLLECTIONS`): a pre-training pool made of other datasets, with the datasets
  it is known to hold, those it is known not to hold, and whether that list is complete.

:func:`overlap` answers "yes" when a declared pre-training set shares a dataset with the task's
``data_sources``, "no" when it shares none and every collection among the declared sets is known not to
hold the task's data, and "unknown" otherwise: a collection whose members are not enumerated in the sources
read, or an encoder (or task) that declares nothing, is never read as "no". Being pre-trained on a pool
that holds the task's collection counts as overlapping even when the pool was filtered (CT-FM chose 69 of
the Imaging Data Commons' cohorts and does not list them per collection): the mark errs toward "overlap".

A task declares its datasets once (class attribute ``data_sources``), an encoder once (its card's
``pretraining_sets``, :func:`lesionbench.baselines.zoo.catalog.pretraining_sets`); a new spelling or pool is
one line here. The leaderboard's benchmark-level table (:mod:`lesionbench.leaderboard.aggregate`) shows the marks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: Name (any spelling) -> the datasets whose images it shares (names as tasks' ``data_sources`` spell them).
ALIASES: dict[str, tuple[str, ...]] = {
    "LUNA16": ("LUNA16", "LIDC-IDRI"),  # LUNA16's scans are LIDC-IDRI scans (slice thickness <= 2.5 mm)
    "LIDC": ("LIDC-IDRI",),
    "LUNG1": ("NSCLC-Radiomics",),  # FMCIB's and TIB's name of the cohort
    "RADIO": ("NSCLC-Radiogenomics",),
    "MSD Task06 Lung": ("NSCLC-Radiogenomics",),  # the Decathlon's lung tumours: Stanford's NSCLC-Radiogenomics
    "Task06_Lung": ("NSCLC-Radiogenomics",),
    "MSD Lung": ("NSCLC-Radiogenomics",),
    "MSD Task03 Liver": ("LiTS",),  # the Decathlon's liver task is LiTS
    "Task03_Liver": ("LiTS",),
    "MSD Liver": ("LiTS",),
    "KiTS19": ("KiTS19", "C4KC-KiTS"),  # TCIA's C4KC-KiTS holds KiTS19's cases
    "C4KC-KiTS": ("C4KC-KiTS", "KiTS19"),
    "KiTS21": ("KiTS21", "KiTS19", "C4KC-KiTS"),  # later editions keep KiTS19's cases
    "KiTS23": ("KiTS23", "KiTS21", "KiTS19", "C4KC-KiTS"),
    "CRLM": ("Colorectal-Liver-Metastases",),
    "MSD": ("Medical Segmentation Decathlon",),
    "IDC": ("Imaging Data Commons",),
    "NCI Imaging Data Commons": ("Imaging Data Commons",),
}

#: TCIA collections among the tasks' data (all of them mirrored by the NCI Imaging Data Commons).
TCIA_COLLECTIONS = ("LIDC-IDRI", "NSCLC-Radiomics", "NSCLC-Radiogenomics", "C4KC-KiTS", "Colorectal-Liver-Metastases", "HCC-TACE-Seg")
#: Task datasets hosted outside TCIA/IDC (NIH box, grand-challenge, Zenodo, generated here).
NOT_TCIA = ("DeepLesion", "LNDb", "lesionbench-synthetic")


@dataclass(frozen=True)
class Collection:
    """A pre-training pool built from other datasets: which it ``holds`` and ``lacks`` (names any spelling);
    ``complete``: ``holds`` lists all of it, so any other dataset is not in it."""

    holds: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    complete: bool = False
    source: str = ""


#: Pre-training pools named by the shipped encoders' cards (the keys as the cards spell them).
COLLECTIONS: dict[str, Collection] = {
    "Imaging Data Commons": Collection(TCIA_COLLECTIONS, NOT_TCIA, source="IDC mirrors TCIA's public collections; CT-FM's 69 cohorts are not listed per collection"),
    "TCIA": Collection(TCIA_COLLECTIONS, NOT_TCIA, source="The Cancer Imaging Archive"),
    "Medical Segmentation Decathlon": Collection(("MSD Task06 Lung", "MSD Task03 Liver"), ("DeepLesion", "LIDC-IDRI", "NSCLC-Radiomics", "lesionbench-synthetic"),
                                                 source="10 tasks; lung = NSCLC-Radiogenomics, liver = LiTS, the rest single-centre sets"),  # fmt: skip
    "PreCT-160K": Collection(("LUNA16",), ("lesionbench-synthetic",), source="VoCo: pools 1.6k (BTCV, TCIA Covid19, LUNA16) and further public CT; members not enumerated here"),
    "AbdomenAtlas 1.1": Collection((), ("lesionbench-synthetic",), source="SuPreM: 2,100 abdominal CTs assembled from public sets; members not enumerated here"),
    "VISTA3D training set": Collection((), ("lesionbench-synthetic",), source="11,454 public CT volumes; members not enumerated here"),
    "MedicalNet 23 datasets": Collection((), ("lesionbench-synthetic",), source="23 public CT and MR segmentation sets; members not enumerated here"),
    "SA-Med3D-140K": Collection((), ("lesionbench-synthetic",), source="70 public datasets and 8K private cases; members not enumerated here"),
    "PASTA-Gen-30K": Collection((), ("lesionbench-synthetic",), source="synthetic lesions in CT volumes whose origin the card does not list"),
    "SPECTRE pre-training set": Collection((), ("lesionbench-synthetic",), source="open abdominal and thoracic CT with reports; members not enumerated here"),
}


def normal(name: str) -> str:
    """A dataset name's spelling-free key: case, separators and a leading "TCIA" ignored."""
    key = re.sub(r"[\s_\-:/]+", "-", str(name).strip().casefold()).strip("-")
    return key[5:] if key.startswith("tcia-") and len(key) > 5 else key


_ALIASES = {normal(k): tuple(normal(v) for v in vs) for k, vs in ALIASES.items()}
_COLLECTIONS = {normal(k): c for k, c in COLLECTIONS.items()}


def related(name: str) -> frozenset[str]:
    """The normalised names of every dataset sharing images with ``name`` (itself included)."""
    key = normal(name)
    return frozenset((key, *_ALIASES.get(key, ())))


def _related_all(names: Iterable[str]) -> frozenset[str]:
    return frozenset(k for n in names for k in related(n))


def overlap(pretraining: Iterable[str] | None, sources: Iterable[str] | None) -> str:
    """"yes", "no" or "unknown" for an encoder's declared pre-training sets against a task's ``data_sources``
    (module docstring); None on either side (undeclared) is "unknown"."""
    if pretraining is None or sources is None:
        return "unknown"
    task = _related_all(sources)
    settled = True
    for name in pretraining:
        key = normal(name)
        pool = _COLLECTIONS.get(next((k for k in related(key) if k in _COLLECTIONS), ""))
        if pool is None:
            if related(key) & task:
                return "yes"
            continue
        if _related_all(pool.holds) & task:
            return "yes"
        # a pool not known to lack any of the task's datasets leaves the answer open
        settled &= pool.complete or bool(_related_all(pool.lacks) & task)
    return "no" if settled else "unknown"


def task_sources(name: str) -> tuple[str, ...] | None:
    """The datasets a registered task's data come from (its class's ``data_sources``), or None when it declares none."""
    from lesionbench.benchmark.encoders.plugins import TASKS
    from lesionbench.benchmark.errors import LesionbenchError

    try:
        factory = TASKS.get(name)
    except (LesionbenchError, KeyError):
        return None
    src = getattr(factory, "data_sources", None)
    return tuple(src) if src else None
