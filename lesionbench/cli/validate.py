"""``lesionbench validate``: check a lesion manifest and list every problem found."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="Check a lesion manifest and list every problem found.")
    p.add_argument("manifest", type=Path, help="manifest CSV or Parquet")
    p.add_argument("--task", help="check the label columns and classes of this task")
    p.add_argument("--no-files", action="store_true", help="do not check the image files (that they exist, their headers, seeds inside)")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.data.manifest import load_manifest
    from lesionbench.benchmark.encoders.plugins import TASKS

    meta = TASKS.get(args.task).meta if args.task else None
    df = load_manifest(args.manifest, meta=meta, check_files=not args.no_files, check_images=not args.no_files)
    n_pat = df["patient_id"].nunique()
    counts = df["split"].value_counts().to_dict()
    sys.stdout.write(
        f"{args.manifest}: valid; {len(df)} lesions, {n_pat} patients, "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + "\n"
    )
    return 0
