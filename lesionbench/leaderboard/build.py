"""Turn collected results into the leaderboard document, and write the page, Markdown and JSON.

The leaderboard document (``leaderboard.json``, schema in :mod:`lesionbench.leaderboard.schema`) is
the single source the HTML and Markdown are rendered from. It holds one section per task name, version
and evaluation protocol key (:func:`~lesionbench.benchmark.scoring.protocols.protocol_key`; k shots per class and
a total budget of k are different protocols too), ordered by task and version, then frozen-feature probes,
k-shot and fine-tuned (the order of :data:`~lesionbench.benchmark.scoring.protocols.PROTOCOLS`); what a section
holds (ranked entries with their statistics, unranked entries, submissions, published reference rows) is
described in :mod:`lesionbench.leaderboard.sections`. Besides the sections: ``reference_only``, the
published rows whose task and protocol have no section of their own (listed apart, never dropped), and
``robustness``, the checked robustness views per task version, never ranked; ``aggregate``, one ranking
across tasks per protocol (:mod:`lesionbench.leaderboard.aggregate`).

All metrics lesionbench reports are "higher is better".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lesionbench._version import __version__
from lesionbench.benchmark.scoring.protocols import PROTOCOLS, protocol_key
from lesionbench.benchmark.types import TaskMeta
from lesionbench.leaderboard.collect import LoadedResult, collect_results
from lesionbench.leaderboard.labels import ALPHA, METRIC_LABELS, SCHEMA_ID, is_k_shot, metric_label, unique_entry_labels  # noqa: F401 - kept importable from here
from lesionbench.leaderboard.published import CITATION, DOI_URL, SOURCE
from lesionbench.leaderboard.sections import ALTERNATIVE, reference_rows, task_section  # noqa: F401 - ALTERNATIVE kept importable from here
from lesionbench.leaderboard.truth import Truth, agreed_meta, describe_difference

logger = logging.getLogger(__name__)


def build_document(
    items: Sequence[LoadedResult], *, reveal: bool = False, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0, include_published: bool = True,
    robustness: Sequence[dict[str, Any]] = (), truth: Truth | None = None, correction: str = "auto",
) -> dict[str, Any]:
    """The leaderboard document (see the module docstring) from collected results; ``robustness``: checked
    ``robustness.json`` views (:func:`lesionbench.leaderboard.robustness_view.collect_robustness`), shown apart.
    ``truth``: the task metas and test labels trusted over the results' own (default: the task registry's;
    ``Truth(None, None)`` trusts the results alone, see :mod:`lesionbench.leaderboard.truth`). ``correction``: the paired
    tests' multiplicity correction (``"auto"``: step-down max-T from three entries, ``"maxt"``, ``"holm"``)."""
    truth = Truth() if truth is None else truth
    from lesionbench.leaderboard.robustness_view import robustness_sections

    # one section per task version and protocol: rows of different protocols are never ranked together
    # (k shots per class and a total budget of k are different protocols too)
    groups: dict[tuple[str, str, str, str], list[LoadedResult]] = {}
    metas: dict[tuple[str, str, str, str], TaskMeta] = {}
    for it in items:
        key = protocol_key(it.result)
        per = ("total" if it.result.extra.get("shots_per") == "total" else "class") if is_k_shot(key) else ""
        k = (it.result.task.name, it.result.task.version, key, per)
        groups.setdefault(k, []).append(it)
    for k, group in list(groups.items()):
        # the registry's meta, else the one the results agree on: never whichever file sorts first
        metas[k], differing = agreed_meta(k[0], k[1], [it.result.task for it in group], truth)
        for i in differing:
            logger.warning("Skipping %s: its task %s version %s differs from the section's (%s).", group[i].location, k[0], k[1],
                           describe_difference(group[i].result.task, metas[k]))  # fmt: skip
        groups[k] = [it for i, it in enumerate(group) if i not in set(differing)]
    tasks = []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    # per task and version: frozen-feature probes first, then k-shot, then fine-tuned (PROTOCOLS' order)
    keys = sorted(groups, key=lambda k: (k[0], k[1], next((i for i, p in enumerate(PROTOCOLS) if k[2] == p or k[2].startswith(f"{p}-")), len(PROTOCOLS)), k[2], k[3]))
    iterator = tqdm(keys, desc="leaderboard", unit="task", disable=len(keys) < 2) if tqdm else keys
    section_items, section_labels = [], []
    for k in iterator:
        if groups[k]:
            labels = truth.labels(metas[k])
            tasks.append(task_section(metas[k], groups[k], reveal=reveal, n_boot=n_boot, n_perm=n_perm, seed=seed, protocol=k[2], shots_per=k[3], labels=labels,
                                      correction=correction))  # fmt: skip
            section_items.append(groups[k])
            section_labels.append(labels)
    from lesionbench.leaderboard.aggregate import aggregate_document

    # one ranking across tasks per protocol; the sections themselves stay as they are
    aggregate = aggregate_document(tasks, section_items, labels=section_labels, n_boot=n_boot, seed=seed)
    reference_only = []
    if include_published:
        from lesionbench.leaderboard.published import PUBLISHED_TASKS

        # published rows whose (task, protocol) has no section of its own are listed apart, never dropped
        shown = {(t["name"], t["protocol"]) for t in tasks}
        for name in PUBLISHED_TASKS:
            rows = [r for r in reference_rows(name) if (name, r["protocol"]) not in shown]
            if rows:
                reference_only.append({"name": name, "reference": rows})
    else:
        for t in tasks:
            t["reference"], t["reference_elsewhere"] = [], []
    return {
        "schema": SCHEMA_ID,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lesionbench_version": __version__,
        "reveal": bool(reveal),
        "published_source": {"source": SOURCE, "citation": CITATION, "url": DOI_URL},
        "tasks": tasks,
        "aggregate": aggregate,  # None: no protocol with two tasks of two or more entries
        "reference_only": reference_only,
        "robustness": robustness_sections(robustness),  # per task version, never ranked
    }


