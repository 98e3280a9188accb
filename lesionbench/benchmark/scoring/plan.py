"""The plan of a sweep: :func:`plan_sweep` -> :class:`SweepPlan`, executed by :func:`lesionbench.benchmark.scoring.sweep.run_sweep`.

The plan holds what every (fraction, seed) run needs and used to be recomputed per run or per call:
the metric list, the selection metric, the class count, the unfitted probe, the masks and ids of the
manifest, and every run's training and validation subsets. Planning checks everything that can fail
cheaply (options, leakage, the test split, subsets that cannot be drawn) before any feature is
extracted. See :mod:`lesionbench.benchmark.scoring.sweep` for the validation policies and k-shot sweeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.scoring.metrics import canonical_metric, metrics_for
from lesionbench.benchmark.scoring.probes import check_probe, make_probe
from lesionbench.benchmark.scoring.protocols import protocol_name
from lesionbench.benchmark.scoring.endpoints import truth
from lesionbench.benchmark.scoring.shots import check_shots, draw_shots, draw_val_shots
from lesionbench.benchmark.scoring.splits import Subset, audit_leakage, check_sweep, draw_subsets, draw_val_subsets, missing_classes
from lesionbench.benchmark.types import SubsetResult, TaskKind, TaskMeta
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
    #: The protocol (:data:`lesionbench.benchmark.scoring.protocols.PROTOCOLS`), and the k-shot counts and mode ((), "" for fractions).
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
