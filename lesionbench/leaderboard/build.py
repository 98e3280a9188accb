"""Turn collected results into the leaderboard document, and write the page, Markdown and JSON.

The leaderboard document (``leaderboard.json``, schema in :mod:`lesionbench.leaderboard.schema`) is
the single source the HTML and Markdown are rendered from. Per task (name and version; results of
different task versions are never mixed) it holds:

- the measured entries ranked by the main metric of the 100%-label, lowest-seed run (its value and
  95% bootstrap CI), with every metric as the mean and standard deviation over seeds, the low-data
  curve, the bootstrap rank interval and the paired test against the top entry (``difference`` =
  this entry minus the top one, with its paired bootstrap CI; one-sided permutation p for "the top
  entry is better", Holm-corrected over all comparisons of the task), and the run's provenance;
- the submissions, ranked by their public score (private scores only with ``reveal=True``);
- the published reference rows (Pai et al. 2024), kept apart and never ranked.

All metrics lesionbench reports are "higher is better".
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench import __version__
from lesionbench.benchmark.types import SubsetResult, TaskMeta, TaskResult
from lesionbench.leaderboard import _stats
from lesionbench.leaderboard.collect import LoadedResult, collect_results
from lesionbench.leaderboard.published import CITATION, DOI_URL, SOURCE, published_for

logger = logging.getLogger(__name__)

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


def metric_label(name: str) -> str:
    """Display name of a metric."""
    return METRIC_LABELS.get(name, name.replace("_", " "))


def _num(x: Any) -> float | None:
    """JSON-safe float: NaN and infinities become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _headline_run(result: TaskResult) -> SubsetResult:
    frac = max(r.fraction for r in result.runs)
    return min((r for r in result.runs if r.fraction == frac), key=lambda r: r.seed)


def _split_variant(result: TaskResult) -> str:
    """The split variant: ``extra["split_variant"]``, else the ``+variant`` suffix of the task version."""
    v = result.extra.get("split_variant")
    if not v and "+" in result.task.version:
        v = result.task.version.split("+", 1)[1]
    v = str(v) if v else "lesionbench"
    return f"{v} (published split)" if result.task.published_split else v


def _provenance(item: LoadedResult) -> dict[str, Any]:
    r = item.result
    return {
        "encoder": r.encoder.name,
        "encoder_version": r.encoder.version,
        "weights_sha256": r.encoder.weights_sha256 or None,
        "encoder_fingerprint": r.encoder.fingerprint(),
        "model_card": dict(r.encoder.card) or None,
        "probe": r.probe,
        "task_version": r.task.version,
        "split_variant": _split_variant(r),
        "split_hash": r.split_hash or None,
        "lesionbench_version": r.lesionbench_version,
        "created": r.created,
        "source": item.source,
        "location": item.location,
        "leaked_patients": len(r.leaked_patients),
        "n_runs": len(r.runs),
    }


def _measured_entry(item: LoadedResult) -> dict[str, Any]:
    r = item.result
    head = _headline_run(r)
    summary = r.summary()
    metric_names = list(dict.fromkeys(list(_stats.task_metrics(r.task)) + list(head.metrics)))
    metrics = {}
    for m in metric_names:
        mv = head.metrics.get(m)
        mean, sd = summary.get(head.fraction, {}).get(m, (float("nan"), float("nan")))
        metrics[m] = {
            "value": _num(mv.value) if mv else None,
            "ci_low": _num(mv.ci_low) if mv else None,
            "ci_high": _num(mv.ci_high) if mv else None,
            "mean": _num(mean),
            "sd": _num(sd),
            "n_seeds": sum(1 for x in r.runs if x.fraction == head.fraction and m in x.metrics),
        }
    curves: dict[str, list[dict[str, Any]]] = {}
    for m in metric_names:
        pts = []
        for frac in sorted({x.fraction for x in r.runs}):
            vals = [x.metrics[m].value for x in r.runs if x.fraction == frac and m in x.metrics]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if not vals:
                continue
            pts.append(
                {
                    "fraction": frac,
                    "mean": float(np.mean(vals)),
                    "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                    "min": float(np.min(vals)),
                    "max": float(np.max(vals)),
                    "n_seeds": len(vals),
                    "n_train": int(np.mean([x.n_train for x in r.runs if x.fraction == frac])),
                }
            )
        curves[m] = pts
    return {
        "encoder": r.encoder.name,
        "probe": r.probe,
        "description": r.encoder.description,
        "fraction": head.fraction,
        "seed": head.seed,
        "n_train": head.n_train,
        "metrics": metrics,
        "curves": curves,
        "rank": None,
        "rank_interval": None,
        "comparison": None,
        "provenance": _provenance(item),
    }


