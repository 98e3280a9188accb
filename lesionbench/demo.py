"""``lesionbench demo``: the whole benchmark on the embedded synthetic cohort, out of the box.

Generates the synthetic cohort when absent, runs every available encoder on the three synthetic
tasks (and the frozen-feature encoders on the two extra ones, :data:`EXTRA_TASKS`; features through the cache, limited-label probes, bootstrap CIs), logs every run to MLflow,
and ends by building the leaderboard. FMCIB's released weights cannot be fetched offline: the demo
then says so once and still runs the same architecture with random weights (``fmcib-random-init``),
the labelled control that shows how much of a score comes from pre-training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import LesionbenchError, WeightsError

logger = logging.getLogger(__name__)

SYNTHETIC_TASKS: tuple[str, ...] = ("synthetic_site", "synthetic_malignancy", "synthetic_survival")
#: Tasks derived from the same lesions (liver/kidney malignancy, a mutation-like label) so the page's ranking
#: across tasks is exercised end to end; frozen-feature encoders only (their features are cached from the
#: tasks above, so they cost probe fits alone); trainable encoders would train 40 more networks.
EXTRA_TASKS: tuple[str, ...] = ("synthetic_abdominal_malignancy", "synthetic_mutation")
#: Encoders the demo runs by default (fast enough for 2 CPU cores); ``full`` adds the heavy variants.
DEFAULT_ENCODERS: tuple[str, ...] = ("fmcib", "fmcib-random-init", "supervised-cnn", "radiomics")
FULL_ENCODERS: tuple[str, ...] = ("supervised-resnet50",)
#: Lighter settings that keep the default demo within its 10-minute budget on 2 CPU cores; they are
#: recorded in each encoder's ``meta.settings``, so results never mix with full-setting runs.
#: ``full=True`` uses every encoder's own defaults instead (and the full radiomics parameter file).
DEMO_OPTIONS: dict[str, dict[str, object]] = {"supervised-cnn": {"epochs": 8, "patience": 3}}
FULL_OPTIONS: dict[str, dict[str, object]] = {"radiomics": {"params": "full"}}


@dataclass
class DemoReport:
    """What the demo did, and how long each part took (seconds)."""

    results: list = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    leaderboard: Path | None = None


def demo_random_init(names: list[str] | None) -> list[str]:
    """The encoders of ``demo --random-init``: the controls of ``names``, or with none given the demo's
    defaults plus every zoo model's control (the zoo part of ``--full``)."""
    from lesionbench.baselines.zoo.catalog import _zoo, encoder_choice

    if names:
        return list(dict.fromkeys(encoder_choice(n.partition(":")[0], recipe=None, random_init=True)[0] for n in names))
    return [*DEFAULT_ENCODERS, *(e.model.display_name("official", random_init=True) for e in _zoo().values())]


