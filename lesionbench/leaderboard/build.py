"""Turn collected results into the leaderboard document, and write the page, Markdown and JSON.

The leaderboard document (``leaderboard.json``, schema in :mod:`lesionbench.leaderboard.schema`) is
the single source the HTML and Markdown are rendered from. It holds one section per task name, version
and evaluation protocol key (:func:`~lesionbench.benchmark.scoring.protocols.protocol_key`; k shots per class and
a total budget of k are different protocols too), ordered by task and version, then frozen-feature probes,
k-shot and fine-tuned (the order of :data:`~lesionbench.benchmark.scoring.protocols.PROTOCOLS`); what a section
holds (ranked entries with their statistics, unranked entries, submissions, published reference rows) is
described in :mod:`lesionbench.leaderboard.sections`. Besides the sections: ``reference_only``, the
published rows whose task and protocol have no section of their own (listed apart, never dropped), and
``robustness``, the checked robustness views per task version, never ranked.

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

logger = logging.getLogger(__name__)


def build_document(items: Sequence[LoadedResult], *, reveal: bool = False, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0, include_published: bool = True, robustness: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The leaderboard document (see the module docstring) from collected results; ``robustness``: checked
    ``robustness.json`` views (:func:`lesionbench.leaderboard.robustness_view.collect_robustness`), shown apart."""
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
        metas.setdefault(k, it.result.task)
    tasks = []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    # per task and version: frozen-feature probes first, then k-shot, then fine-tuned (PROTOCOLS' order)
    keys = sorted(groups, key=lambda k: (k[0], k[1], next((i for i, p in enumerate(PROTOCOLS) if k[2] == p or k[2].startswith(f"{p}-")), len(PROTOCOLS)), k[2], k[3]))
    iterator = tqdm(keys, desc="leaderboard", unit="task", disable=len(keys) < 2) if tqdm else keys
    for k in iterator:
        tasks.append(task_section(metas[k], groups[k], reveal=reveal, n_boot=n_boot, n_perm=n_perm, seed=seed, protocol=k[2], shots_per=k[3]))
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
        "reference_only": reference_only,
        "robustness": robustness_sections(robustness),  # per task version, never ranked
    }


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
) -> Path:
    """Build the leaderboard from MLflow and/or local results into ``out``; returns ``out/index.html``.

    Reads the MLflow ``experiments`` named (default: the harness's own, ``lesionbench``). Writes
    ``index.html`` (self-contained), ``leaderboard.md``, ``leaderboard.json``, ``leaderboard.csv`` (every row), ``leaderboard.schema.json``
    and ``result.schema.json`` (the result format it accepts), each atomically, and only once every
    input has been read.
    ``reveal`` adds the submissions' final private scores, read from the organiser store
    (``organiser_dir``, default beside the results; organisers only).
    """
    import tempfile

    from lesionbench.benchmark.host import atomic_write
    from lesionbench.leaderboard.export import leaderboard_csv
    from lesionbench.leaderboard.render import render_html, render_markdown
    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA, RESULT_SCHEMA

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="lesionbench-lb-") as downloads:  # MLflow artifacts, read lazily
        items = collect_results(tracking_uri=tracking_uri, results_dir=results_dir, cache_dir=downloads, experiments=experiments)
        if reveal:  # private scores live only in the organiser store, never in the public results
            from lesionbench.leaderboard.submissions.organiser import resolve_organiser_dir, reveal_private

            items = reveal_private(items, resolve_organiser_dir(organiser_dir, results_dir=results_dir, tracking_uri=tracking_uri))
        from lesionbench.leaderboard.robustness_view import collect_robustness

        robust = collect_robustness(tracking_uri=tracking_uri, results_dir=results_dir, experiments=experiments, cache_dir=downloads)
        doc = build_document(items, reveal=reveal, n_boot=n_boot, n_perm=n_perm, seed=seed, include_published=include_published, robustness=robust)
    texts = {
        "leaderboard.json": json.dumps(doc, indent=2, allow_nan=False) + "\n",
        "leaderboard.schema.json": json.dumps(LEADERBOARD_SCHEMA, indent=2) + "\n",
        "result.schema.json": json.dumps(RESULT_SCHEMA, indent=2) + "\n",  # what a result must be to be read
        "leaderboard.md": render_markdown(doc),
        "leaderboard.csv": leaderboard_csv(doc),  # every row the page shows, one line per metric
        "index.html": render_html(doc),
    }
    for name, text in texts.items():
        atomic_write(out / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    index = out / "index.html"
    logger.info("Leaderboard of %d task(s) written to %s.", len(doc["tasks"]), index)
    return index
