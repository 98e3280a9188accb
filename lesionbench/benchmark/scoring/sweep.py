"""A sweep planned once, then executed: :func:`plan_sweep` -> :class:`SweepPlan` -> :func:`run_sweep`.

The plan holds what every (fraction, seed) run needs and used to be recomputed per run or per call:
the metric list, the selection metric, the class count, the unfitted probe, the masks and ids of the
manifest, and every run's training and validation subsets. Planning checks everything that can fail
cheaply (options, leakage, the test split, subsets that cannot be drawn) before any feature is
extracted; executing it fits and scores each run (:mod:`lesionbench.benchmark.run_one`).

Validation per run (``val``): ``"fraction"`` (default) tunes a run on a validation subset drawn with
the run's own fraction (:func:`lesionbench.benchmark.splits.draw_val_subsets`), so a 10% run is not
tuned on ten times its labels; ``"full"`` tunes every run on the whole validation split (the paper's
protocol). A validation subset that misses a class of the validation split cannot score the selection
metric fairly: that run chooses C (and the Cox penalty) by grouped cross-validation on its training
subset instead, with a warning, and records ``validation = "cv"`` and the reason in its params.

k-shot sweeps (``shots``): the runs are (k, seed) instead of (fraction, seed), drawn by
:mod:`lesionbench.benchmark.shots`; each run's ``fraction`` is its share of the training split
(``n_train / n_train_total``) and ``shots`` its k. With ``val="fraction"`` (default) a run is tuned on
the same number of shots from the validation split (``validation = "shots"``); ``val="full"`` tunes on
the whole validation split. The protocol (:mod:`lesionbench.benchmark.protocols`) is fixed here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lesionbench import __version__
from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.linear_probe import DEFAULT_C
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.metrics import canonical_metric, metrics_for
from lesionbench.benchmark.probes import check_probe, make_probe
from lesionbench.benchmark.protocols import protocol_name
from lesionbench.benchmark.run_one import FeatureProvider, Timer, score_runs, truth
from lesionbench.benchmark.saved_runs import RUNS_DIR, finished_runs, save_finished, sweep_key
from lesionbench.benchmark.shots import check_shots, draw_shots, draw_val_shots
from lesionbench.benchmark.splits import Subset, audit_leakage, check_sweep, draw_subsets, draw_val_subsets, missing_classes, split_hash
from lesionbench.benchmark.types import EncoderMeta, SubsetResult, TaskKind, TaskMeta, TaskResult

logger = logging.getLogger(__name__)

#: Validation policies: a subsample of the validation split with the run's fraction, or all of it.
VAL_POLICIES: tuple[str, ...] = ("fraction", "full")


def task_metrics(meta: TaskMeta) -> tuple[str, ...]:
    """The metrics reported for a task: its main metric first, then its others (survival: always auc_2y and c_index)."""
    requested = [meta.main_metric, *meta.metrics] if meta.main_metric else list(meta.metrics)
    if meta.kind == TaskKind.SURVIVAL:
        requested += ["auc_2y", "c_index"]
    return metrics_for(meta.kind, requested or None)


def selection_metric(meta: TaskMeta) -> str:
    """The metric that chooses C: the task's main metric (survival: the 2-year AUC, what the probe predicts)."""
    if meta.kind == TaskKind.SURVIVAL:
        return "auc"
    return canonical_metric(meta.main_metric) if meta.main_metric else metrics_for(meta.kind)[0]


def n_classes_of(meta: TaskMeta, manifest: pd.DataFrame) -> int:
    if meta.kind == TaskKind.BINARY:
        return 2
    if meta.kind == TaskKind.MULTICLASS:
        return meta.n_classes or int(manifest["label"].max()) + 1
    return 2


def check_options(
    fractions: Sequence[float], seeds: Sequence[int], probe: str, meta: TaskMeta, bootstrap_unit: str = "patient", jobs: int = 1, val: str = "fraction",
    *, shots: Sequence[int] | None = None, shots_per: str = "class", adapt: str | None = None,
) -> None:  # fmt: skip
    """One :class:`ConfigurationError` for the first bad option of a sweep."""
    check_sweep(fractions, seeds)
    if shots is not None:
        check_shots(shots, shots_per)
    protocol_name(probe, shots=shots is not None, adapt=adapt)
    check_probe(probe)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigurationError(f"jobs must be a whole number >= 1 (parallel runs), got {jobs!r}.")
    task_metrics(meta)  # unknown metric names fail now
    if bootstrap_unit not in ("patient", "lesion"):
        raise ConfigurationError(f"bootstrap_unit must be 'patient' or 'lesion'; got {bootstrap_unit!r}.")
    if val not in VAL_POLICIES:
        raise ConfigurationError(f"val must be 'fraction' (validation subsampled with each run's fraction) or 'full' (the whole validation split); got {val!r}.")


