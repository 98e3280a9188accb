"""``lesionbench serve``: run the challenge server; ``lesionbench submissions``: a team's submissions on a server."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from lesionbench.cli._common import whole_number

logger = logging.getLogger(__name__)

FOLDER_HELP = "organiser folder: the SQLite database (unless $LESIONBENCH_DATABASE_URL or --database-url), uploads, session key (default: ./lesionbench-server)"


def add_server_location(p: argparse.ArgumentParser) -> None:
    """--folder and --database-url, shared by serve, worker and db."""
    p.add_argument("--folder", type=Path, default=Path("lesionbench-server"), help=FOLDER_HELP)
    p.add_argument("--database-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: $LESIONBENCH_DATABASE_URL, else SQLite in --folder)")


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="Run the challenge server (web pages and API); --demo sets up a challenge on the synthetic tasks.",
        description="Run the challenge server with uvicorn: participants sign in, create API tokens, form teams and submit "
        "predictions or embeddings; workers score them with the harness's labels; the board shows CIs, rank intervals and "
        "tied-with-the-top tiers. The database is upgraded to the newest schema first.",
    )
    p.add_argument("--demo", action="store_true", help="create a demo challenge on the synthetic tasks (generated on first use) with an organiser account, and score in this process")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; put a TLS reverse proxy in front for anything else)")
    p.add_argument("--port", type=whole_number(1), default=8000, help="port (default: 8000)")
    add_server_location(p)
    p.add_argument("--worker-threads", type=whole_number(0), default=None, help="score submissions in this process with N threads (default: 1 with --demo, else 0: run `lesionbench worker`)")
    p.add_argument("--secure-cookies", action="store_true", help="mark the session cookie Secure (behind HTTPS)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from lesionbench.server import open_server
    from lesionbench.server.app import create_app
    from lesionbench.server.worker import default_task_loader, run_worker

    loader = default_task_loader
    if args.demo:
        from lesionbench.server.demo import setup_demo, synthetic_task_loader

        loader = synthetic_task_loader
    cfg = open_server(args.folder, database_url=args.database_url, task_loader=loader, secure_cookies=args.secure_cookies)
    base = f"http://{args.host}:{args.port}"
    if args.demo:
        info = setup_demo(cfg, args.folder, task_loader=loader)
        sys.stdout.write(
            f"demo challenge ready: {base}/c/{info['slug']}\n"
            f"organiser: {info['organiser_email']}, password in {info['password_file']}\n"
            "participants: sign up on the page, create a team, upload e.g.\n"
            + "".join(f"  {p}\n" for p in info["examples"].values())
        )
    threads = args.worker_threads if args.worker_threads is not None else (1 if args.demo else 0)
    for i in range(threads):
        threading.Thread(target=run_worker, args=(cfg.db, cfg.blobs), kwargs={"task_loader": loader, "owner": f"serve-thread-{i}"}, daemon=True).start()
    sys.stdout.write(f"serving on {base} (Ctrl-C stops)\n")
    sys.stdout.flush()
    uvicorn.run(create_app(cfg), host=args.host, port=args.port, log_level="warning", proxy_headers=True)
    return 0


def add_submissions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submissions",
        help="List your team's submissions on a challenge server (status, failure class, public score with CI).",
        description="List the team's submissions in a phase of a challenge server. The API token comes from --token-file, "
        "$LESIONBENCH_TOKEN, or ~/.config/lesionbench/token.",
    )
    p.add_argument("--server", required=True, help="server URL, e.g. https://challenge.example.org")
    p.add_argument("--phase", required=True, type=whole_number(1), help="phase id (shown on the challenge page)")
    p.add_argument("--token-file", type=Path, help="file holding the API token")
    p.set_defaults(func=cmd_submissions)


def cmd_submissions(args: argparse.Namespace) -> int:
    from lesionbench.server.client import ChallengeClient, format_submission

    token = args.token_file.read_text().strip() if args.token_file else None
    client = ChallengeClient(args.server, token)
    subs = client.submissions(args.phase)
    for s in subs:
        sys.stdout.write(format_submission(s) + "\n")
    if not subs:
        sys.stdout.write("no submissions yet.\n")
    return 0
