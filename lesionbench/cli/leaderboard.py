"""``lesionbench leaderboard build``: the HTML page, Markdown and JSON from the logged runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lesionbench.cli._common import add_n_boot, whole_number


def add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="Build the leaderboard (HTML page, Markdown, JSON) from the logged runs.")
    actions = p.add_subparsers(dest="leaderboard_action", metavar="ACTION")
    actions.required = True
    b = actions.add_parser(
        "build",
        help="Write index.html, leaderboard.md, leaderboard.json and its schema.",
        description="Read results from an MLflow store (parent runs' result.json) and/or a results folder and write a "
        "self-contained leaderboard page, Markdown and JSON. Published FMCIB numbers are shown as reference rows.",
    )
    b.add_argument("--tracking-uri", help="MLflow tracking URI to read runs from (default: $MLFLOW_TRACKING_URI; with neither option: ./mlflow.db if present)")
    b.add_argument("--organiser-dir", type=Path, help="organiser store that --reveal reads the final private scores from (default: lesionbench-organiser beside --results or the sqlite MLflow store)")
    b.add_argument("--results", type=Path, metavar="DIR", help="results folder that `lesionbench run` wrote (with neither option: ./lesionbench-results if present)")
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="the page's folder (replaced as a whole; refused if it holds other files)")
    b.add_argument("--data-root", type=Path, help="folder holding each task's prepared data as <task>/, whose test labels the statistics use "
                   "(the results hold none; default: each task's own folder, as `lesionbench tasks list` shows it)")  # fmt: skip
    b.add_argument("--reveal", action="store_true", help="show the submissions' private scores (organisers only)")
    add_n_boot(b, help="bootstrap resamples for rank intervals and paired tests")
    b.add_argument("--n-perm", type=whole_number(0), default=1000, help="permutations for the paired tests")
    b.add_argument("--correction", choices=("auto", "maxt", "holm"), default="auto",
                   help="multiplicity correction of the tests against the top entry over all pairs of a section's entries: "
                   "step-down max-T on joint permutations (maxt), Holm (holm), or auto: max-T from three entries on")  # fmt: skip
    b.add_argument("--no-published", action="store_true", help="leave out the published reference rows")
    b.add_argument("--experiment", action="append", metavar="NAME",
                   help="MLflow experiment to read (repeatable; default: lesionbench, the one `run` and `submit` log to)")  # fmt: skip
    b.add_argument("--from-server", type=Path, metavar="FOLDER", help="export the boards of a challenge server (its organiser folder; database: $LESIONBENCH_DATABASE_URL or the folder's SQLite) as a static site: what anonymous readers see")
    b.set_defaults(func=cmd_leaderboard_build)


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from lesionbench.leaderboard import build_leaderboard
    from lesionbench.leaderboard.truth import Truth, registry_labels, registry_meta

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.from_server is not None:
        from lesionbench.server import open_server
        from lesionbench.server.board import Boards, export_site

        cfg = open_server(args.from_server, migrate=False, n_perm=args.n_perm)
        index = export_site(Boards(cfg.db, cfg.blobs, cfg.task_meta, n_perm=args.n_perm), args.out)
        sys.stdout.write(f"challenge boards written: open {index.resolve().as_uri()}\n")
        return 0
    results = args.results
    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if tracking is None and results is None:
        # What `lesionbench run` writes by default: ./mlflow.db and ./lesionbench-results.
        tracking = "sqlite:///mlflow.db" if Path("mlflow.db").is_file() else None
        results = Path("lesionbench-results") if Path("lesionbench-results").is_dir() else None
    index = build_leaderboard(
        args.out, tracking_uri=tracking, results_dir=results, reveal=args.reveal,
        n_boot=args.n_boot, n_perm=args.n_perm, include_published=not args.no_published, organiser_dir=args.organiser_dir,
        experiments=args.experiment, correction=args.correction, truth=Truth(lambda meta: registry_labels(meta, args.data_root), lambda name, version: registry_meta(name, version, args.data_root)),
    )
    sys.stdout.write(f"leaderboard written: open {index.resolve().as_uri()}\n")
    return 0
