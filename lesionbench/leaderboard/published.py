"""Published results, shown on the leaderboard as reference rows (never ranked with measured ones): the FMCIB
paper's rows (FMCIB, supervised, Med3D and Models Genesis, with their limited-label points) and
TumorImagingBench's k-NN rows, labelled with their protocol ("k-NN, pooled re-splits").

Source: Pai et al., "Foundation model for cancer imaging biomarkers", Nature Machine Intelligence 2024,
doi 10.1038/s42256-024-00807-9, values read from the figures of the reference repository
(AIM-Harvard/foundation-cancer-image-biomarker); 95% CIs where the paper shows them. These numbers
were obtained on the paper's own splits (see REFERENCE.md section 3 for their known leaks), so they
are a point of comparison, not a lesionbench measurement.

Tasks map to lesionbench's real tasks: Task 1 -> ``deeplesion_site``, Task 2 -> ``luna16_malignancy``,
Task 3 -> ``lung1_survival`` and ``radio_survival`` (2-year survival AUC, metric ``auc_2y``).
Metric names are the scorer's canonical ones (``balanced_accuracy``, ``map``, ``auc``, ``average_precision``, ``auc_2y``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SOURCE = "Pai et al. 2024"
CITATION = (
    "Pai S, Bontempi D, Hadzic I, et al. Foundation model for cancer imaging biomarkers. "
    "Nature Machine Intelligence 6, 354-367 (2024). doi:10.1038/s42256-024-00807-9"
)
DOI_URL = "https://doi.org/10.1038/s42256-024-00807-9"

NAN = float("nan")


@dataclass(frozen=True)
class PublishedResult:
    """One published approach on one task: metric -> (value, 95% CI low, high) at one label fraction."""

    task: str
    approach: str
    metrics: dict[str, tuple[float, float, float]]
    fraction: float = 1.0
    source: str = SOURCE
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: The evaluation protocol key the row was measured with (:func:`lesionbench.benchmark.scoring.protocols.protocol_key`):
    #: the leaderboard shows a row only in the sections of that protocol. The paper's rows are linear-probe ones.
    protocol: str = "linear"
    citation: str = CITATION

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "approach": self.approach,
            "fraction": self.fraction,
            "source": self.source,
            "citation": self.citation,
            "note": self.note,
            "protocol": self.protocol,
            "metrics": {
                m: {"value": v, "ci_low": None if lo != lo else lo, "ci_high": None if hi != hi else hi}
                for m, (v, lo, hi) in self.metrics.items()
            },
        }


def _v(x: float, lo: float = NAN, hi: float = NAN) -> tuple[float, float, float]:
    return (x, lo, hi)


# Rows per (approach, task) from REFERENCE.md section 5.
_TABLE: list[tuple[str, dict[str, dict[str, tuple[float, float, float]]]]] = [
    (
        "FMCIB features + linear probe",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.779, 0.747, 0.810), "map": _v(0.848)},
            "luna16_malignancy": {"auc": _v(0.883, 0.825, 0.933), "average_precision": _v(0.904)},
            "lung1_survival": {"auc_2y": _v(0.638, 0.579, 0.689)},
            "radio_survival": {"auc_2y": _v(0.653, 0.522, 0.775)},
        },
    ),
    (
        "FMCIB fine-tuned",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.805), "map": _v(0.856)},
            "luna16_malignancy": {"auc": _v(0.944), "average_precision": _v(0.951)},
            "lung1_survival": {"auc_2y": _v(0.619)},
            "radio_survival": {"auc_2y": _v(0.582)},
        },
    ),
    (
        "Supervised from scratch",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.720), "map": _v(0.821)},
            "luna16_malignancy": {"auc": _v(0.817), "average_precision": _v(0.835)},
            "lung1_survival": {"auc_2y": _v(0.534)},
            "radio_survival": {"auc_2y": _v(0.520)},
        },
    ),
    (
        "Med3D features",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.614), "map": _v(0.659)},
            "luna16_malignancy": {"auc": _v(0.768), "average_precision": _v(0.754)},
            "lung1_survival": {"auc_2y": _v(0.567)},
            "radio_survival": {"auc_2y": _v(0.541)},
        },
    ),
    (
        "Med3D fine-tuned",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.784), "map": _v(0.813)},
            "luna16_malignancy": {"auc": _v(0.916), "average_precision": _v(0.930)},
            "lung1_survival": {"auc_2y": _v(0.558)},
            "radio_survival": {"auc_2y": _v(0.602)},
        },
    ),
    (
        "Models Genesis features",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.698), "map": _v(0.791)},
            "luna16_malignancy": {"auc": _v(0.862), "average_precision": _v(0.859)},
            "lung1_survival": {"auc_2y": _v(0.582)},
            "radio_survival": {"auc_2y": _v(0.572)},
        },
    ),
    (
        "Models Genesis fine-tuned",
        {
            "deeplesion_site": {"balanced_accuracy": _v(0.768), "map": _v(0.819)},
            "luna16_malignancy": {"auc": _v(0.960), "average_precision": _v(0.955)},
            "lung1_survival": {"auc_2y": _v(0.550)},
            "radio_survival": {"auc_2y": _v(0.589)},
        },
    ),
]
# Limited-label points of the paper (FMCIB analysis notebooks; MODELZOO.md section 4): Task 1 mAP and Task 2 AUC at
# 10/20/50 % of the training labels (100 % is in _TABLE), and Task 1 balanced accuracy at 10 %.
_LIMITED: list[tuple[str, str, str, dict[float, float]]] = [
    ("FMCIB features + linear probe", "deeplesion_site", "balanced_accuracy", {0.1: 0.706}),
    ("Supervised from scratch", "deeplesion_site", "balanced_accuracy", {0.1: 0.519}),
    ("FMCIB features + linear probe", "deeplesion_site", "map", {0.1: 0.743, 0.2: 0.781, 0.5: 0.820}),
    ("Supervised from scratch", "deeplesion_site", "map", {0.1: 0.595, 0.2: 0.607, 0.5: 0.687}),
    ("Models Genesis features", "deeplesion_site", "map", {0.1: 0.626, 0.2: 0.674, 0.5: 0.764}),
    ("Med3D features", "deeplesion_site", "map", {0.1: 0.549, 0.2: 0.597, 0.5: 0.630}),
    ("FMCIB features + linear probe", "luna16_malignancy", "auc", {0.1: 0.827, 0.2: 0.876, 0.5: 0.884}),
    ("Supervised from scratch", "luna16_malignancy", "auc", {0.1: 0.516, 0.2: 0.589, 0.5: 0.751}),
    ("Models Genesis features", "luna16_malignancy", "auc", {0.1: 0.753, 0.2: 0.810, 0.5: 0.873}),
    ("Med3D features", "luna16_malignancy", "auc", {0.1: 0.703, 0.2: 0.756, 0.5: 0.771}),
]


def _limited_rows() -> list[PublishedResult]:
    merged: dict[tuple[str, str, float], dict[str, tuple[float, float, float]]] = {}
    for approach, task, metric, points in _LIMITED:
        for frac, v in points.items():
            merged.setdefault((approach, task, frac), {})[metric] = _v(v)
    return [
        PublishedResult(task=task, approach=approach, metrics=metrics, fraction=frac, note=f"{frac:.0%} of the training labels")
        for (approach, task, frac), metrics in merged.items()
    ]


#: TumorImagingBench (``notebooks/modelling/overall_results.csv``): AUC with 95% CI, most likely cosine k-NN on
#: pooled and re-shuffled splits, so labelled by protocol and never compared one-to-one with fixed-split probes.
TIB_SOURCE = "TumorImagingBench (k-NN, pooled re-splits)"
#: No lesionbench protocol measures this (pooled, re-shuffled splits), so these rows never share a section with
#: measured entries: the page lists them apart.
TIB_PROTOCOL = "tib-knn-pooled-resplits"
TIB_CITATION = (
    "TumorImagingBench (AIM-Harvard), tumorimagingbench 0.1.4, notebooks/modelling/overall_results.csv: "
    "AUC of frozen features, k-NN on pooled re-shuffled splits."
)
TIB_NOTE = "k-NN, pooled re-splits (TumorImagingBench): another protocol than the fixed-split linear probe; not comparable one-to-one"
_TIB_AUC: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]] = {
    # model: (LUNA16, LUNG1, RADIO)
    "FMCIB": ((0.886, 0.872, 0.900), (0.577, 0.550, 0.604), (0.588, 0.509, 0.667)),
    "Models Genesis": ((0.806, 0.796, 0.816), (0.577, 0.540, 0.615), (0.610, 0.569, 0.650)),
    "VISTA3D": ((0.711, 0.692, 0.730), (0.583, 0.545, 0.620), (0.622, 0.567, 0.678)),
    "PASTA": ((0.665, 0.654, 0.675), (0.557, 0.527, 0.587), (0.570, 0.510, 0.630)),
    "CT-FM": ((0.654, 0.626, 0.683), (0.544, 0.522, 0.567), (0.620, 0.572, 0.669)),
    "SuPreM": ((0.645, 0.619, 0.671), (0.561, 0.527, 0.594), (0.556, 0.500, 0.612)),
    "Merlin": ((0.638, 0.625, 0.650), (0.570, 0.534, 0.605), (0.613, 0.579, 0.647)),
    "CT-CLIP": ((0.573, 0.558, 0.587), (0.450, 0.426, 0.473), (0.510, 0.470, 0.550)),
    "VoCo": ((0.529, 0.499, 0.559), (0.524, 0.491, 0.558), (0.567, 0.512, 0.622)),
}


def _tib_rows() -> list[PublishedResult]:
    tasks = (("luna16_malignancy", "auc"), ("lung1_survival", "auc_2y"), ("radio_survival", "auc_2y"))
    return [
        PublishedResult(task=task, approach=f"{model} (TIB: k-NN, pooled re-splits)", metrics={metric: vals[i]},
                        source=TIB_SOURCE, note=TIB_NOTE, citation=TIB_CITATION,
                        protocol=TIB_PROTOCOL)  # fmt: skip
        for model, vals in _TIB_AUC.items()
        for i, (task, metric) in enumerate(tasks)
    ]


_NOTES = {
    "lung1_survival": "published model trained on a private cohort; LUNG1 was a test cohort only",
    "radio_survival": "published model trained on a private cohort; RADIO was a test cohort only",
}

PUBLISHED: tuple[PublishedResult, ...] = tuple(
    [
        PublishedResult(task=task, approach=approach, metrics=metrics, note=_NOTES.get(task, ""))
        for approach, per_task in _TABLE
        for task, metrics in per_task.items()
    ]
    + _limited_rows()
    + _tib_rows()
)

#: The real tasks that have published reference numbers.
PUBLISHED_TASKS: tuple[str, ...] = ("deeplesion_site", "luna16_malignancy", "lung1_survival", "radio_survival")


def published_for(task: str, *, fraction: float | None = 1.0, protocol: str | None = None) -> list[PublishedResult]:
    """Reference rows of one task (at one label fraction, or all with ``fraction=None``; of one protocol key, or all with ``protocol=None``)."""
    return [p for p in PUBLISHED if p.task == task and (fraction is None or p.fraction == fraction) and (protocol is None or p.protocol == protocol)]
