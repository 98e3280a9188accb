"""``lesionbench tasks``: list the registered tasks, and whether each one's data is prepared and where."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="List the registered tasks: kind, main metric, whether the data is prepared and where.")
    p.add_argument("action", nargs="?", default="list", choices=["list"], help="what to do (default: list)")
    p.set_defaults(func=cmd_tasks)


def data_state(factory: Any) -> tuple[str, str]:
    """``("yes" | "no" | "?", where)``: whether the task's default data folder holds its manifest.

    Building a task reads nothing (a manifest is read by ``manifest()``); a cross-cohort task needs both cohorts.
    """
    try:
        task = factory()
    except Exception as exc:  # noqa: BLE001 - a third-party factory that needs options: say so, list the rest
        return "?", f"({type(exc).__name__}: needs options)"
    if hasattr(task, "resolve_manifest_path"):
        path = Path(task.resolve_manifest_path())
        return ("yes" if path.is_file() else "no"), str(path.parent)
    folders = [Path(getattr(task, a)) for a in ("source_dir", "target_dir") if getattr(task, a, None) is not None]
    if folders:
        ready = all((f / "manifest.csv").is_file() for f in folders)
        return ("yes" if ready else "no"), " + ".join(str(f) for f in folders)
    return "?", ""


def cmd_tasks(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.encoders.plugins import TASKS

    rows = []
    for name in TASKS.names():
        factory = TASKS.get(name)
        meta = getattr(factory, "meta", None)
        ready, where = data_state(factory)
        if meta is None:
            rows.append((name, "?", "?", "", ready, where or TASKS.origin(name)))
        else:
            rows.append((name, meta.version, str(meta.kind), meta.main_metric, ready, where))
    head = ("name", "version", "kind", "main metric", "prepared", "data folder")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    for cols in (head, *rows):
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
    sys.stdout.write("Prepare a task with `lesionbench prepare NAME --raw DIR` (the synthetic ones: `lesionbench synth`); "
                     "--data-dir DIR points a command at a folder elsewhere.\n")  # fmt: skip
    return 0