def _submission_entry(item: LoadedResult, main: str, reveal: bool) -> dict[str, Any]:
    sub = item.submission or {}

    def part(d: dict[str, Any] | None) -> dict[str, Any]:
        return {m: {k: _num(v.get(k)) for k in ("value", "ci_low", "ci_high")} for m, v in (d or {}).items()}

    entry = {
        "name": str(sub.get("name", item.result.encoder.name)),
        "kind": str(sub.get("kind", "predictions")),
        "submitted": item.result.created,
        "n_public": int(sub.get("n_public", 0)),
        "public": part(sub.get("public")),
        "private": part(sub.get("private")) if reveal else None,
        "n_private": int(sub.get("n_private", 0)) if reveal else None,
        "file_sha256": sub.get("file_sha256"),
        "provenance": _provenance(item),
        "rank": None,
        "private_rank": None,
    }
    return entry


def _reference_rows(task: str) -> list[dict[str, Any]]:
    return [p.to_dict() for p in published_for(task, fraction=None)]


def _align_predictions(meta: TaskMeta, frames: dict[int, pd.DataFrame]) -> tuple[np.ndarray, dict[int, np.ndarray], str] | None:
    """Common test lesions of every entry's predictions: (y_true, scores per entry, note)."""
    parsed = {}
    for i, df in frames.items():
        try:
            ids, y, s = _stats.prediction_arrays(df[df["split"] == "test"] if "split" in df.columns else df, meta)
        except (KeyError, ValueError) as exc:
            logger.warning("Predictions of entry %d cannot be used for paired statistics: %s", i, exc)
            continue
        parsed[i] = (pd.Index(ids), y, s)
    if len(parsed) < 2:
        return None
    common = None
    for ids, _, _ in parsed.values():
        common = ids if common is None else common.intersection(ids)
    common = common.sort_values()
    note = ""
    if any(len(ids) != len(common) for ids, _, _ in parsed.values()):
        note = f"entries were predicted on different test lesions; statistics use the {len(common)} they share"
        logger.warning("Task %s: %s.", meta.name, note)
    if len(common) < 2:
        return None
    ys, scores = [], {}
    for i, (ids, y, s) in parsed.items():
        pos = ids.get_indexer(common)
        ys.append(y[pos])
        scores[i] = s[pos]
    y_ref = ys[0]
    if any(not np.allclose(y_ref, y, equal_nan=True) for y in ys[1:]):
        logger.warning("Task %s: the entries' predictions carry different labels for the same lesions; paired statistics skipped.", meta.name)
        return None
    return y_ref, scores, note


