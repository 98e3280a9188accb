"""``lesionbench synth``: generate the deterministic synthetic CT cohort."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionbench.cli._common import whole_number


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="Generate the synthetic CT cohort (the data of the synthetic_* tasks).",
        description="Generate the deterministic synthetic CT cohort: NIfTI volumes, lesion masks and the manifests "
        "of synthetic_site, synthetic_malignancy and synthetic_survival. Same --patients and --seed, same files.",
    )
    p.add_argument("--out", type=Path, help="output folder (default: $LESIONBENCH_DATA/synthetic, where the tasks look)")
    p.add_argument("--patients", type=whole_number(1), default=None, help="number of patients, 1-4 lesions each (default: 96, 211 lesions with seed 0)")
    p.add_argument("--seed", type=whole_number(0), default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=whole_number(1), default=None, help="parallel worker processes (default: CPU count, at most 4)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    import json
    import time

    from lesionbench.benchmark.host import usable_cores
    from lesionbench.tasks.synthetic import DEFAULT_PATIENTS, EXTRA_TASK_NAMES, TASK_NAMES, default_cohort_dir, generate_cohort

    out = args.out if args.out is not None else default_cohort_dir()
    patients = args.patients if args.patients is not None else DEFAULT_PATIENTS
    workers = args.workers if args.workers is not None else min(4, usable_cores())
    start = time.perf_counter()
    generate_cohort(out, patients=patients, seed=args.seed, workers=workers, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    info = json.loads((out / "cohort.json").read_text())
    sys.stdout.write(
        f"synthetic cohort: {info['patients']} patients, {info['lesions']} lesions (seed {info['seed']}) "
        f"in {elapsed:.1f} s -> {out}\n"
    )
    for task in TASK_NAMES + EXTRA_TASK_NAMES:
        sys.stdout.write(f"  {task:<30} {out / task / 'manifest.csv'}\n")
    if args.out is not None:  # elsewhere than where the tasks look by default
        sys.stdout.write(f"use it with: lesionbench run --task {TASK_NAMES[0]} --data-dir {out / TASK_NAMES[0]} ... (--data-dir {out}/<task>)\n")
    return 0
