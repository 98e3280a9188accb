"""One task section of the leaderboard document: its entries, ranking, statistics and reference rows.

A section (:func:`task_section`) holds one task name, version and evaluation protocol key
(:func:`~lesionbench.benchmark.scoring.protocols.protocol_key`; results of different task versions or protocols
are never mixed; k-shot sections are ranked at their largest k instead of a fraction):

- the measured entries ranked by the main metric of the lowest-seed run at the task's headline
  fraction (the largest training fraction of any entry, normally 100%; its value and 95% bootstrap
  CI over the result's bootstrap unit, patients by default), with every metric as the mean and
  standard deviation over seeds, the low-data curve, the bootstrap rank interval and the paired test
  against the top entry (``difference`` = this entry minus the top one, with its paired bootstrap CI;
  two-sided permutation p, since the top entry is picked from the same data; adjusted over all K (K - 1) / 2
  pairs of the task's K entries, of which the K - 1 against the top are the ones shown, by step-down max-T on
  joint permutations from three entries on (Holm's p reported beside it; ``correction="holm"`` picks Holm);
  the bootstrap and the permutations resample patients unless every entry was scored per lesion), and
  the run's provenance;
- ``unranked``: entries listed but not ranked, each with its reason (trained on fewer labels than the
  headline fraction, no confidence interval, main metric undefined);
- the submissions, ranked by their public score (private scores only with ``reveal=True``);
- the published reference rows (Pai et al. 2024) measured with the section's protocol (the paper's are
  linear-probe rows), kept apart and never ranked; ``reference_elsewhere`` names the protocols of the others.

All metrics lesionbench reports are "higher is better".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.types import SubsetResult, TaskMeta, TaskResult
from lesionbench.leaderboard import _stats, stats_notes
from lesionbench.leaderboard.collect import LoadedResult, encoder_identity, level_of, own_level, protocol, run_at
from lesionbench.leaderboard.labels import ALPHA, is_k_shot, unique_entry_labels
from lesionbench.leaderboard.published import published_for
from lesionbench.leaderboard.recompute import recheck_measured, recheck_submission, test_arrays

logger = logging.getLogger(__name__)

#: The paired test's alternative as :func:`_stats.paired_comparison` runs it (shown on the page).
ALTERNATIVE = "two-sided"


def _num(x: Any) -> float | None:
    """JSON-safe float: NaN and infinities become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _split_variant(result: TaskResult) -> str:
    """The split variant: ``extra["split_variant"]``, else the ``+variant`` suffix of the task version."""
    v = result.extra.get("split_variant")
    if not v and "+" in result.task.version:
        v = result.task.version.split("+", 1)[1]
    v = str(v) if v else "lesionbench"
    return f"{v} (published split)" if result.task.published_split else v


def public_location(item: LoadedResult) -> str:
    """Where an entry came from, as the page shows it (a local result's path without the local folders)."""
    return item.location if item.source != "local" else _public_path(item.location)


def _provenance(item: LoadedResult) -> dict[str, Any]:
    r = item.result
    return {
        "encoder": r.encoder.name,
        "encoder_version": r.encoder.version,
        "weights_sha256": r.encoder.weights_sha256 or None,
        "encoder_fingerprint": r.encoder.fingerprint(),
        "encoder_identity": encoder_identity(r.encoder),
        "model_card": dict(r.encoder.card) or None,
        "probe": r.probe,
        "task_version": r.task.version,
        "split_variant": _split_variant(r),
        "split_hash": r.split_hash or None,
        "lesionbench_version": r.lesionbench_version,
        "created": r.created,
        "source": item.source,
        "location": public_location(item),
        "leaked_patients": len(r.leaked_patients),
        "n_runs": len(r.runs),
        "bootstrap_unit": str(r.extra.get("bootstrap_unit", "patient")),
        "n_boot": r.extra.get("n_boot") if isinstance(r.extra.get("n_boot"), int) else None,
        # "fraction": validation split subsampled like the training labels; "full": all of it (absent in older results)
        "validation": r.extra.get("validation") if r.extra.get("validation") in ("fraction", "full") else None,
    }


def _public_path(location: str) -> str:
    """A local result file's place without the machine's folders (a published page names no home folder or
    user): its last five parts (task/version/encoder/probe/result.json), as a relative path."""
    from pathlib import PurePath

    parts = PurePath(location).parts
    return "/".join(p for p in parts[-5:] if p not in ("/", "\\"))


