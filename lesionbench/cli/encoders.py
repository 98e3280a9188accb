"""``lesionbench encoders``: list the encoders (no network)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any


def add_encoders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help="List the encoders: family, embedding size, weights present, origin (no network).",
                       description="List every encoder: the built-in ones, the model zoo (per recipe and random-init control) and "
                       "third-party plug-ins. The default view is one short line each; --long adds recipes, licences and where "
                       "each weights file comes from; --json prints everything as JSON.")  # fmt: skip
    p.add_argument("action", nargs="?", default="list", choices=["list"], help="what to do (default: list)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--long", action="store_true", help="recipe, embedding, licences and the weights file of each encoder")
    view.add_argument("--json", action="store_true", help="every field of every encoder as a JSON list")
    p.set_defaults(func=cmd_encoders)


def _origin(name: str) -> str:
    """``built-in``, or where a third-party plug-in comes from (its entry point)."""
    from lesionbench.benchmark.errors import LesionbenchError
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    try:
        origin = ENCODERS.origin(name.split(":")[0])
    except LesionbenchError:
        return "built-in"
    # the module the entry point names
    return f"plug-in: {origin.removeprefix('entry point ').split(':')[0]}" if origin.startswith("entry point") else "built-in"


def _weights(text: str) -> str:
    """The weights column in one word: present, absent, random (a seeded control) or not needed."""
    if text.startswith("present"):
        return "present"
    if text.startswith("absent"):
        return "absent"
    return "random" if "random" in text else "not needed"


def compact_rows() -> list[dict[str, Any]]:
    """One dict per encoder with the catalogue's fields plus ``family``, ``weights_state`` and ``origin``."""
    from lesionbench.baselines.zoo.catalog import rows

    out = []
    for r in rows():
        family = r.name.split(":")[0].removesuffix("-random-init")
        out.append({**dataclasses.asdict(r), "family": family, "weights_state": _weights(r.weights), "origin": _origin(r.name)})
    return out


def cmd_encoders(args: argparse.Namespace) -> int:
    from lesionbench.baselines.zoo.catalog import format_rows, rows

    if args.long:
        sys.stdout.write(format_rows(rows()) + "\n")
        return 0
    table = compact_rows()
    if args.json:
        sys.stdout.write(json.dumps(table, indent=1) + "\n")
        return 0
    head = ("encoder", "family", "embedding", "weights", "origin")
    lines = [(d["name"], d["family"], d["embedding"], d["weights_state"] + (" (non-commercial)" if d["non_commercial"] else ""), d["origin"]) for d in table]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    for cols in (head, *lines):
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
    sys.stdout.write("--long: recipes, licences and weights files; --json: every field. Weights 'absent': --weights PATH, a download, or --random-init.\n")
    return 0