def check_test_split(manifest: pd.DataFrame, meta: TaskMeta) -> None:
    counts = manifest["split"].value_counts().to_dict()
    if not counts.get("test"):
        raise ConfigurationError(
            f"Task {meta.name!r} has no lesion with split 'test' (its manifest has {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
            "nothing to score. Set split=test for a held-out set of patients in the manifest (a synthetic cohort needs more "
            "patients: `lesionbench synth --patients 96`)."
        )


@dataclass(frozen=True)
class PlannedRun:
    """One (fraction, seed) run: its training subset and what tunes it."""

    seed: int
    fraction: float
    subset: Subset
    #: The validation subset (``val="fraction"``), or None (the whole split, or none: see ``validation``).
    val_subset: Subset | None
    #: What chooses C for this run: "fraction", "full", or "cv" (no usable validation rows).
    validation: str
    #: Why the run falls back to cross-validation ("" otherwise).
    note: str = ""
    #: k of a k-shot run (0: a fraction run).
    shots: int = 0


@dataclass(frozen=True)
class SweepPlan:
    """What every (fraction, seed) run of a sweep shares, decided once (picklable, for worker processes)."""

    meta: TaskMeta
    manifest: pd.DataFrame
    metric_names: tuple[str, ...]
    selection_metric: str
    n_classes: int
    probe: str
    template: Any
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    runs: tuple[PlannedRun, ...]
    val: str
    #: The protocol (:data:`lesionbench.benchmark.protocols.PROTOCOLS`), and the k-shot counts and mode ((), "" for fractions).
    protocol: str
    shots: tuple[int, ...]
    shots_per: str
    n_boot: int
    bootstrap_unit: str
    c_grid: tuple[float, ...]
    refine: bool
    leaked: tuple[str, ...]
    lesion_ids: np.ndarray
    groups: np.ndarray
    test_mask: np.ndarray
    test_groups: np.ndarray | None
    y_test: Any

    @property
    def kind(self) -> TaskKind:
        return self.meta.kind

    def val_mask(self, run: PlannedRun) -> np.ndarray:
        """The validation rows that tune ``run`` (none when it falls back to cross-validation)."""
        if run.validation == "cv":
            return np.zeros(len(self.lesion_ids), dtype=bool)
        if run.val_subset is not None:
            return np.isin(self.lesion_ids, run.val_subset.lesion_ids)
        return (self.manifest["split"] == "val").to_numpy()


