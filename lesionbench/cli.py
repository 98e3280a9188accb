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


# ------------------------------------------------------------------------------------- parser
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_tasks,
    _add_validate,
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