def _finite(x: Any) -> float | None:
    """A number from untrusted params, or None (strings, booleans, NaN and infinities are not numbers here)."""
    return _num(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _head_metrics(run: SubsetResult, metric_names: Sequence[str]) -> dict[str, dict[str, float | None]] | None:
    """The fine-tuned network's own head, scored on the test split (``params["head_metrics"]``), for the task's metrics."""
    hm = run.params.get("head_metrics")
    if not isinstance(hm, dict):
        return None
    out = {}
    for m in metric_names:
        v = hm.get(m)
        if isinstance(v, dict) and _finite(v.get("value")) is not None:
            out[m] = {k: _finite(v.get(k)) for k in ("value", "ci_low", "ci_high")}
    return out or None


def _measured_entry(item: LoadedResult, level: float, *, shots: bool = False) -> dict[str, Any]:
    """An entry at ``level`` (the task's headline fraction, or its headline k in k-shot sections) when the
    result has it, else at its own largest one."""
    r = item.result
    own = own_level(r, shots)
    head = run_at(r, level if any(level_of(x, shots) == level for x in r.runs) else own, shots)
    metric_names = list(dict.fromkeys(list(_stats.task_metrics(r.task)) + list(head.metrics)))
    curves: dict[str, list[dict[str, Any]]] = {}
    for m in metric_names:
        pts = []
        for lv in sorted({level_of(x, shots) for x in r.runs}):
            at = [x for x in r.runs if level_of(x, shots) == lv]
            vals = [x.metrics[m].value for x in at if m in x.metrics]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if not vals:
                continue
            pt = {
                # k-shot: the runs' mean share of the training split (the same for every seed of a k)
                "fraction": lv if not shots else float(np.mean([x.fraction for x in at])),
                "mean": float(np.mean(vals)),
                "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                "min": float(np.min(vals)),
                "max": float(np.max(vals)),
                "n_seeds": len(vals),
                "n_train": int(np.mean([x.n_train for x in at])),
            }
            if shots:
                pt["shots"] = int(lv)
            pts.append(pt)
        curves[m] = pts
    metrics = {}
    for m in metric_names:
        mv = head.metrics.get(m)
        # mean and SD over the seeds where the metric is defined: the same numbers as the curve's point
        pt = next((p for p in curves[m] if p.get("shots" if shots else "fraction") == (head.shots if shots else head.fraction)), None)
        metrics[m] = {
            "value": _num(mv.value) if mv else None,
            "ci_low": _num(mv.ci_low) if mv else None,
            "ci_high": _num(mv.ci_high) if mv else None,
            "mean": pt["mean"] if pt else None,
            "sd": pt["sd"] if pt else None,
            "n_seeds": pt["n_seeds"] if pt else 0,
        }
        if shots:  # ranked on the seeds' mean, its interval with the draw variance (stats_notes.seed_mean_interval)
            at = [x.metrics[m] for x in r.runs if level_of(x, shots) == head.shots and m in x.metrics]
            mean, lo, hi = stats_notes.seed_mean_interval([x.value for x in at], [x.ci_low for x in at], [x.ci_high for x in at])
            metrics[m].update(value=_num(mean), ci_low=_num(lo), ci_high=_num(hi), value_seed=metrics[m]["value"], interval="seed mean")
    return {
        "encoder": r.encoder.name,
        "label": r.encoder.name,
        "probe": r.probe,
        "description": r.encoder.description,
        "fraction": head.fraction,
        "shots": head.shots,
        "seed": head.seed,
        "n_train": head.n_train,
        "metrics": metrics,
        "head_metrics": _head_metrics(head, metric_names),
        "curves": curves,
        "rank": None,
        "rank_interval": None,
        "comparison": None,
        "unranked_reason": None,
        "provenance": _provenance(item),
    }


def _unranked_reason(e: dict[str, Any], item: LoadedResult, main: str, level: float, *, shots: bool = False) -> str | None:
    """Why an entry is listed but not ranked (None: it is ranked)."""
    own = own_level(item.result, shots)
    if shots and own < level:
        return f"trained on at most {own:g} shots; the ranking is at {level:g} shots"
    if not shots and own < level:
        return f"trained on at most {own:.0%} of the training labels; the ranking is at {level:.0%}"
    m = e["metrics"].get(main) or {}
    if m.get("value") is None:
        return "main metric undefined on the test split"
    if not protocol(item.result)["intervals"] or m.get("ci_low") is None:
        why = "scored with --n-boot 0" if item.result.extra.get("n_boot") == 0 else "undefined on the bootstrap resamples"
        return f"no confidence interval ({why})"
    return None


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
        "same_file_as": [str(x) for x in sub.get("same_file_as") or []] if reveal else None,
        "provenance": _provenance(item),
        "rank": None,
        "private_rank": None,
    }
    return entry


