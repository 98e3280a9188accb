"""Published FMCIB results, shown on the leaderboard as reference rows (never ranked with measured ones).

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
    #: The evaluation protocol key the row was measured with (:func:`lesionbench.benchmark.protocols.protocol_key`):
    #: the leaderboard shows a row only in the sections of that protocol. The paper's rows are linear-probe ones.
    protocol: str = "linear"

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "approach": self.approach,
            "fraction": self.fraction,
            "source": self.source,
            "citation": CITATION,
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
# Low-data points the paper reports at 10% of the training labels.
_TEN_PERCENT: list[tuple[str, str, str, float]] = [
    ("FMCIB features + linear probe", "deeplesion_site", "balanced_accuracy", 0.706),
    ("Supervised from scratch", "deeplesion_site", "balanced_accuracy", 0.519),
    ("FMCIB features + linear probe", "luna16_malignancy", "auc", 0.827),
    ("Supervised from scratch", "luna16_malignancy", "auc", 0.516),
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
    + [
        PublishedResult(task=task, approach=approach, metrics={m: _v(v)}, fraction=0.1, note="10% of the training labels")
        for approach, task, m, v in _TEN_PERCENT
    ]
)

#: The real tasks that have published reference numbers.
PUBLISHED_TASKS: tuple[str, ...] = ("deeplesion_site", "luna16_malignancy", "lung1_survival", "radio_survival")


def published_for(task: str, *, fraction: float | None = 1.0, protocol: str | None = None) -> list[PublishedResult]:
    """Reference rows of one task (at one label fraction, or all with ``fraction=None``; of one protocol key, or all with ``protocol=None``)."""
    return [p for p in PUBLISHED if p.task == task and (fraction is None or p.fraction == fraction) and (protocol is None or p.protocol == protocol)]