def plan_sweep(
    manifest: pd.DataFrame,
    meta: TaskMeta,
    *,
    fractions: Sequence[float],
    seeds: Sequence[int],
    probe: str = "linear",
    n_boot: int = 1000,
    c_grid: Sequence[float],
    refine: bool = True,
    bootstrap_unit: str = "patient",
    val: str = "fraction",
    jobs: int = 1,
    shots: Sequence[int] | None = None,
    shots_per: str = "class",
    adapt: str | None = None,
) -> SweepPlan:
    """Check the options and the task, draw every subset, and fix what the runs share (``shots``: k-shot
    runs instead of ``fractions``; ``adapt``: the encoder is adapted, e.g. ``"finetune"``)."""
    check_options(fractions, seeds, probe, meta, bootstrap_unit, jobs, val, shots=shots, shots_per=shots_per, adapt=adapt)
    manifest = manifest.reset_index(drop=True)
    leaked = audit_leakage(manifest, meta)  # a leak in lesionbench's own split fails before any expensive work
    check_test_split(manifest, meta)
    fractions = tuple(float(f) for f in fractions)
    seeds = tuple(int(s) for s in seeds)
    has_val = bool((manifest["split"] == "val").any())
    runs: list[PlannedRun] = []
    if shots is not None:
        shots = tuple(sorted((int(k) for k in shots), reverse=True))
        runs = _plan_shot_runs(manifest, meta, seeds, shots, shots_per, val, has_val)
        fractions = tuple(dict.fromkeys(r.fraction for r in runs))
        if meta.kind == TaskKind.SURVIVAL and probe == "linear":
            _check_cox_events(manifest, runs)
    else:
        for seed in seeds:  # a subset that cannot be drawn fails here, not after hours of extraction
            subsets = draw_subsets(manifest, meta, fractions=fractions, seed=seed)
            val_subsets = draw_val_subsets(manifest, meta, fractions=fractions, seed=seed) if val == "fraction" else {}
            for fraction in fractions:
                runs.append(_plan_run(manifest, meta, seed, fraction, subsets[fraction], val_subsets.get(fraction), val, has_val))
    fallbacks = [r for r in runs if r.note]
    if fallbacks:
        logger.warning("%s: %d run(s) choose C by cross-validation on the training subset, because their validation subsets cannot tune it "
                       "(a class is missing, or there are too few shots): %s. Use --val full to tune on the whole validation split; each run records why "
                       "(params.validation_note).", meta.name, len(fallbacks), _runs_named(fallbacks, _in_words))  # fmt: skip
    kind = meta.kind
    n_classes = n_classes_of(meta, manifest)
    lesion_ids = manifest["lesion_id"].astype(str).to_numpy()
    groups = manifest["patient_id"].astype(str).to_numpy()
    test_mask = (manifest["split"] == "test").to_numpy()
    return SweepPlan(
        meta=meta, manifest=manifest, metric_names=task_metrics(meta), selection_metric=selection_metric(meta), n_classes=n_classes,
        probe=probe, template=make_probe(probe, kind, metric=selection_metric(meta), n_classes=n_classes, c_grid=c_grid, refine=refine),
        fractions=fractions, seeds=seeds, runs=tuple(runs), val=val, protocol=protocol_name(probe, shots=shots is not None, adapt=adapt),
        shots=tuple(shots or ()), shots_per=shots_per if shots else "", n_boot=int(n_boot), bootstrap_unit=bootstrap_unit,
        c_grid=tuple(float(c) for c in c_grid), refine=bool(refine), leaked=tuple(leaked), lesion_ids=lesion_ids, groups=groups,
        test_mask=test_mask,
        # resample patients, not lesions: lesions of one patient are not independent
        test_groups=groups[test_mask] if bootstrap_unit == "patient" else None,
        y_test=truth(manifest[test_mask], kind),
    )  # fmt: skip


def _plan_run(manifest: pd.DataFrame, meta: TaskMeta, seed: int, fraction: float, subset: Subset, val_subset: Subset | None, val: str, has_val: bool) -> PlannedRun:
    if not has_val:
        return PlannedRun(seed, fraction, subset, None, "cv")  # the task has no validation split: the probe's own fallback
    if val == "full" or val_subset is None:
        return PlannedRun(seed, fraction, subset, None, "full")
    lost = missing_classes(manifest, meta, val_subset)
    if lost:
        note = (f"the {fraction:.0%} validation subset (seed {seed}, {val_subset.n_lesions} lesions) has no {', '.join(map(repr, lost))} lesion "
                "(use --val full to tune on the whole validation split)")  # fmt: skip
        return PlannedRun(seed, fraction, subset, val_subset, "cv", note)
    return PlannedRun(seed, fraction, subset, val_subset, "fraction")


def _plan_shot_runs(manifest: pd.DataFrame, meta: TaskMeta, seeds: Sequence[int], shots: Sequence[int], mode: str, val: str, has_val: bool) -> list[PlannedRun]:
    """(k, seed) runs: the k-shot training set and, with ``val="fraction"``, as many shots from the validation split."""
    runs = []
    for seed in seeds:
        train = draw_shots(manifest, meta, shots=shots, seed=seed, mode=mode)
        vals = draw_val_shots(manifest, meta, shots=shots, seed=seed, mode=mode) if has_val and val == "fraction" else {}
        for k in shots:
            sub, vsub = train[k], vals.get(k)
            if not has_val:
                runs.append(PlannedRun(seed, sub.fraction, sub, None, "cv", shots=k))
            elif val == "full":
                runs.append(PlannedRun(seed, sub.fraction, sub, None, "full", shots=k))
            elif vsub is None:
                note = f"the validation split cannot supply {k} shot(s) {'per class' if mode == 'class' else 'in total'} (seed {seed}; use --val full)"
                runs.append(PlannedRun(seed, sub.fraction, sub, None, "cv", note, shots=k))
            else:
                runs.append(PlannedRun(seed, sub.fraction, sub, vsub, "shots", shots=k))
    return runs