def reference_rows(task: str, protocol: str | None = None) -> list[dict[str, Any]]:
    """Published rows of ``task`` measured with the section's ``protocol`` key (None: every row)."""
    return [p.to_dict() for p in published_for(task, fraction=None, protocol=protocol)]


def _reference_elsewhere(task: str, protocol: str) -> list[str]:
    """The protocol keys of ``task``'s published rows that a ``protocol`` section does not show (sorted)."""
    return sorted({p.protocol for p in published_for(task, fraction=None)} - {protocol})


def _align_predictions(
    meta: TaskMeta, frames: dict[int, pd.DataFrame], unit: str = "patient", labels: pd.DataFrame | None = None
) -> tuple[np.ndarray, dict[int, np.ndarray], str, np.ndarray | None] | None:
    """Common test lesions of every entry's predictions: (y_true, scores per entry, note, resampling
    groups: the patient ids for ``unit="patient"``, else None). ``labels``: the task's test labels (the
    public predictions hold none); without them, the files' own label columns."""
    parsed, patients = {}, {}
    for i, df in frames.items():
        try:
            test, ids, y, s = test_arrays(df, meta, labels)
        except (KeyError, ValueError, LesionbenchError) as exc:
            logger.warning("Predictions of entry %d cannot be used for paired statistics: %s", i, exc)
            continue
        parsed[i] = (pd.Index(ids), y, s)
        patients[i] = _stats.bootstrap_groups(test, unit)
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
    first = next(i for i in parsed if patients[i] is not None) if any(g is not None for g in patients.values()) else None
    groups = None if first is None else patients[first][parsed[first][0].get_indexer(common)]
    return y_ref, scores, note, groups


