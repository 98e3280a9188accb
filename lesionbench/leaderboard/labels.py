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


#: The probes of a protocol key (:func:`lesionbench.benchmark.scoring.protocols.protocol_key`), in words.
PROBE_WORDS = {"linear": "linear probe", "knn": "k-NN probe"}


#: Protocols of published rows that lesionbench does not run (their rows are listed apart, never ranked).
OTHER_PROTOCOLS = {"tib-knn-pooled-resplits": "k-NN on pooled, re-shuffled splits (TumorImagingBench)"}


def protocol_label(key: str, shots_per: str = "") -> str:
    """A section's protocol in words: ``linear`` -> "linear probe", ``k-shot-knn`` -> "k-shot, k-NN probe
    (k labelled lesions per class)", ``finetune-linear`` -> "fine-tuned, linear probe"; unknown keys as they are."""
    key = str(key)
    if key in PROBE_WORDS:
        return PROBE_WORDS[key]
    if key in OTHER_PROTOCOLS:
        return OTHER_PROTOCOLS[key]
    for prefix, words in (("k-shot-", "k-shot"), ("finetune-", "fine-tuned")):
        if key.startswith(prefix) and key[len(prefix) :] in PROBE_WORDS:
            text = f"{words}, {PROBE_WORDS[key[len(prefix):]]}"
            if prefix == "k-shot-":
                text += " (a budget of n labelled lesions over all classes)" if shots_per == "total" else " (k labelled lesions per class)"
            return text
    return key


def is_k_shot(key: str) -> bool:
    """Whether a protocol key is a k-shot protocol (ranked and plotted against shots, not fractions)."""
    return str(key).startswith("k-shot")


def headline_text(task: dict[str, Any]) -> str:
    """Where a section is ranked: "100% of the training labels", or for k-shot sections "k = 10 labelled
    lesions per class" / "a budget of 40 labelled lesions"."""
    if task.get("shots") is None:
        return f"{float(task.get('fraction', 1.0)):.0%} of the training labels"
    if task.get("shots_per") == "total":
        return f"a budget of {task['shots']} labelled lesions"
    return f"k = {task['shots']} labelled lesions per class"


def labels_text(e: dict[str, Any], task: dict[str, Any]) -> str:
    """An entry's labels cell: its training fraction, or its shots in a k-shot section ("10 shots")."""
    if task.get("shots") is not None and e.get("shots") is not None:
        return f"{e['shots']} shot{'' if e['shots'] == 1 else 's'}{'' if task.get('shots_per') == 'total' else ' per class'}"
    return f"{float(e['fraction']):.0%}"


def metric_label(name: str) -> str:
    """Display name of a metric."""
    return METRIC_LABELS.get(name, name.replace("_", " "))


def entry_label(e: dict[str, Any], task: dict[str, Any] | None = None) -> str:
    """An entry's display name: the document's unique ``label`` (see ``build``), else its encoder name."""
    return str(e.get("label") or e["encoder"])


def colours(task: dict[str, Any]) -> dict[str, str]:
    """A stable colour per ranked entry label within a task (in rank order)."""
    return {entry_label(e): PALETTE[i % len(PALETTE)] for i, e in enumerate(task["entries"])}


def unique_entry_labels(entries: list[dict[str, Any]]) -> None:
    """Give every entry of a task a distinct display label: the encoder name, then what tells namesakes apart."""

    def clashes(key: Any) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for e in entries:
            counts[key(e)] = counts.get(key(e), 0) + 1
        return counts

    for e in entries:
        n_probes = len({x["probe"] for x in entries if x["encoder"] == e["encoder"]})
        e["label"] = f"{e['encoder']} ({e['probe']})" if n_probes > 1 else e["encoder"]
    for part in (
        lambda e: f"weights {(e['provenance']['weights_sha256'] or 'none')[:8]}",
        lambda e: f"v{e['provenance']['encoder_version']}",
        lambda e: f"encoder {e['provenance']['encoder_identity'][:8]}",
        lambda e: f"{e['fraction']:.0%} labels",
        lambda e: f"{e['provenance']['bootstrap_unit']} bootstrap",
        lambda e: f"validation {e['provenance']['validation'] or 'full'}",
        lambda e: "no CI" if e["metrics"] and all(m.get("ci_low") is None for m in e["metrics"].values()) else "with CI",
    ):
        counts = clashes(lambda e: e["label"])
        for e in entries:
            if counts[e["label"]] > 1 and len({part(x) for x in entries if x["label"] == e["label"]}) > 1:
                e["_next"] = f"{e['label']} · {part(e)}"
        for e in entries:
            e["label"] = e.pop("_next", e["label"])
    counts = clashes(lambda e: e["label"])
    seen: dict[str, int] = {}
    for e in entries:  # identical but for what no label shows (a created date): numbered
        if counts[e["label"]] > 1:
            seen[e["label"]] = seen.get(e["label"], 0) + 1
            e["label"] = f"{e['label']} #{seen[e['label']]}"