def _check_cox_events(manifest: pd.DataFrame, runs: Sequence[PlannedRun]) -> None:
    """The linear survival probe's Cox model needs two events in each training set: refuse smaller k-shot sets now."""
    events = dict(zip(manifest["lesion_id"].astype(str), manifest["event"].to_numpy(float), strict=True))
    few = [r for r in runs if sum(events[i] for i in r.subset.lesion_ids) < 2]
    if few:
        r = few[0]
        raise ConfigurationError(
            f"The {r.subset.name} training set holds {int(sum(events[i] for i in r.subset.lesion_ids))} event(s); the linear survival probe's "
            "Cox model needs at least 2. Use at least 2 shots per class (--shots 2 5 10), or --probe knn."
        )


def run_sweep(
    plan: SweepPlan,
    emeta: EncoderMeta,
    provider: FeatureProvider,
    *,
    rdir: Path,
    data_digest: str,
    progress: bool = True,
    resume: bool = False,
    jobs: int = 1,
    client: Any = None,
) -> TaskResult:
    """Execute ``plan`` (``client``: a Dask client whose workers fit the runs, each its own task). Each finished run is saved under ``runs/`` with a key made of ``data_digest`` (of the
    features or patches) and everything else it depends on; ``resume`` reuses saved runs of the same key.
    Returns the :class:`TaskResult` (the caller writes ``result.json``)."""
    timer = Timer()
    t0 = time.perf_counter()
    meta, manifest = plan.meta, plan.manifest
    for sub in ("predictions", "subsets", RUNS_DIR):
        (rdir / sub).mkdir(parents=True, exist_ok=True)
    key = sweep_key(manifest, meta, emeta, data_digest, probe=plan.probe, metrics=plan.metric_names, n_boot=plan.n_boot,
                    bootstrap_unit=plan.bootstrap_unit, c_grid=plan.c_grid, refine=plan.refine, val=plan.val,
                    protocol=plan.protocol, shots=plan.shots, shots_per=plan.shots_per)  # fmt: skip
    finished = finished_runs(rdir, key) if resume else {}
    t0 = timer.add("setup", t0)

    slots: list[Any] = []
    todo: list[tuple[int, PlannedRun]] = []
    n_feat = 0
    for run in plan.runs:
        earlier = finished.get(run.subset.name)
        if earlier is not None and _same_subsets(earlier[0].params, run):
            slots.append(earlier[0])
            n_feat = n_feat or earlier[1]
            continue
        todo.append((len(slots), run))
        slots.append(None)
    resumed = len(slots) - len(todo)
    bar = tqdm(total=len(slots), initial=resumed, desc=f"{meta.name} / {emeta.name}", disable=not progress, unit="run")
    names = {slot: run.subset.name for slot, run in todo}
    main = plan.metric_names[0]
    for slot, result, n_feat_run, seconds in score_runs(plan, provider, rdir, todo, jobs, client=client, key=key):
        slots[slot] = result
        n_feat = n_feat_run
        save_finished(rdir, names[slot], key, result, n_feat)
        for k, v in seconds.items():
            timer.seconds[k] = timer.seconds.get(k, 0.0) + v
        bar.update(1)
        bar.set_postfix_str(f"{main}={result.metrics[main].value:.3f} ({f'k={result.shots}' if result.shots else f'f={result.fraction:g}'}, s={result.seed})")
    runs = [r for r in slots if r is not None]
    bar.close()
    if resumed:
        logger.info("%s / %s: %d of %d runs resumed from %s (finished earlier with the same task data, features and settings; "
                    "resume=False / --no-resume recomputes them)", meta.name, emeta.name, resumed, len(runs), rdir / RUNS_DIR)  # fmt: skip
    _say_fallbacks(meta.name, emeta.name, plan, runs)
    undefined = {m for r in runs for m, v in r.metrics.items() if not np.isfinite(v.value)}
    if undefined:
        logger.warning("%s: %s undefined (NaN) on the test split in some runs: %s", meta.name, ", ".join(sorted(undefined)), _why_undefined(manifest[plan.test_mask], plan.kind))
    return TaskResult(
        task=meta,
        encoder=emeta,
        probe=plan.probe,
        runs=tuple(runs),
        lesionbench_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        leaked_patients=plan.leaked,
        split_hash=split_hash(manifest),
        extra=_extra(plan, n_feat, timer),
    )