def task_section(
    meta: TaskMeta, items: list[LoadedResult], *, reveal: bool, n_boot: int, n_perm: int, seed: int, protocol: str = "linear", shots_per: str = "",
    labels: pd.DataFrame | None = None, correction: str = "auto",
) -> dict[str, Any]:
    """The section of one task version and ``protocol`` (see the module docstring) from its results
    (measured entries and submissions); ``shots_per``: "class" or "total" in k-shot sections, else "".
    ``correction``: the paired tests' multiplicity correction (:data:`lesionbench.leaderboard._stats.CORRECTIONS`).
    ``labels``: the task's test labels (:mod:`lesionbench.leaderboard.truth`): the statistics use them, and
    each entry's shown values are recomputed from its predictions (:mod:`lesionbench.leaderboard.recompute`)."""
    measured = [it for it in items if it.submission is None]
    subs = [it for it in items if it.submission is not None]
    main = _stats.main_metric(meta)
    # k-shot sections rank and plot against k; a k-shot result without its runs' k falls back to fractions
    shots = is_k_shot(protocol) and bool(measured) and all(r.shots for it in measured for r in it.result.runs)
    # one headline per section (the largest fraction, or the largest k of a k-shot section): entries
    # measured with fewer labels are listed, never ranked with the others
    level = max((own_level(it.result, shots) for it in measured), default=1.0)
    all_entries = [_measured_entry(it, level, shots=shots) for it in measured]
    unique_entry_labels(all_entries)
    heads: dict[int, pd.DataFrame | None] = {}  # the headline run's predictions, read once
    for k, (e, it) in enumerate(zip(all_entries, measured)):
        heads[id(it)] = it.predictions(run_at(it.result, e["shots"] if shots else e["fraction"], shots))
        forged = recheck_measured(e, heads[id(it)], meta, labels, it.location)
        e["unranked_reason"] = forged or _unranked_reason(e, it, main, level, shots=shots)
    fraction = level if not shots else max((e["fraction"] for e in all_entries if e["shots"] == level), default=1.0)
    unranked = sorted((e for e in all_entries if e["unranked_reason"]), key=lambda e: (-e["fraction"], e["label"]))
    ranked = [(e, it) for e, it in zip(all_entries, measured) if not e["unranked_reason"]]

    def main_value(e: dict[str, Any]) -> float:
        v = e["metrics"].get(main, {}).get("value")
        return -math.inf if v is None else v

    ranked.sort(key=lambda p: (-main_value(p[0]), p[0]["label"]))
    entries = [e for e, _ in ranked]
    measured = [it for _, it in ranked]
    for e in entries:
        # Equal values share a rank (competition ranking: 1, 1, 3).
        e["rank"] = 1 + sum(1 for f in entries if main_value(f) > main_value(e))

    stats_note, unit, n_perm_used, method = "", "patient", 0, _stats.correction_for(len(entries), correction)
    if len(entries) >= 2:
        frames = {}
        for i, it in enumerate(measured):
            df = heads.get(id(it))
            if df is not None:
                frames[i] = df
        # one resampling unit: patients, as the scorer's default, unless every entry was scored per lesion
        unit = "lesion" if all(it.result.extra.get("bootstrap_unit") == "lesion" for it in measured) else "patient"
        aligned = _align_predictions(meta, frames, unit, labels)
        if aligned is None:
            stats_note = "rank intervals and paired tests need the saved predictions of at least two entries"
        else:
            y, scores, stats_note, groups = aligned
            kind = meta.kind
            ranks = _stats.bootstrap_rank_intervals(kind, y, {str(i): s for i, s in scores.items()}, main, n_boot=n_boot, seed=seed, groups=groups)
            for i, (lo, hi) in ((int(k), v) for k, v in ranks.items()):
                entries[i]["rank_interval"] = [lo, hi]
            top = min(scores)  # entries are sorted, so the lowest index with predictions is the top
            method = _stats.correction_for(len(scores), correction)
            versus = _stats.versus_top(kind, y, scores, main, top=top, n_boot=n_boot, n_perm=n_perm, seed=seed, groups=groups, alpha=ALPHA, correction=method)
            # Holm on the same pairwise tests, reported beside the page's correction for comparison
            p_holm = dict(zip(versus, _stats.holm([c.p_value for c, _ in versus.values()], family=_stats.family_size(len(scores)))))
            for i, (c, p_adj) in versus.items():
                entries[i]["comparison"] = {
                    "versus": entries[top]["label"],
                    "versus_probe": entries[top]["probe"],
                    "metric": main,
                    # Shown as this entry minus the top one (negative = worse), with its 95% bootstrap CI.
                    "difference": _num(-c.difference),
                    "ci_low": _num(-c.ci_high),
                    "ci_high": _num(-c.ci_low),
                    "p_value": _num(c.p_value),
                    "p_holm": _num(p_holm[i]),
                    "p_maxt": _num(p_adj) if method == "maxt" else None,
                    # the section's correction (statistics.correction) decides what is significant
                    "p_adjusted": _num(p_adj),
                    "significant": bool(np.isfinite(p_adj) and p_adj < ALPHA),  # no test (NaN) is never significant
                    "n_lesions": len(y),
                }
            entries[top]["comparison"] = {"versus": None, "metric": main, "is_reference": True, "n_lesions": int(len(y))}
            n_groups = len(set(groups)) if groups is not None else len(y)
            n_perm_used = _stats.permutations_for(len(scores), n_perm)
            notes = [
                stats_note, stats_notes.method_note(len(scores), n_perm, method), stats_notes.reach_note(len(scores), n_perm, n_groups, ALPHA, method),
                stats_notes.interval_note(main, n_groups), stats_notes.rank_note(len(scores)),
            ]  # fmt: skip
            stats_note = "; ".join(n for n in notes if n)

    sub_entries = [_submission_entry(it, main, reveal) for it in subs]
    for e, it in zip(sub_entries, subs):  # the shown public value is the one its public predictions give
        if labels is not None:
            recheck_submission(e, it.predictions(it.result.runs[0]), meta, labels, it.location)

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
        "fraction": fraction,
        # k-shot sections: the k the ranking is at, and whether k counts per class or in total
        "shots": int(level) if shots and measured else None,
        "shots_per": shots_per or None,
        "entries": entries,
        "unranked": unranked,
        "submissions": sub_entries,
        "protocol": protocol,
        # only the published rows measured with this section's protocol; the others are named, never ranked
        "reference": reference_rows(meta.name, protocol),
        "reference_elsewhere": _reference_elsewhere(meta.name, protocol),
        "statistics": {
            "n_boot": n_boot,
            "n_perm": n_perm,
            # what each paired test drew: n_perm raised to 40 per pair of the Holm family; max-T draws n_perm joint permutations
            "n_perm_used": n_perm_used,
            "n_perm_maxt": n_perm if method == "maxt" and n_perm_used else 0,
            "seed": seed,
            "alpha": ALPHA,
            # the multiplicity correction the adjusted p (p_adjusted) and "significant" come from: "maxt" or "holm"
            "correction": method,
            "holm_family": "all pairs of entries",
            "alternative": ALTERNATIVE,
            # what the ranked entries' headline CIs resample (each result's own unit), and what the
            # rank intervals and paired tests resample (one unit for all entries)
            "bootstrap_unit": "/".join(sorted({e["provenance"]["bootstrap_unit"] for e in entries})) or "patient",
            "paired_unit": unit,
            "note": stats_note,
        },
    }
