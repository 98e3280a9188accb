"""Sweep runs as Dask tasks, and several (task, encoder) sweeps submitted to one scheduler together.

Each (task, encoder, probe, fraction, seed) run is one Dask task calling the same function as the local
path (:func:`lesionbench.benchmark.scoring.run_one.score_run`). The plan and the feature provider (features, or a
trainable encoder with its patches) are scattered once, to every worker, so a worker that dies does
not take the only copy with it; Dask reruns the runs it held. A run writes its prediction and subset
files into the result folder (a shared filesystem on a cluster) under names fixed by its subset, so a
rerun rewrites the same files; the client saves each finished run (``runs/``) as the local path does,
so a killed client resumes from the saved runs.

A trainable encoder's runs ask for the worker resource ``GPU=1`` when the workers advertise GPUs
(``dask worker --resources GPU=1``, or a cluster spec with ``gpus``): one training per device at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import SubsetResult, TaskResult
from lesionbench.scaleout import extract

logger = logging.getLogger(__name__)


def workers_have_gpus(client: Any) -> bool:
    return any(w.get("resources", {}).get("GPU") for w in client.scheduler_info().get("workers", {}).values())


def score_runs_dask(client: Any, plan: Any, provider: Any, rdir: Path, todo: list[tuple[int, Any]], score_one: Callable[..., Any]) -> Iterator[tuple[int, SubsetResult, int, dict[str, float]]]:
    """``score_one(plan, provider, rdir, slot, run)`` of every run in ``todo`` on the workers, as they finish."""
    from dask.distributed import as_completed

    from lesionbench.benchmark.scoring.run_one import TrainedFeatures

    plan_f, provider_f = client.scatter([plan, provider], broadcast=True, hash=False)
    resources = {"GPU": 1} if isinstance(provider, TrainedFeatures) and workers_have_gpus(client) else None
    futures = [
        client.submit(_pinned, score_one, plan_f, provider_f, rdir, slot, run, key=f"run-{plan.meta.name}-{run.subset.name}-{plan_f.key}", pure=False, resources=resources)
        for slot, run in todo
    ]
    try:
        for fut in as_completed(futures):
            result = fut.result()
            client.cancel([fut])  # released: a worker lost later does not make the scheduler run it again
            yield result
    finally:  # a failure or Ctrl-C on the client stops the runs still queued
        client.cancel(futures)


def _pinned(score_one: Callable[..., Any], *args: Any) -> Any:
    """``score_one(*args)`` with torch's threads set in this task's thread (a trainable encoder trains here)."""
    extract.pin_torch_threads()  # looked up at call time (tests replace it)
    return score_one(*args)


def evaluate_many(tasks: Sequence[Any], encoders: Sequence[Any], *, client: Any = None, builds: Sequence[Any] | None = None, **options: Any) -> list[TaskResult]:
    """:func:`~lesionbench.benchmark.scoring.scorer.evaluate` of every (task, encoder), in (task, encoder) order.

    With a Dask ``client`` every pair is planned and submitted at once, so the runs of all pairs share the
    workers (extraction of one encoder overlaps the probe fits of another); without one, a loop.
    ``builds``: per encoder, a picklable callable that builds it on a worker (or None)."""
    from lesionbench.benchmark.scoring.scorer import evaluate

    builds = list(builds) if builds is not None else [None] * len(encoders)
    pairs = [(t, e, b) for t in tasks for e, b in zip(encoders, builds, strict=True)]
    if client is None:
        return [evaluate(t, e, **options) for t, e, _ in pairs]
    # threads on the client only wait for futures: the work is on the workers
    with ThreadPoolExecutor(max_workers=len(pairs) or 1) as pool:
        futures = [pool.submit(evaluate, t, e, executor=DaskExecutor(client, build=b), **options) for t, e, b in pairs]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class DaskExecutor:
    """Runs a sweep's extraction and runs on a Dask ``client``'s workers.

    ``build``: a picklable callable that builds the encoder on a worker (else the encoder object is sent)."""

    client: Any
    build: Callable[[], Any] | None = None

    def extract_features(self, manifest: pd.DataFrame, encoder: Any, *, cache_dir: Any, batch_size: int | None, progress: bool) -> np.ndarray:
        return extract.extract_features_dask(manifest, encoder, self.client, cache_dir=cache_dir, build=self.build, batch_size=batch_size, progress=progress)

    def score_runs(self, plan: Any, provider: Any, rdir: Path, todo: list[tuple[int, Any]], score_one: Callable[..., Any]) -> Iterator[Any]:
        return score_runs_dask(self.client, plan, provider, rdir, todo, score_one)


__all__ = ["DaskExecutor", "evaluate_many", "score_runs_dask", "workers_have_gpus"]
