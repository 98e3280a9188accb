"""Load on the challenge server, on loopback only and bounded in time: 50 concurrent readers of a phase's board
and 20 submitting clients (200 submissions in all), SQLite and PostgreSQL side by side.

The server runs in a process of its own (uvicorn, one worker, on 127.0.0.1 in the range 18500-18599 unless
--port) on a toy binary task, so the clients (asyncio + httpx, in this process) do not share its interpreter.
Before the load, 5 teams have scored submissions, so the board carries real statistics (CIs, rank
intervals, tests against the top); no worker runs during the load (submissions are accepted and queued).
After it, the database is counted: every accepted submission must be there ("none lost").

The 50 readers are `wrk` (Debian's package; a C load generator: 50 connections, one thread) while the 20
submitters run, when `wrk` is installed; `--readers httpx` (or no `wrk`) makes them asyncio tasks in this
process instead. On 2 cores the Python readers measure mostly themselves: their p95 includes the time a
response waits for this process's event loop (measured: p95 2.3 s with httpx readers where wrk saw 0.18 s
at the 99th percentile against the same server), so a run says which readers it used.

    python benchmarks/server_load.py                               # SQLite only
    python benchmarks/server_load.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Targets (issue 23, 2 cores): board p95 under 300 ms; 200 submissions accepted and queued in under 60 s with
no 5xx and none lost. Prints the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
N_READERS, N_SUBMITTERS, PER_SUBMITTER, N_SEEDED = 50, 20, 10, 5


def toy_task():
    """A binary task of 120 lesions (48 test), as in tests/server."""
    from lesionbench.benchmark.types import TaskKind, TaskMeta

    rows = [{"lesion_id": f"L{p:03d}-{j}", "patient_id": f"P{p:03d}", "split": ("train", "train", "val", "test", "test")[p % 5], "label": (p + j) % 2} for p in range(60) for j in range(2)]
    meta = TaskMeta(name="toy_binary", version="1", kind=TaskKind.BINARY, description="toy", main_metric="auc", metrics=("auc", "ap"))

    class Task:
        def __init__(self) -> None:
            self.meta = meta

        def manifest(self) -> pd.DataFrame:
            return pd.DataFrame(rows)

    return Task()


def predictions(seed: int) -> bytes:
    t = toy_task().manifest()
    t = t[t["split"] == "test"]
    rng = np.random.default_rng(seed)
    score = 0.35 * t["label"].to_numpy() * rng.random() + 0.65 * rng.random(len(t))
    buf = io.StringIO()
    pd.DataFrame({"lesion_id": t["lesion_id"], "score": score}).to_csv(buf, index=False)
    return buf.getvalue().encode()


def free_port() -> int:
    for port in range(18500, 18600):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18500-18599")


# ------------------------------------------------------------------------------- server side
def serve(folder: str, url: str, port: int) -> None:
    """The server process."""
    import uvicorn

    from lesionbench.server import open_server
    from lesionbench.server.app import create_app

    cfg = open_server(folder, database_url=url, task_loader=lambda name: toy_task(), migrate=False)
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=60)


def setup(folder: Path, url: str) -> dict:
    """Schema, organiser, challenge, one open phase, 25 teams with tokens; 5 of them scored."""
    from argon2 import PasswordHasher, profiles

    from lesionbench.server import auth, open_server, service
    from lesionbench.server.db import User
    from lesionbench.server.worker import run_worker

    auth.use_password_hasher(PasswordHasher.from_parameters(profiles.CHEAPEST))  # nobody signs in here
    cfg = open_server(folder, database_url=url, task_loader=lambda name: toy_task())
    tokens = []
    with cfg.db.session(lock=True) as s:
        org = User(email="org@example.org", display_name="org", password_hash=auth.hash_password("x" * 12), is_organiser=True)
        s.add(org)
        s.flush()
        ch = service.create_challenge(s, org, slug="load", title="Load", n_boot=1000)
        phase = service.create_phase(s, org, ch, name="public", kind="public", task="toy_binary", task_version="1", quota_per_window=PER_SUBMITTER, max_concurrent=PER_SUBMITTER, quota_total=100)
        service.set_phase_state(s, org, phase, "open")
        phase_id = phase.id
        for i in range(N_SEEDED + N_SUBMITTERS):
            u = User(email=f"p{i}@example.org", display_name=f"p{i}", password_hash=auth.hash_password("x" * 12))
            s.add(u)
            s.flush()
            service.create_team(s, u, ch, f"Team {i:02d}")
            tokens.append(auth.new_token(s, u, scopes=["read", "submit"])[1])
    for i in range(N_SEEDED):
        digest = cfg.blobs.put_bytes(predictions(1000 + i))
        with cfg.db.session() as s:
            service.accept_submission(cfg.db, s.get(User, i + 2), phase_id, kind="predictions", filename="seed.csv", digest=digest, size=0)
    run_worker(cfg.db, cfg.blobs, task_loader=lambda name: toy_task(), idle_exit_s=0, poll_s=0.01)
    cfg.db.engine.dispose()
    return {"phase": phase_id, "tokens": tokens[N_SEEDED:]}


# ------------------------------------------------------------------------------- client side
WRK_REPORT = """done = function(summary, latency, requests)
  io.write(string.format("LB %d %d %d %d %d\\n", latency:percentile(50), latency:percentile(95), summary.requests,
    summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def start_wrk(url: str, seconds: float, folder: Path) -> subprocess.Popen:
    """wrk with 50 connections on ``url`` for ``seconds``; its Lua ``done`` hook prints p50, p95 (µs), requests, duration (µs), errors."""
    script = folder / "report.lua"
    script.write_text(WRK_REPORT)
    return subprocess.Popen(["wrk", "-t1", f"-c{N_READERS}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(script), url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wrk_result(proc: subprocess.Popen) -> dict:
    out = proc.communicate(timeout=300)[0]
    line = next((ln for ln in out.splitlines() if ln.startswith("LB ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no report: {out[-500:]}")
    p50, p95, n, dur, errors = (int(x) for x in line.split()[1:])
    return {"board_requests": n, "board_p50_ms": round(p50 / 1000, 1), "board_p95_ms": round(p95 / 1000, 1), "board_per_s": round(n / (dur / 1e6), 1), "board_errors": errors}


async def load(base: str, phase: int, tokens: list[str], max_s: float, readers: str = "httpx", reader_s: float = 8.0, folder: Path | None = None) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=N_READERS + N_SUBMITTERS + 10)
    board_lat, submit_lat, codes = [], [], {}
    accepted = 0
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def reader() -> None:
            while not done.is_set():
                t = time.perf_counter()
                try:
                    r = await client.get(f"/api/v1/phases/{phase}/board")
                except httpx.TransportError as exc:  # a connection dropped under load: counted, not hidden
                    codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
                    continue
                board_lat.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        async def submitter(token: str, k: int) -> None:
            nonlocal accepted
            for j in range(PER_SUBMITTER):
                t = time.perf_counter()
                try:
                    r = await client.post(f"/api/v1/phases/{phase}/submissions", files={"file": ("p.csv", predictions(k * 100 + j), "text/csv")}, data={"kind": "predictions"}, headers={"Authorization": f"Bearer {token}"})
                except httpx.TransportError as exc:
                    codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
                    continue
                submit_lat.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                accepted += r.status_code == 202

        await client.get(f"/api/v1/phases/{phase}/board")  # the first build is not part of the load
        start = time.perf_counter()
        wrk = start_wrk(f"{base}/api/v1/phases/{phase}/board", reader_s, folder) if readers == "wrk" else None
        readers_ = [] if wrk else [asyncio.create_task(reader()) for _ in range(N_READERS)]
        try:
            await asyncio.wait_for(asyncio.gather(*(submitter(tok, k) for k, tok in enumerate(tokens))), timeout=max_s)
        except asyncio.TimeoutError:
            pass
        submit_s = time.perf_counter() - start
        done.set()
        await asyncio.gather(*readers_)
        total_s = time.perf_counter() - start
    ms = lambda xs, q: round(1000 * float(np.percentile(xs, q)), 1) if xs else None
    if wrk is not None:
        board = {"readers": "wrk", **await asyncio.to_thread(wrk_result, wrk), "reader_s": reader_s}
    else:
        board = {"readers": "httpx", "board_requests": len(board_lat), "board_p50_ms": ms(board_lat, 50), "board_p95_ms": ms(board_lat, 95),
                 "board_per_s": round(len(board_lat) / total_s, 1), "board_errors": 0, "reader_s": round(total_s, 1)}  # fmt: skip
    return {
        **board,
        "submissions_accepted": accepted, "submissions_s": round(submit_s, 1), "submit_p50_ms": ms(submit_lat, 50), "submit_p95_ms": ms(submit_lat, 95),
        "submit_per_s": round(len(submit_lat) / submit_s, 1), "status_codes": codes,
    }  # fmt: skip


def count_submissions(url: str) -> int:
    from sqlalchemy import func, select

    from lesionbench.server.db import Database, Submission

    db = Database.from_url(url)
    with db.session() as s:
        n = s.scalar(select(func.count(Submission.id)))
    db.engine.dispose()
    return int(n) - N_SEEDED


def run_backend(name: str, url: str, folder: Path, port: int, max_s: float, readers: str = "httpx", reader_s: float = 8.0) -> dict:
    info = setup(folder, url)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(folder), url, str(port)], env=env)
    try:
        import httpx

        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"{name}: the server did not start")
            time.sleep(0.2)
        out = asyncio.run(load(f"http://127.0.0.1:{port}", info["phase"], info["tokens"], max_s, readers, reader_s, folder))
    finally:
        proc.terminate()
        proc.wait(30)
    out["in_database"] = count_submissions(url)
    out["lost"] = max(0, out["submissions_accepted"] - out["in_database"])  # accepted (202) but not in the database
    return {"backend": name, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres-url", default=os.environ.get("LESIONBENCH_TEST_POSTGRES_URL"), help="a PostgreSQL server URL (a fresh database is created on it and dropped)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="bound on the submitting phase")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--readers", choices=("wrk", "httpx"), default="wrk" if shutil.which("wrk") else "httpx",
                    help="the 50 board readers: wrk (default where installed: apt-get install wrk) or asyncio tasks in this process")  # fmt: skip
    ap.add_argument("--reader-seconds", type=float, default=8.0, help="how long wrk reads the board (the submitters start with it)")
    args = ap.parse_args()
    if args.readers == "wrk" and not shutil.which("wrk"):
        ap.error("--readers wrk: wrk is not installed (apt-get install wrk), or use --readers httpx")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    results = []
    with tempfile.TemporaryDirectory(prefix="lesionbench-load-") as tmp:
        results.append(run_backend("sqlite", f"sqlite:///{tmp}/sqlite/lesionbench.db", Path(tmp) / "sqlite", free_port(), args.max_seconds, args.readers, args.reader_seconds))
        if args.postgres_url:
            import sqlalchemy as sa

            name = f"lbload_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                results.append(run_backend("postgresql", args.postgres_url.rsplit("/", 1)[0] + "/" + name, Path(tmp) / "pg", free_port(), args.max_seconds, args.readers, args.reader_seconds))
            finally:
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            print("PostgreSQL skipped: give --postgres-url or set LESIONBENCH_TEST_POSTGRES_URL")
    keys = ["readers", "reader_s", "board_p50_ms", "board_p95_ms", "board_per_s", "board_requests", "board_errors", "submissions_accepted", "submissions_s", "submit_p50_ms", "submit_p95_ms", "submit_per_s", "lost", "status_codes"]
    print(f"{'':<22}" + "".join(f"{r['backend']:>24}" for r in results))
    for k in keys:
        print(f"{k:<22}" + "".join(f"{json.dumps(r[k]) if isinstance(r[k], dict) else str(r[k]):>24}" for r in results))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
