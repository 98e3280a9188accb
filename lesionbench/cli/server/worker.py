"""``lesionbench worker``: score queued challenge-server submissions."""

from __future__ import annotations

import argparse
import sys

from lesionbench.cli._common import add_dask_options, dask_client, whole_number
from lesionbench.cli.server.serve import add_server_location


def add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="Score queued challenge-server submissions (run one or more beside `lesionbench serve`).",
        description="Claim queued submissions from the server's database (leases: a killed worker's job is re-queued), "
        "score them with the harness's labels and record the result. Runs until stopped, or with --once until the queue is empty. "
        "With --dask or --dask-cluster the scoring itself runs on Dask workers (docs/scale-out.md); the claims stay here.",
    )
    add_server_location(p)
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--max-jobs", type=whole_number(1), help="stop after this many jobs")
    p.add_argument("--lease", type=whole_number(5), default=120, help="seconds a claim lasts unless renewed (default: 120)")
    add_dask_options(p)
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from lesionbench.server import open_server
    from lesionbench.server.worker import dask_executor, local_executor, run_worker

    cfg = open_server(args.folder, database_url=args.database_url)
    with dask_client(args) as client:  # --dask / --dask-cluster: the scoring runs on Dask workers (e.g. Slurm jobs)
        executor = local_executor if client is None else dask_executor(client)
        n = run_worker(cfg.db, cfg.blobs, lease_s=float(args.lease), max_jobs=args.max_jobs, idle_exit_s=0 if args.once else None, executor=executor)
    sys.stdout.write(f"worker: {n} job(s) processed.\n")
    return 0