def run_demo(
    *,
    out_dir: Path = Path("lesionbench-results"),
    data_dir: Path | None = None,
    tracking_uri: str | None = None,
    encoders: Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    weights: str | None = None,
    full: bool = False,
    patients: int | None = None,
    use_mlflow: bool = True,
    progress: bool = True,
    jobs: int = 1,
    val: str = "fraction",
    client: Any = None,
) -> DemoReport:
    """Run the demo end to end and return a :class:`DemoReport` (``jobs``: (fraction, seed) runs fitted
    in parallel processes; the numbers do not depend on it; ``val``: see :func:`lesionbench.benchmark.scoring.scorer.evaluate`;
    ``client``: a Dask client whose workers extract and fit, see :mod:`lesionbench.scaleout`)."""
    from lesionbench.benchmark.scoring import scorer
    from lesionbench.benchmark.tracking import mlflow_sink as tracking
    from lesionbench.benchmark.paths import data_root
    from lesionbench.benchmark.encoders.plugins import ENCODERS, get_encoder, get_task
    from lesionbench.tasks.synthetic import ensure_cohort

    from lesionbench.benchmark.scoring.splits import DEFAULT_FRACTIONS, DEFAULT_SEEDS, check_sweep

    report = DemoReport()
    executor = None
    if client is not None:
        from lesionbench.scaleout.sweep import DaskExecutor

        executor = DaskExecutor(client)
    t0 = time.perf_counter()
    names = list(encoders) if encoders else [*DEFAULT_ENCODERS, *(FULL_ENCODERS if full else ())]
    if not encoders:  # third-party encoders installed through entry points join the demo too
        names += [n for n in ENCODERS.names() if n not in names and n not in FULL_ENCODERS and "entry point" in ENCODERS.origin(n)]
        # zoo encoders whose weights are on disk (no download); the others are skipped with one line each, and
        # their random-init controls run only with full=True (each costs minutes on 2 cores)
        from lesionbench.baselines.zoo.catalog import demo_plan

        zoo_names, report.skipped = demo_plan(full)
        names += [n for n in zoo_names if n not in names]
    sweep: dict[str, object] = {"jobs": int(jobs), "val": val}
    if fractions is not None:
        sweep["fractions"] = tuple(fractions)
    if seeds is not None:
        sweep["seeds"] = tuple(seeds)
    # a typo must fail in a second, not after the cohort is generated and every run has failed alike
    for name in names:
        ENCODERS.get(name)
    check_sweep(sweep.get("fractions", DEFAULT_FRACTIONS), sweep.get("seeds", DEFAULT_SEEDS))

    root = Path(data_dir) if data_dir is not None else data_root() / "synthetic"
    ensure_cohort(root, progress=progress, patients=_cohort_size(root, patients))
    report.timings["cohort"] = time.perf_counter() - t0

    for enc_name in names:
        try:
            options = dict((FULL_OPTIONS if full else DEMO_OPTIONS).get(enc_name, {}))
            if enc_name == "fmcib" and weights:
                options["weights"] = weights
            encoder = get_encoder(enc_name, **options)
        except WeightsError as exc:
            report.skipped[enc_name] = str(exc)
            logger.warning(
                "Skipping %s: its weights are not available (why, and how to get them, is printed at the end). The demo "
                "still runs the same architecture with random weights (fmcib-random-init) as a labelled control.", enc_name,
            )
            continue
        trainable = bool(getattr(encoder.meta, "trainable", False))
        for task_name in SYNTHETIC_TASKS + (() if trainable else EXTRA_TASKS):
            task = get_task(task_name, data_dir=root / task_name)
            t1 = time.perf_counter()
            try:
                result = scorer.evaluate(task, encoder, out_dir=out_dir, progress=progress, executor=executor, **sweep)
            except LesionbenchError as exc:
                report.skipped[f"{enc_name}/{task_name}"] = str(exc)
                # the reason is reported once, at the end (report.skipped), not also here
                logger.warning("%s on %s failed (%s); going on with the other runs.", enc_name, task_name, type(exc).__name__)
                continue
            report.timings[f"{enc_name}/{task_name}"] = time.perf_counter() - t1
            report.results.append(result)
            if use_mlflow:
                t3 = time.perf_counter()
                rdir = scorer.result_dir(out_dir, result.task.name, result.task.version, result.encoder.name, result.probe)
                tracking.log_result(result, rdir, tracking_uri=tracking_uri)
                report.timings["mlflow logging"] = report.timings.get("mlflow logging", 0.0) + time.perf_counter() - t3

    if not report.results:
        # nothing to show: one error with every reason, not an empty leaderboard page
        from lesionbench.benchmark.errors import ConfigurationError

        reasons = "\n".join(f"  - {what}: {why}" for what, why in report.skipped.items())
        raise ConfigurationError(f"The demo scored nothing; every run failed:\n{reasons}")

    t2 = time.perf_counter()
    from lesionbench.leaderboard import build_leaderboard
    from lesionbench.leaderboard.truth import Truth, registry_labels, registry_meta

    report.leaderboard = build_leaderboard(  # the test labels are the demo cohort's (the results hold none)
        out=out_dir / "leaderboard", results_dir=out_dir, tracking_uri=tracking_uri if use_mlflow else None,
        truth=Truth(lambda meta: registry_labels(meta, root), lambda name, version: registry_meta(name, version, root)),
    )
    report.timings["leaderboard"] = time.perf_counter() - t2
    report.timings["total"] = time.perf_counter() - t0
    return report


def _cohort_size(root: Path, patients: int | None) -> int:
    """The cohort size to use: an existing cohort in ``root`` is kept whatever its size (it is never
    regenerated over); ``patients`` that differs from it is an error rather than an overwrite."""
    import json

    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.tasks.synthetic import DEFAULT_PATIENTS

    info_path = root / "cohort.json"
    try:
        existing = int(json.loads(info_path.read_text())["patients"]) if info_path.is_file() else None
    except (ValueError, KeyError, TypeError):
        existing = None  # an unreadable record: the cohort is regenerated as when it is incomplete
    if existing is None:
        return patients if patients is not None else DEFAULT_PATIENTS
    if patients is not None and patients != existing:
        raise ConfigurationError(
            f"{root} already holds a synthetic cohort of {existing} patients; --patients {patients} would overwrite it "
            f"(and results of both would share a task version). Leave out --patients, or give another --data-dir."
        )
    return existing