def _task_section(meta: TaskMeta, items: list[LoadedResult], *, reveal: bool, n_boot: int, n_perm: int, seed: int) -> dict[str, Any]:
    measured = [it for it in items if it.submission is None]
    subs = [it for it in items if it.submission is not None]
    main = _stats.main_metric(meta)
    entries = [_measured_entry(it) for it in measured]

    def main_value(e: dict[str, Any]) -> float:
        v = e["metrics"].get(main, {}).get("value")
        return -math.inf if v is None else v

    order = sorted(range(len(entries)), key=lambda i: (-main_value(entries[i]), entries[i]["encoder"]))
    entries = [entries[i] for i in order]
    measured = [measured[i] for i in order]
    for e in entries:
        # Equal values share a rank (competition ranking: 1, 1, 3).
        e["rank"] = 1 + sum(1 for f in entries if main_value(f) > main_value(e))

    stats_note = ""
    if len(entries) >= 2:
        frames = {}
        for i, it in enumerate(measured):
            df = it.predictions(_headline_run(it.result))
            if df is not None:
                frames[i] = df
        aligned = _align_predictions(meta, frames)
        if aligned is None:
            stats_note = "rank intervals and paired tests need the saved predictions of at least two entries"
        else:
            y, scores, stats_note = aligned
            kind = meta.kind
            ranks = _stats.bootstrap_rank_intervals(kind, y, {str(i): s for i, s in scores.items()}, main, n_boot=n_boot, seed=seed)
            for i, (lo, hi) in ((int(k), v) for k, v in ranks.items()):
                entries[i]["rank_interval"] = [lo, hi]
            top = min(scores)  # entries are sorted, so the lowest index with predictions is the top
            others = [i for i in scores if i != top]
            comps = {i: _stats.paired_comparison(kind, y, scores[top], scores[i], main, n_boot=n_boot, n_perm=n_perm, seed=seed) for i in others}
            adjusted = _stats.holm([comps[i].p_value for i in others]) if others else []
            for i, p_adj in zip(others, adjusted):
                c = comps[i]
                entries[i]["comparison"] = {
                    "versus": entries[top]["encoder"],
                    "versus_probe": entries[top]["probe"],
                    "metric": main,
                    # Shown as this entry minus the top one (negative = worse), with its 95% bootstrap CI.
                    "difference": _num(-c.difference),
                    "ci_low": _num(-c.ci_high),
                    "ci_high": _num(-c.ci_low),
                    "p_value": _num(c.p_value),
                    "p_holm": _num(p_adj),
                    "significant": bool(p_adj < ALPHA),
                    "n_lesions": int(len(y)),
                }
            entries[top]["comparison"] = {"versus": None, "metric": main, "is_reference": True, "n_lesions": int(len(y))}

    sub_entries = [_submission_entry(it, main, reveal) for it in subs]

    def pub(e: dict[str, Any], part: str) -> float:
        v = ((e.get(part) or {}).get(main) or {}).get("value")
        return -math.inf if v is None else v

    sub_entries.sort(key=lambda e: (-pub(e, "public"), e["submitted"]))
    for e in sub_entries:
        e["rank"] = 1 + sum(1 for f in sub_entries if pub(f, "public") > pub(e, "public"))
        if reveal:
            e["private_rank"] = 1 + sum(1 for f in sub_entries if pub(f, "private") > pub(e, "private"))

    return {
        "name": meta.name,
        "version": meta.version,
        "kind": str(meta.kind),
        "description": meta.description,
        "main_metric": main,
        "metrics": list(_stats.task_metrics(meta)),
        "class_names": list(meta.class_names),
        "citation": meta.citation,
        "published_split": meta.published_split,
        "entries": entries,
        "submissions": sub_entries,
        "reference": _reference_rows(meta.name),
        "statistics": {
            "n_boot": n_boot,
            "n_perm": n_perm,
            "seed": seed,
            "alpha": ALPHA,
            "correction": "holm",
            "note": stats_note,
        },
    }


def build_document(items: Sequence[LoadedResult], *, reveal: bool = False, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0, include_published: bool = True) -> dict[str, Any]:
    """The leaderboard document (see the module docstring) from collected results."""
    groups: dict[tuple[str, str], list[LoadedResult]] = {}
    metas: dict[tuple[str, str], TaskMeta] = {}
    for it in items:
        k = (it.result.task.name, it.result.task.version)
        groups.setdefault(k, []).append(it)
        metas.setdefault(k, it.result.task)
    tasks = []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    keys = sorted(groups)
    iterator = tqdm(keys, desc="leaderboard", unit="task", disable=len(keys) < 2) if tqdm else keys
    for k in iterator:
        tasks.append(_task_section(metas[k], groups[k], reveal=reveal, n_boot=n_boot, n_perm=n_perm, seed=seed))
    reference_only = []
    if include_published:
        from lesionbench.leaderboard.published import PUBLISHED_TASKS

        shown = {t["name"] for t in tasks}
        reference_only = [{"name": t, "reference": _reference_rows(t)} for t in PUBLISHED_TASKS if t not in shown]
    else:
        for t in tasks:
            t["reference"] = []
    return {
        "schema": SCHEMA_ID,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lesionbench_version": __version__,
        "reveal": bool(reveal),
        "published_source": {"source": SOURCE, "citation": CITATION, "url": DOI_URL},
        "tasks": tasks,
        "reference_only": reference_only,
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
) -> Path:
    """Build the leaderboard from MLflow and/or local results into ``out``; returns ``out/index.html``.

    Writes ``index.html`` (self-contained), ``leaderboard.md``, ``leaderboard.json`` and
    ``leaderboard.schema.json``. ``reveal`` adds the submissions' private scores (organisers only).
    """
    from lesionbench.leaderboard.render import render_html, render_markdown
    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA

    import tempfile

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="lesionbench-lb-") as downloads:  # MLflow artifacts, read lazily
        items = collect_results(tracking_uri=tracking_uri, results_dir=results_dir, cache_dir=downloads)
        doc = build_document(items, reveal=reveal, n_boot=n_boot, n_perm=n_perm, seed=seed, include_published=include_published)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    (out / "leaderboard.schema.json").write_text(json.dumps(LEADERBOARD_SCHEMA, indent=2) + "\n")
    (out / "leaderboard.md").write_text(render_markdown(doc))
    index = out / "index.html"
    index.write_text(render_html(doc), encoding="utf-8")
    logger.info("Leaderboard of %d task(s) written to %s.", len(doc["tasks"]), index)
    return index
