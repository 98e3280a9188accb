"""A sweep planned once, then executed: :func:`plan_sweep` -> :class:`SweepPlan` -> :func:`run_sweep`.

The plan holds what every (fraction, seed) run needs and used to be recomputed per run or per call:
the metric list, the selection metric, the class count, the unfitted probe, the masks and ids of the
manifest, and every run's training and validation subsets. Planning checks everything that can fail
cheaply (options, leakage, the test split, subsets that cannot be drawn) before any feature is
extracted; executing it fits and scores each run (:mod:`lesionbench.benchmark.scoring.run_one`).

Validation per run (``val``): ``"fraction"`` (default) tunes a run on a validation subset drawn with
the run's own fraction (:func:`lesionbench.benchmark.scoring.splits.draw_val_subsets`), so a 10% run is not
tuned on ten times its labels; ``"full"`` tunes every run on the whole validation split (the paper's
protocol). A validation subset that misses a class of the validation split cannot score the selection
metric fairly: that run chooses C (and the Cox penalty) by grouped cross-validation on its training
subset instead, with a warning, and records ``validation = "cv"`` and the reason in its params.

k-shot sweeps (``shots``): the runs are (k, seed) instead of (fraction, seed), drawn by
:mod:`lesionbench.benchmark.scoring.shots`; each run's ``fraction`` is its share of the training split
(``n_train / n_train_total``) and ``shots`` its k. With ``val="fraction"`` (default) a run is tuned on
the same number of shots from the validation split (``validation = "shots"``); ``val="full"`` tunes on
the whole validation split. The protocol (:mod:`lesionbench.benchmark.scoring.protocols`) is fixed here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lesionbench._version import __version__
from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.scoring.probes.linear import DEFAULT_C
from lesionbench.benchmark.scoring.executor import Executor
from lesionbench.benchmark.scoring.plan import VAL_POLICIES, PlannedRun, SweepPlan, _runs_named, check_options, n_classes_of, plan_sweep, selection_metric, task_metrics
from lesionbench.benchmark.scoring.run_one import FeatureProvider, Timer, score_runs
from lesionbench.benchmark.scoring.saved_runs import RUNS_DIR, finished_runs, save_finished, sweep_key
from lesionbench.benchmark.scoring.splits import split_hash
from lesionbench.benchmark.types import EncoderMeta, SubsetResult, TaskKind, TaskResult

logger = logging.getLogger(__name__)

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
    executor: Executor | None = None,
) -> TaskResult:
    """Execute ``plan`` (``executor``: runs the fits elsewhere, e.g. each run a Dask task: :class:`lesionbench.scaleout.sweep.DaskExecutor`). Each finished run is saved under ``runs/`` with a key made of ``data_digest`` (of the
    features or patches) and everything else it depends on; ``resume`` reuses saved runs of the same key.
    Returns the :class:`TaskResult` (the caller writes ``result.json``)."""
    timer = Timer()
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")  # the compute's start (MLflow shows it)
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
    for slot, result, n_feat_run, seconds in score_runs(plan, provider, rdir, todo, jobs, executor=executor, key=key):
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
        extra={**_extra(plan, n_feat, timer), "started": started},
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
