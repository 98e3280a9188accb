"""Names the leaderboard's document, page, Markdown and figures share: one home, imported by each.

``build`` (the document), ``render`` (page and Markdown) and ``plots`` (figures) import from here and
never from one another's modules for a label or a constant.
"""

from __future__ import annotations

from typing import Any

SCHEMA_ID = "lesionbench.leaderboard/1"
#: Significance level of the Holm-corrected paired tests.
ALPHA = 0.05

METRIC_LABELS = {
    "balanced_accuracy": "Balanced accuracy",
    "map": "mAP",
    "ap": "AP",
    "average_precision": "AP",
    "auc": "AUC",
    "c_index": "C-index",
    "auc_2y": "2-year AUC",
}

#: Okabe-Ito colour-blind-safe palette (black last, for the eighth entry).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
REFERENCE_COLOUR = "#8a8f98"

#: What a result's ``bootstrap_unit`` resamples, in words (plural).
UNIT_WORDS = {"patient": "patients", "lesion": "lesions"}


def metric_label(name: str) -> str:
    """Display name of a metric."""
    return METRIC_LABELS.get(name, name.replace("_", " "))


def entry_label(e: dict[str, Any], task: dict[str, Any] | None = None) -> str:
    """An entry's display name: the document's unique ``label`` (see ``build``), else its encoder name."""
    return str(e.get("label") or e["encoder"])


def colours(task: dict[str, Any]) -> dict[str, str]:
    """A stable colour per ranked entry label within a task (in rank order)."""
    return {entry_label(e): PALETTE[i % len(PALETTE)] for i, e in enumerate(task["entries"])}
