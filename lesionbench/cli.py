"""The ``lesionbench`` command line.

Each sub-command is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_cmd_<name>(args) -> int`` runs it. Library errors (:class:`LesionbenchError`) are printed as one
clear message with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lesionbench import __version__
from lesionbench.benchmark.errors import LesionbenchError

logger = logging.getLogger("lesionbench")

# MLflow phones home on first use unless told not to; lesionbench never wants that by default.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# --------------------------------------------------------------------------------------- tasks
def _add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="List the registered tasks.")
    p.add_argument("action", nargs="?", default="list", choices=["list"])
    p.set_defaults(func=_cmd_tasks)


def _cmd_tasks(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.plugins import TASKS

    rows = []
    for name in TASKS.names():
        factory = TASKS.get(name)
        meta = getattr(factory, "meta", None)
        if meta is None:
            rows.append((name, "?", "?", "", TASKS.origin(name)))
        else:
            rows.append((name, meta.version, str(meta.kind), meta.main_metric, meta.description))
    width = max(len(r[0]) for r in rows) if rows else 4
    sys.stdout.write(f"{'name':<{width}}  {'version':<16} {'kind':<10} {'main metric':<18} description\n")
    for name, version, kind, metric, desc in rows:
        sys.stdout.write(f"{name:<{width}}  {version:<16} {kind:<10} {metric:<18} {desc}\n")
    return 0


# ------------------------------------------------------------------------------------ validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="Check a lesion manifest and list every problem found.")
    p.add_argument("manifest", type=Path, help="manifest CSV or Parquet")
    p.add_argument("--task", help="check the label columns and classes of this task")
    p.add_argument("--no-files", action="store_true", help="do not check that image files exist")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.manifest import load_manifest
    from lesionbench.benchmark.plugins import TASKS

    meta = TASKS.get(args.task).meta if args.task else None
    df = load_manifest(args.manifest, meta=meta, check_files=not args.no_files)
    n_pat = df["patient_id"].nunique()
    counts = df["split"].value_counts().to_dict()
    sys.stdout.write(
        f"{args.manifest}: valid; {len(df)} lesions, {n_pat} patients, "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + "\n"
    )
    return 0



# ------------------------------------------------------------------------------------- prepare
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="Build a task's volumes and manifest from the public raw data.",
        description="Build a task's volumes and manifest from the public raw data. Resumable and idempotent: "
        "files already converted are kept. Task-specific options are passed to the task's prepare step; "
        "a task that does not take one says so.",
    )
    p.add_argument("task", help="task name (see `lesionbench tasks list`)")
    p.add_argument("--raw", type=Path, help="folder with the raw public download")
    p.add_argument("--out", type=Path, help="output folder (default: $LESIONBENCH_DATA/<task>)")
    p.add_argument("--split", help="split variant, e.g. grouped (default) or fmcib (the published split)")
    p.add_argument("--label-variant", help="label variant, e.g. fmcib (the published labels)")
    p.add_argument("--labels-only", action="store_true", default=None, help="write the label table only, no images")
    p.add_argument("--luna16-annotations", type=Path, help="LUNA16 annotations.csv (or any CSV with a seriesuid column)")
    p.add_argument("--clinical", type=Path, help="the collection's clinical table")
    p.add_argument("--workers", type=int, help="parallel worker processes")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.paths import data_root
    from lesionbench.benchmark.plugins import TASKS

    factory = TASKS.get(args.task)
    prepare = getattr(factory, "prepare", None)
    if prepare is None:
        raise ConfigurationError(f"Task {args.task!r} has no prepare step: its data ships with it or is made by `lesionbench synth`.")
    options = {
        k: v
        for k, v in vars(args).items()
        if k in ("split", "label_variant", "labels_only", "luna16_annotations", "clinical", "workers") and v is not None
    }
    out = args.out or data_root() / args.task
    try:
        manifest = prepare(raw=args.raw, out=out, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigurationError(f"Task {args.task!r} does not take option(s) {sorted(options)}: {exc}.") from exc
    sys.stdout.write(f"prepared {args.task}: {manifest}\n")
    return 0


# --------------------------------------------------------------------------------------- synth
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="Generate the synthetic CT cohort (the data of the synthetic_* tasks).",
        description="Generate the deterministic synthetic CT cohort: NIfTI volumes, lesion masks and the manifests "
        "of synthetic_site, synthetic_malignancy and synthetic_survival. Same --patients and --seed, same files.",
    )
    p.add_argument("--out", type=Path, help="output folder (default: $LESIONBENCH_DATA/synthetic, where the tasks look)")
    p.add_argument("--patients", type=int, default=None, help="number of patients, 1-4 lesions each (default: 64, about 160 lesions)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=None, help="parallel worker processes (default: CPU count, at most 4)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    import json
    import time

    from lesionbench.tasks.synthetic import DEFAULT_PATIENTS, TASK_NAMES, default_cohort_dir, generate_cohort

    out = args.out if args.out is not None else default_cohort_dir()
    patients = args.patients if args.patients is not None else DEFAULT_PATIENTS
    workers = args.workers if args.workers is not None else max(1, min(4, os.cpu_count() or 1))
    start = time.perf_counter()
    generate_cohort(out, patients=patients, seed=args.seed, workers=workers, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    info = json.loads((out / "cohort.json").read_text())
    sys.stdout.write(
        f"synthetic cohort: {info['patients']} patients, {info['lesions']} lesions (seed {info['seed']}) "
        f"in {elapsed:.1f} s -> {out}\n"
    )
    for task in TASK_NAMES:
        sys.stdout.write(f"  {task:<22} {out / task / 'manifest.csv'}\n")
    return 0


# ------------------------------------------------------------------------------------ download
def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="Download a dataset's public DICOM from NCI Imaging Data Commons (needs idc-index).",
        description="Resolve the dataset's series from idc-index's offline index, report patients, series and "
        "size, then download them (resumable) with the clinical table. --dry-run only reports (works offline).",
    )
    p.add_argument("dataset", choices=["lung1", "radio", "lidc"], help="lung1 (NSCLC-Radiomics), radio (NSCLC-Radiogenomics), lidc (LIDC-IDRI)")
    p.add_argument("--out", type=Path, help="download folder (then: lesionbench prepare TASK --raw this folder)")
    p.add_argument("--dry-run", action="store_true", help="print the patients, series and total size; download nothing")
    p.add_argument("--patients", nargs="+", metavar="ID", help="only these PatientIDs (e.g. to try a few first)")
    p.set_defaults(func=_cmd_download)


def _cmd_download(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.tasks import _idc

    plan = _idc.resolve_download(args.dataset, patients=args.patients)
    if args.dry_run:
        sys.stdout.write(f"{'PatientID':<16} {'Modality':<9} {'instances':>9} {'MB':>9}  SeriesInstanceUID\n")
        for row in plan.series.itertuples(index=False):
            sys.stdout.write(
                f"{row.PatientID:<16} {row.Modality:<9} {int(row.instanceCount):>9} {row.series_size_MB:>9.1f}  {row.SeriesInstanceUID}\n"
            )
        sys.stdout.write(f"dry run, nothing downloaded: {plan.summary()}\n")
        return 0
    if args.out is None:
        raise ConfigurationError("lesionbench download needs --out DIR (or --dry-run to only list what it would fetch).")
    sys.stdout.write(f"downloading {plan.summary()}\n")
    out = _idc.download(plan, args.out)
    sys.stdout.write(f"downloaded into {out}; next: lesionbench prepare TASK --raw {out}\n")
    return 0


# ------------------------------------------------------------------------------------- parser
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_tasks,
    _add_validate,
    _add_prepare,
    _add_synth,
    _add_download,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionbench",
        description="Benchmark 3D CT foundation models on cancer-imaging biomarker tasks.",
    )
    parser.add_argument("--version", action="version", version=f"lesionbench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except LesionbenchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept (caches and logged runs); re-run to resume.\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
