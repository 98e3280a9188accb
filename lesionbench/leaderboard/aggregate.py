"""One ranking across tasks: mean rank, Borda count, joint-bootstrap rank intervals and tiers.

The per-task sections stay as they are; this adds benchmark-level tables (``doc["aggregate"]``), one ranking
per protocol key that has sections for at least two tasks (linear probe, k-NN, k-shot, fine-tuned: never two
protocols in one ranking), each over one section per task name (the one with the most ranked entries):

- **mean rank**: each encoder's rank on a task's main metric among the task's ranked entries (ties share
  the average rank; k-shot: the metric's mean over the seeds at the section's k, as its section ranks it;
  each bootstrap replicate recomputes that mean), averaged over the tasks it ran; **Borda count**: per task
  the number of entries it beats (half a point per tie), summed over tasks. The table is ordered by mean
  rank, then Borda count.
- **rank intervals**: 95% percentile interval of the encoder's aggregate rank over bootstrap replicates
  that resample *patients of every task jointly*: each replicate draws the union of the tasks' test
  patients with replacement once (:func:`lesionbench.benchmark.scoring.metrics.bootstrap_weights`), so a patient
  in several tasks (the synthetic tasks share one cohort; ``lung1_survival`` and ``lung1_to_radio`` share
  NSCLC-Radiomics) is drawn the same number of times in each, and every task's metric is recomputed on
  that replicate (:func:`lesionbench.benchmark.scoring.metrics.weighted_values`). Replicates where some task's
  metric is undefined (a class not drawn) are left out and counted.
- **tiers**: encoders in table order; for each adjacent pair, the bootstrap share of replicates in which
  the lower one's mean rank is not worse gives a two-sided p-value (``2 * share``, with the ``+1``
  correction), Holm-corrected over the adjacent pairs; a new tier starts below every pair separated at the
  page's level (:data:`~lesionbench.leaderboard.labels.ALPHA`). Encoders of one tier are not separable.
  ``benchmarks/aggregate_tiers.py`` measures how often a tier splits equal encoders and how often a
  known ordering is recovered with this benchmark's numbers of tasks and patients.
- **model metadata** beside it: parameters, embedding size, licence and weights digest from the results'
  model cards, and per task whether the encoder's declared pre-training sets
  (:func:`lesionbench.baselines.zoo.catalog.pretraining_sets`) overlap the task's data (its class
  attribute ``data_sources``), through one alias table (:mod:`lesionbench.tasks._sources`): "yes",
  "no", or "unknown". Per protocol, a second table ranks on the tasks that overlap no listed encoder's
  declared pre-training data, and names the tasks it used, left out, and kept with an "unknown" mark.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import TaskKind
from lesionbench.leaderboard.collect import LoadedResult, run_at
from lesionbench.leaderboard.labels import ALPHA, is_k_shot
from lesionbench.tasks._sources import overlap, task_sources

logger = logging.getLogger(__name__)

#: The protocol whose benchmark-level table is shown first and unfolded (frozen features, linear probe: the
#: FMCIB protocol); every other protocol with two or more tasks gets its own table.
AGGREGATE_PROTOCOL = "linear"


@dataclass(frozen=True)
class TaskScores:
    """One task's aligned test predictions: labels, each encoder's scores, and the patient of each case."""

    name: str
    kind: TaskKind
    metric: str
    y: np.ndarray
    scores: Mapping[str, np.ndarray]
    #: Patient id per case (the bootstrap's unit); None: every case is its own unit.
    patients: np.ndarray | None = None
    #: k-shot: each encoder's scores of its further seeds (same cases); its metric is the mean over all its seeds.
    seed_scores: Mapping[str, Sequence[np.ndarray]] = field(default_factory=dict)

    def seeds(self, encoder: str) -> list[np.ndarray]:
        """Every seed's scores of ``encoder`` (one array outside k-shot)."""
        return [self.scores[encoder], *self.seed_scores.get(encoder, ())]


@dataclass(frozen=True)
class AggregateRow:
    """One encoder's line of the benchmark-level table."""

    encoder: str
    task_ranks: Mapping[str, float]
    mean_rank: float
    borda: float
    rank: int
    rank_interval: tuple[int, int] | None
    tier: int


@dataclass(frozen=True)
class TierTest:
    """Adjacent encoders in table order: is the lower one's mean rank separably worse?"""

    upper: str
    lower: str
    difference: float
    p_value: float
    p_holm: float
    separated: bool


