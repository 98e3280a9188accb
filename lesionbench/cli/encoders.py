"""``lesionbench encoders``: list the encoders (no network)."""

from __future__ import annotations

import argparse
import sys


def add_encoders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help="List the encoders: recipe, embedding size, licences, weights present (no network).")
    p.add_argument("action", nargs="?", default="list", choices=["list"])
    p.set_defaults(func=cmd_encoders)


def cmd_encoders(args: argparse.Namespace) -> int:
    from lesionbench.baselines.zoo.catalog import format_rows, rows

    sys.stdout.write(format_rows(rows()) + "\n")
    return 0
