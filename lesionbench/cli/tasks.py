"""``lesionbench tasks``: list the registered tasks."""

from __future__ import annotations

import argparse
import sys


def add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="List the registered tasks.")
    p.add_argument("action", nargs="?", default="list", choices=["list"])
    p.set_defaults(func=cmd_tasks)


def cmd_tasks(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.encoders.plugins import TASKS

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