@dataclass(frozen=True)
class Aggregate:
    """The benchmark-level ranking of :func:`aggregate_ranks`."""

    tasks: tuple[str, ...]
    rows: tuple[AggregateRow, ...]
    tests: tuple[TierTest, ...]
    n_boot: int
    n_used: int
    alpha: float


# ------------------------------------------------------------------------------- statistics
def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1 = best, higher value better) along the last axis; rows with a NaN stay NaN."""
    from scipy.stats import rankdata

    r = rankdata(-values, method="average", axis=-1).astype(float)
    r[~np.isfinite(values).all(axis=-1)] = np.nan
    return r


def joint_weights(tasks: Sequence[TaskScores], n_boot: int, seed: int | Sequence[int] = 0) -> list[np.ndarray]:
    """Per task, the (n_boot, n_cases) multiplicities of one joint patient bootstrap over all tasks.

    The union of the tasks' patients is resampled with replacement once per replicate; a case's
    multiplicity is the number of times its patient was drawn, in every task that holds the patient.
    """
    from lesionbench.benchmark.scoring.metrics import bootstrap_weights

    keys = [np.asarray(t.patients, dtype=str) if t.patients is not None else np.array([f"{t.name}#{i}" for i in range(len(t.y))]) for t in tasks]
    codes, union = pd.factorize(pd.Series(np.concatenate(keys) if keys else np.array([], dtype=str)))
    counts = bootstrap_weights(len(union), n_boot, seed)
    out, start = [], 0
    for k in keys:
        out.append(counts[:, codes[start : start + len(k)]])
        start += len(k)
    return out


def aggregate_ranks(tasks: Sequence[TaskScores], *, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> Aggregate:
    """Mean rank, Borda count, joint-bootstrap rank intervals and tiers over ``tasks`` (module docstring)."""
    from scipy.stats import rankdata

    from lesionbench.benchmark.scoring.metrics import compute_metrics, weighted_values
    from lesionbench.leaderboard._stats import holm

    encoders = list(dict.fromkeys(e for t in tasks for e in t.scores))
    index = {e: i for i, e in enumerate(encoders)}
    n_enc = len(encoders)
    rank_sum = np.zeros(n_enc)
    n_ran = np.zeros(n_enc)
    borda = np.zeros(n_enc)
    task_ranks: dict[str, dict[str, float]] = {e: {} for e in encoders}
    weights = joint_weights(tasks, n_boot, seed) if n_boot else [np.zeros((0, len(t.y))) for t in tasks]
    boot_sum = np.zeros((n_boot, n_enc))
    for t, w in zip(tasks, weights):
        names = list(t.scores)
        point = np.array([np.mean([compute_metrics(t.kind, t.y, s, [t.metric])[t.metric] for s in t.seeds(e)]) for e in names])
        if not np.isfinite(point).all():
            raise ValueError(f"task {t.name}: main metric {t.metric} undefined for {[e for e, v in zip(names, point) if not np.isfinite(v)]}")
        r = _ranks(point)
        cols = [index[e] for e in names]
        rank_sum[cols] += r
        n_ran[cols] += 1
        borda[cols] += len(names) - r
        for e, v in zip(names, r):
            task_ranks[e][t.name] = float(v)
        if n_boot:
            vals = np.column_stack([np.mean([weighted_values(t.kind, t.y, s, t.metric, w) for s in t.seeds(e)], axis=0) for e in names])
            boot_sum[:, cols] += _ranks(vals)
    mean_rank = rank_sum / np.maximum(n_ran, 1)
    boot = boot_sum / np.maximum(n_ran, 1)
    boot = boot[np.isfinite(boot).all(axis=1)]
    order = sorted(range(n_enc), key=lambda i: (mean_rank[i], -borda[i], encoders[i]))
    observed_rank = rankdata(mean_rank, method="min")
    intervals: dict[int, tuple[int, int]] = {}
    tests: list[TierTest] = []
    if len(boot):
        r = rankdata(boot, method="min", axis=1)
        lo = np.percentile(r, 2.5, axis=0, method="lower")
        hi = np.percentile(r, 97.5, axis=0, method="higher")
        intervals = {i: (int(lo[i]), int(hi[i])) for i in range(n_enc)}
        p = []
        for a, b in zip(order, order[1:]):
            not_worse = int(np.sum(boot[:, b] - boot[:, a] <= 0))
            p.append(min(1.0, 2 * (not_worse + 1) / (len(boot) + 1)))
        adjusted = holm(p)
        for (a, b), pv, pa in zip(zip(order, order[1:]), p, adjusted):
            tests.append(TierTest(encoders[a], encoders[b], float(mean_rank[b] - mean_rank[a]), pv, pa, bool(pa < alpha)))
    elif n_boot:
        logger.warning("Aggregate ranking: the main metric was undefined on every joint resample; no rank intervals or tiers.")
    tiers, tier = {order[0]: 1} if order else {}, 1
    for (a, b), test in zip(zip(order, order[1:]), tests or [None] * max(0, n_enc - 1)):
        tier += bool(test and test.separated)
        tiers[b] = tier
    rows = tuple(
        AggregateRow(encoders[i], task_ranks[encoders[i]], float(mean_rank[i]), float(borda[i]), int(observed_rank[i]), intervals.get(i), tiers[i])
        for i in order
    )
    return Aggregate(tuple(t.name for t in tasks), rows, tuple(tests), n_boot, int(len(boot)), alpha)


# ------------------------------------------------------------------------------- the document
def _protocol_of(section: dict[str, Any]) -> tuple[str, str]:
    """A section's protocol key and, for k-shot, whether k counts per class or in total."""
    key = str(section.get("protocol") or "linear")
    return key, (str(section.get("shots_per") or "class") if is_k_shot(key) else "")


