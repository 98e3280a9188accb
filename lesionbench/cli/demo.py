"""``lesionbench demo``: the whole benchmark on the embedded synthetic cohort."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionbench.cli._common import (
    add_data_dir,
    add_parallel_options,
    add_results_dir,
    add_sweep_options,
    add_tracking_options,
    add_val_option,
    dask_client,
    summary_table,
    whole_number,
)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="Run the whole benchmark on the embedded synthetic cohort (generated when absent).",
        description="Generate the synthetic CT cohort when absent, run every available encoder on the three synthetic "
        "tasks (features through the cache, limited-label probes, bootstrap CIs), log every run to MLflow and build "
        "the leaderboard. Offline, FMCIB's released weights cannot be fetched: the demo says so once and runs the "
        "same architecture with random weights (fmcib-random-init) as a labelled control.",
    )
    add_results_dir(p, old_out=True)
    add_data_dir(p, help="synthetic cohort folder (default: $LESIONBENCH_DATA/synthetic)")
    p.add_argument("--patients", type=whole_number(1), help="cohort size when it is generated (default: 96, as `lesionbench synth`)")
    p.add_argument("--encoders", nargs="+", help="encoders to run (default: every available one)")
    p.add_argument("--weights", type=Path, help="FMCIB weights file (model_weights.torch) if you have it")
    add_sweep_options(p)
    add_val_option(p, help="what tunes each limited-label run (C, threshold, Cox penalty, early stopping): 'fraction' a "
                   "validation subset with the run's training fraction; 'full' the whole validation split (the paper's protocol)")  # fmt: skip
    p.add_argument("--full", action="store_true", help="also run the heavy variants (supervised-resnet50, full radiomics, the zoo's random-init controls)")
    p.add_argument("--random-init", action="store_true",
                   help="run the random-init controls of --encoders (default: of every zoo model, with the default encoders)")  # fmt: skip
    add_tracking_options(p, experiment=False)
    add_parallel_options(p, jobs="(fraction, seed) runs fitted in parallel processes (default: the usable CPU cores, at most 4; "
                         "the numbers do not depend on it)", jobs_default=None)  # fmt: skip
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.host import usable_cores
    from lesionbench.demo import run_demo

    encoders = args.encoders
    if args.random_init:
        from lesionbench.demo import demo_random_init

        encoders = demo_random_init(args.encoders)
    with dask_client(args) as client:
        report = run_demo(
            client=client,
            out_dir=args.results,
            data_dir=args.data_dir,
            tracking_uri=args.tracking_uri,
            encoders=encoders,
            fractions=args.fractions,
            seeds=args.seeds,
            weights=str(args.weights) if args.weights else None,
            full=args.full,
            patients=args.patients,
            use_mlflow=not args.no_mlflow,
            progress=not args.quiet,
            jobs=args.jobs if args.jobs is not None else min(4, usable_cores()),
            val=args.val,
        )
    for result in report.results:
        sys.stdout.write(summary_table(result) + "\n")
    for what, why in report.skipped.items():
        sys.stdout.write(f"skipped {what}: {why}\n")
    sys.stdout.write("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report.timings.items()) + "\n")
    if report.leaderboard is not None:
        sys.stdout.write(f"leaderboard: open {report.leaderboard.resolve()} in a browser\n")
    return 0 if report.results else 1