def _same_subsets(params: dict[str, Any], run: PlannedRun) -> bool:
    """A saved run is reused only for the same training subset and the same validation rows."""
    val_hash = run.val_subset.hash if run.val_subset is not None else None
    return params.get("subset_hash") == run.subset.hash and params.get("val_subset_hash") == val_hash and params.get("validation") == run.validation


def _extra(plan: SweepPlan, n_feat: int, timer: Timer) -> dict[str, Any]:
    split = plan.manifest["split"].to_numpy()
    extra: dict[str, Any] = {
        "n_lesions": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "feature_dim": n_feat,
        "metrics": list(plan.metric_names),
        "selection_metric": plan.selection_metric,
        "c_grid": list(plan.c_grid),
        "c_refine": plan.refine,
        "n_boot": plan.n_boot,
        "bootstrap_unit": plan.bootstrap_unit,
        "validation": plan.val,
        "protocol": plan.protocol,
        "fractions": list(plan.fractions),
        "seeds": list(plan.seeds),
        "timing_s": {k: round(v, 3) for k, v in timer.seconds.items()},
        "leaked_patient_count": len(plan.leaked),
    }
    if plan.shots:
        extra["shots"], extra["shots_per"] = list(plan.shots), plan.shots_per
    if plan.kind == TaskKind.SURVIVAL:
        y2 = two_year_label(plan.manifest["time"].to_numpy(float), plan.manifest["event"].to_numpy(float))
        extra["n_censored_2y"] = {s: int(((split == s) & np.isnan(y2)).sum()) for s in ("train", "val", "test")}
    return extra


def _runs_named(runs: Sequence[PlannedRun | SubsetResult], label: Callable[[PlannedRun | SubsetResult], str] | None = None) -> str:
    """The runs grouped by ``label`` (default ``f=0.1``, or ``k=5`` for k-shot runs), one clause each with
    their seeds: ``f=0.1 (seeds 0, 2); f=0.25 (seed 1)``."""
    label = label or (lambda r: f"k={r.shots}" if r.shots else f"f={r.fraction:g}")
    by: dict[str, list[int]] = {}
    for r in runs:
        by.setdefault(label(r), []).append(r.seed)
    return "; ".join(f"{k} (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(v)))})" for k, v in by.items())


def _in_words(run: PlannedRun | SubsetResult) -> str:
    """``20%`` or ``5 shot(s)``: a run's label in the plan's warning."""
    return f"{run.shots} shot(s)" if run.shots else f"{100 * run.fraction:g}%"


def _say_fallbacks(task: str, encoder: str, plan: SweepPlan, runs: Sequence[SubsetResult]) -> None:
    """One line per sweep for the linear probe's C fallbacks (each run records its own ``c_selection``)."""
    default = [r for r in runs if r.params.get("c_selection") == "default"]
    by_cv = [r for r in runs if r.params.get("c_selection") == "cv" and r.params.get("validation") not in ("cv", None)]
    if by_cv:
        logger.warning("%s / %s: the validation rows could not score %s (a class is missing there) in %d of %d runs: %s; C was chosen by "
                       "cross-validation on the training subset there (params c_selection = 'cv').", task, encoder, plan.selection_metric,
                       len(by_cv), len(runs), _runs_named(by_cv))  # fmt: skip
    if default:
        logger.warning("%s / %s: %s was undefined for every C in %d of %d runs: %s; C = %g (scikit-learn's default) was used there "
                       "(params c_selection = 'default'). With more labels, or --val full, C is chosen.", task, encoder, plan.selection_metric,
                       len(default), len(runs), _runs_named(default), DEFAULT_C)  # fmt: skip


def _why_undefined(test: pd.DataFrame, kind: TaskKind) -> str:
    if kind == TaskKind.SURVIVAL:
        n_events = int(test["event"].sum())
        return f"the test split has {len(test)} lesions and {n_events} events (a C-index needs comparable pairs, the 2-year AUC both outcomes)."
    counts = test["label"].value_counts().sort_index().to_dict()
    return f"the test split's labels are {counts} (AUC and mAP need every scored class present; use more test patients)."


__all__ = ["VAL_POLICIES", "PlannedRun", "SweepPlan", "check_options", "n_classes_of", "plan_sweep", "run_sweep", "selection_metric", "task_metrics"]