#: The files a build writes (and the only ones its --out may hold: the folder is replaced as a whole).
_OUT_FILES = frozenset({"index.html", "leaderboard.md", "leaderboard.json", "leaderboard.csv", "leaderboard.schema.json", "result.schema.json"})


def build_leaderboard(
    out: str | Path,
    *,
    tracking_uri: str | None = None,
    results_dir: str | Path | None = None,
    reveal: bool = False,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    include_published: bool = True,
    organiser_dir: str | Path | None = None,
    experiments: Sequence[str] | None = None,
    truth: Truth | None = None,
    correction: str = "auto",
) -> Path:
    """Build the leaderboard from MLflow and/or local results into ``out``; returns ``out/index.html``.

    Reads the MLflow ``experiments`` named (default: the harness's own, ``lesionbench``). Writes
    ``index.html`` (self-contained), ``leaderboard.md``, ``leaderboard.json``, ``leaderboard.csv`` (every row),
    ``leaderboard.schema.json`` and ``result.schema.json`` (the result format it accepts) into a sibling folder once every input has
    been read, then swaps it with ``out`` (:mod:`lesionbench.leaderboard.outdir`): a reader sees the old set
    or the new one. ``truth`` and ``correction``: see :func:`build_document`.
    ``reveal`` adds the submissions' final private scores, read from the organiser store
    (``organiser_dir``, default beside the results; organisers only).
    """
    import tempfile

    from lesionbench.leaderboard.outdir import check_out_folder, publish_folder
    from lesionbench.leaderboard.render import leaderboard_csv
    from lesionbench.leaderboard.render import render_html, render_markdown
    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA, RESULT_SCHEMA

    out = Path(out)
    check_out_folder(out, _OUT_FILES)  # before anything is read: a refused --out costs nothing
    organiser = None
    if reveal:  # private scores live only in the organiser store, never in the public results
        from lesionbench.leaderboard.submissions.organiser import check_apart, resolve_organiser_dir

        organiser = resolve_organiser_dir(organiser_dir, results_dir=results_dir, tracking_uri=tracking_uri)
        check_apart(organiser, results_dir=results_dir, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="lesionbench-lb-") as downloads:  # MLflow artifacts, read lazily
        items = collect_results(tracking_uri=tracking_uri, results_dir=results_dir, cache_dir=downloads, experiments=experiments)
        if organiser is not None:
            from lesionbench.leaderboard.submissions.organiser import reveal_private

            items = reveal_private(items, organiser)
        from lesionbench.leaderboard.robustness_view import collect_robustness

        robust = collect_robustness(tracking_uri=tracking_uri, results_dir=results_dir, experiments=experiments, cache_dir=downloads)
        doc = build_document(items, reveal=reveal, n_boot=n_boot, n_perm=n_perm, seed=seed, include_published=include_published, robustness=robust, truth=truth,
                              correction=correction)  # fmt: skip
    texts = {
        "leaderboard.json": json.dumps(doc, indent=2, allow_nan=False) + "\n",
        "leaderboard.schema.json": json.dumps(LEADERBOARD_SCHEMA, indent=2) + "\n",
        "result.schema.json": json.dumps(RESULT_SCHEMA, indent=2) + "\n",  # what a result must be to be read
        "leaderboard.md": render_markdown(doc),
        "leaderboard.csv": leaderboard_csv(doc),  # every row the page shows, one line per metric
        "index.html": render_html(doc),
    }
    publish_folder(out, texts)
    index = out / "index.html"
    logger.info("Leaderboard of %d task(s) written to %s.", len(doc["tasks"]), index)
    return index