def _protocols(sections: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The protocols of the sections, in page order (linear first)."""
    from lesionbench.benchmark.scoring.protocols import PROTOCOLS

    order = (AGGREGATE_PROTOCOL, *(p for p in PROTOCOLS if p != AGGREGATE_PROTOCOL))
    rank = lambda k: next((i for i, p in enumerate(order) if k[0] == p or k[0].startswith(f"{p}-")), len(order))  # noqa: E731
    return sorted(dict.fromkeys(_protocol_of(t) for t in sections), key=lambda k: (rank(k), k))


def _pick_sections(tasks: Sequence[dict[str, Any]], protocol: tuple[str, str] = (AGGREGATE_PROTOCOL, "")) -> list[int]:
    """Indices of the ``protocol`` sections to aggregate: one per task name (most ranked entries, then latest version)."""
    best: dict[str, int] = {}
    for i, t in enumerate(tasks):
        if _protocol_of(t) != protocol or len(t["entries"]) < 2:
            continue
        j = best.get(t["name"])
        if j is None or (len(t["entries"]), t["version"]) > (len(tasks[j]["entries"]), tasks[j]["version"]):
            best[t["name"]] = i
    return sorted(best.values(), key=lambda i: tasks[i]["name"])


def _encoder_keys(items: Sequence[LoadedResult]) -> dict[str, str]:
    """The aggregate's name of each encoder identity: its name, plus its weights or identity digest when names clash."""
    from lesionbench.leaderboard.collect import encoder_identity

    ids: dict[str, set[str]] = {}
    for it in items:
        ids.setdefault(it.result.encoder.name, set()).add(encoder_identity(it.result.encoder))
    out = {}
    for it in items:
        enc = it.result.encoder
        ident = encoder_identity(enc)
        clash = len(ids[enc.name]) > 1
        out[ident] = enc.name if not clash else f"{enc.name} · {('weights ' + enc.weights_sha256[:8]) if enc.weights_sha256 else ('encoder ' + ident[:8])}"
    return out


def _task_scores(section: dict[str, Any], items: Sequence[LoadedResult], keys: Mapping[str, str], labels: pd.DataFrame | None = None) -> TaskScores | None:
    """The section's ranked entries' aligned test predictions, keyed by aggregate encoder name (k-shot sections:
    every seed at the section's k, as the section ranks their mean)."""
    from lesionbench.leaderboard.collect import encoder_identity
    from lesionbench.leaderboard.sections import _align_predictions, public_location

    shots = section.get("shots") is not None
    by_location = {public_location(it): it for it in items}
    frames: dict[int, pd.DataFrame] = {}
    names: dict[int, str] = {}
    for e in section["entries"]:
        it = by_location.get(e["provenance"]["location"])
        if it is None:
            continue
        name = keys[encoder_identity(it.result.encoder)]
        if name in names.values():  # another probe setting of the same encoder: its best-ranked entry counts
            continue
        runs = sorted((r for r in it.result.runs if r.shots == section["shots"]), key=lambda r: r.seed) if shots else [run_at(it.result, section["fraction"], False)]
        got = [df for df in (it.predictions(r) for r in runs) if df is not None]
        if got and (not shots or len(got) == len(runs)):  # a seed mean needs every seed's predictions
            for df in got:
                frames[len(frames)], names[len(names)] = df, name
        elif got:
            logger.info("Aggregate ranking: %s left out of %s (k = %s): %d of its %d seeds' predictions could be read.",
                        name, section["name"], section["shots"], len(got), len(runs))  # fmt: skip
    meta = items[0].result.task
    aligned = _align_predictions(meta, frames, section["statistics"].get("paired_unit", "patient"), labels=labels)
    if aligned is None:
        return None
    from lesionbench.leaderboard._stats import _scorer_scores

    y, scores, _, groups = aligned
    # survival predictions as the scorer takes them: the risk (C-index) and the 2-year score (2-year AUC)
    per: dict[str, list[Any]] = {}
    for i, sc in scores.items():
        per.setdefault(names[i], []).append(_scorer_scores(meta.kind, sc))
    return TaskScores(section["name"], meta.kind, section["main_metric"], y, {e: v[0] for e, v in per.items()}, groups,
                      {e: tuple(v[1:]) for e, v in per.items() if len(v) > 1})  # fmt: skip


def _defined(ts: TaskScores) -> bool:
    """Whether every encoder's main metric is defined (every seed) on the task's aligned test lesions."""
    from lesionbench.benchmark.scoring.metrics import compute_metrics

    return all(np.isfinite(compute_metrics(ts.kind, ts.y, s, [ts.metric])[ts.metric]) for e in ts.scores for s in ts.seeds(e))


def encoder_metadata(item: LoadedResult, name: str, tasks: Sequence[str]) -> dict[str, Any]:
    """The Models table's row of one encoder: card facts and its overlap mark per task."""
    from lesionbench.baselines.zoo.catalog import pretraining_data, pretraining_sets

    enc = item.result.encoder
    card = dict(enc.card)
    declared = pretraining_sets(enc.name, card)
    licence = "; ".join(v for k, v in (("code", card.get("code_licence")), ("weights", card.get("weights_licence"))) if v)
    return {
        "encoder": name,
        "parameters": card.get("parameters"),
        "embedding_dim": int(enc.feature_dim),
        "licence": licence or None,
        "weights_sha256": enc.weights_sha256 or None,
        "pretraining_data": card.get("pretraining_data") or pretraining_data(enc.name),
        "pretraining_sets": sorted(declared) if declared is not None else None,
        "overlaps": {t: overlap(declared, task_sources(t)) for t in tasks},
    }


def _table(agg: Aggregate, *, name: str, title: str, excluded: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "tasks": list(agg.tasks),
        "excluded_tasks": list(excluded),
        "unknown_tasks": [],  # the filtered table: tasks kept although some listed encoder's overlap is unknown
        "rows": [
            {
                "encoder": r.encoder,
                "n_tasks": len(r.task_ranks),
                "task_ranks": dict(r.task_ranks),
                "mean_rank": r.mean_rank,
                "borda": r.borda,
                "rank": r.rank,
                "rank_interval": list(r.rank_interval) if r.rank_interval else None,
                "tier": r.tier,
            }
            for r in agg.rows
        ],
        "tests": [
            {"upper": t.upper, "lower": t.lower, "difference": t.difference, "p_value": t.p_value, "p_holm": t.p_holm, "separated": t.separated}
            for t in agg.tests
        ],
        "n_tiers": max((r.tier for r in agg.rows), default=0),
        "n_used": agg.n_used,
    }


def _scored(sections: Sequence[dict[str, Any]], items: Sequence[Sequence[LoadedResult]], picked: Sequence[int], keys: Mapping[str, str],
            labels: Sequence[pd.DataFrame | None] | None) -> list[tuple[dict[str, Any], TaskScores]]:
    scored = []
    for i in picked:
        ts = _task_scores(sections[i], [it for it in items[i] if it.submission is None], keys, labels[i] if labels is not None else None)
        if ts is None or len(ts.scores) < 2:
            logger.info("Aggregate ranking: task %s (%s) left out (fewer than two entries with saved predictions).", sections[i]["name"], sections[i].get("protocol"))
            continue
        if not _defined(ts):  # e.g. entries predicted on different lesions, whose shared ones hold one class
            logger.warning("Aggregate ranking: task %s left out: its main metric is undefined on the test lesions its entries share.", ts.name)
            continue
        scored.append((sections[i], ts))
    return scored


def _protocol_block(protocol: tuple[str, str], scored: Sequence[tuple[dict[str, Any], TaskScores]], meta: Mapping[str, dict[str, Any]], *,
                    n_boot: int, seed: int) -> dict[str, Any]:
    """One protocol's tables: all its tasks, then the tasks that overlap no listed encoder's pre-training data."""
    task_names = [ts.name for _, ts in scored]
    listed = list(dict.fromkeys(e for _, ts in scored for e in ts.scores))
    marks = {t: {meta[e]["overlaps"][t] for e in listed} for t in task_names}
    overlapping = [t for t in task_names if "yes" in marks[t]]
    clean = [ts for _, ts in scored if ts.name not in overlapping]
    unknown = [ts.name for ts in clean if "unknown" in marks[ts.name]]
    tables = [_table(aggregate_ranks([ts for _, ts in scored], n_boot=n_boot, seed=seed), name="all", title="All tasks")]
    title = "Tasks overlapping no listed encoder's pre-training data"
    if len(clean) >= 2:
        tables.append(_table(aggregate_ranks(clean, n_boot=n_boot, seed=seed), name="non_overlapping", title=title, excluded=overlapping))
    else:
        tables.append({"name": "non_overlapping", "title": title, "tasks": [t.name for t in clean], "excluded_tasks": overlapping, "unknown_tasks": [], "rows": [], "tests": [], "n_tiers": 0, "n_used": 0})  # fmt: skip
    tables[-1]["unknown_tasks"] = unknown
    return {
        "protocol": protocol[0],
        "shots_per": protocol[1] or None,
        "tasks": [
            {
                "name": ts.name, "version": s["version"], "metric": ts.metric, "n_entries": len(ts.scores), "n_test": int(len(ts.y)),
                "n_patients": int(len(set(ts.patients))) if ts.patients is not None else int(len(ts.y)),
                "fraction": s["fraction"], "shots": s.get("shots"), "n_seeds": 1 + max((len(v) for v in ts.seed_scores.values()), default=0),
                "data_sources": list(task_sources(ts.name) or []) or None,
            }
            for s, ts in scored
        ],  # fmt: skip
        "encoders": listed,
        "tables": tables,
    }


def aggregate_document(sections: Sequence[dict[str, Any]], items: Sequence[Sequence[LoadedResult]], *, labels: Sequence[pd.DataFrame | None] | None = None,
                       n_boot: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """The document's ``aggregate`` part from its task ``sections``, each section's results and each task's test
    ``labels`` (same order; the results hold no test label: :mod:`lesionbench.leaderboard.truth`): one block per
    protocol with at least two tasks that have two or more entries with saved predictions; None when no protocol has."""
    from lesionbench.leaderboard.collect import encoder_identity

    picked = {p: _pick_sections(sections, p) for p in _protocols(sections)}
    all_items = [it for idx in picked.values() for i in idx for it in items[i] if it.submission is None]
    keys = _encoder_keys(all_items)
    scored = {p: _scored(sections, items, idx, keys, labels) for p, idx in picked.items()}
    scored = {p: sc for p, sc in scored.items() if len(sc) >= 2}
    if not scored:
        return None
    first: dict[str, LoadedResult] = {}
    for it in all_items:
        first.setdefault(keys[encoder_identity(it.result.encoder)], it)
    task_names = sorted({ts.name for sc in scored.values() for _, ts in sc})
    listed = list(dict.fromkeys(e for sc in scored.values() for _, ts in sc for e in ts.scores))
    meta = {e: encoder_metadata(first[e], e, task_names) for e in listed}
    return {
        "protocols": [_protocol_block(p, sc, meta, n_boot=n_boot, seed=seed) for p, sc in scored.items()],
        "task_names": task_names,
        "encoders": list(meta.values()),
        "statistics": {"n_boot": n_boot, "seed": seed, "alpha": ALPHA, "correction": "holm over adjacent pairs", "unit": "patients, resampled jointly across tasks"},
    }
