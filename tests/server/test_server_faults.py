"""Faults: a quota race, two workers on one job, a worker killed mid-job, a server restart, a job that
keeps failing on the server's side, and the migrations matching the models. SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest
from _server_fixtures import drain, predictions_csv, task_loader, upload
from sqlalchemy import select


def _set_phase(cfg, phase_id, **values):
    from lesionbench.server.db import Phase

    with cfg.db.session(lock=True) as s:
        p = s.get(Phase, phase_id)
        for k, v in values.items():
            setattr(p, k, v)


def test_ten_simultaneous_submissions_against_a_quota_of_five(world, tmp_path):
    from fastapi.testclient import TestClient

    pred = predictions_csv(tmp_path / "a.csv")
    barrier = threading.Barrier(10)
    codes = []
    lock = threading.Lock()

    def one(i):
        client = TestClient(world["client"].app)
        barrier.wait()
        r = client.post(f"/api/v1/phases/{world['phase']}/submissions", files={"file": (f"p{i}.csv", pred.read_bytes(), "text/csv")}, data={"kind": "predictions"}, headers=world["a"].headers)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [202] * 5 + [429] * 5, codes
    from lesionbench.server.db import Submission

    with world["cfg"].db.session() as s:
        assert len(s.scalars(select(Submission)).all()) == 5


def test_two_workers_one_job_scored_once(world, tmp_path):
    from lesionbench.server import jobs
    from lesionbench.server.db import Job, Submission

    cfg = world["cfg"]
    sid = upload(world["client"], world["a"], world["phase"], predictions_csv(tmp_path / "a.csv")).json()["id"]
    barrier = threading.Barrier(2)
    claims = []

    def claimer(name):
        barrier.wait()
        claims.append(jobs.claim(cfg.db, name))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(c is None for c in claims) == [False, True]  # one claim, one empty queue
    assert drain(cfg) == 0  # the claimed job is leased: nobody else takes it
    from lesionbench.server.worker import _TaskCache, process

    winner = next(c for c in claims if c is not None)
    assert process(cfg.db, cfg.blobs, winner, _TaskCache(task_loader), lease_s=60) == "scored"
    assert process(cfg.db, cfg.blobs, winner, _TaskCache(task_loader), lease_s=60) == "lost"  # a second completion is refused
    with cfg.db.session() as s:
        job = s.scalar(select(Job).where(Job.submission_id == sid))
        assert (job.state, job.attempts, s.get(Submission, sid).status) == ("done", 1, "scored")


def _slow_loader(name):
    time.sleep(120)
    return task_loader(name)


def _doomed_worker(url, blobs_root):
    from lesionbench.server.blobs import BlobStore
    from lesionbench.server.db import Database
    from lesionbench.server.worker import run_worker

    run_worker(Database.from_url(url), BlobStore(blobs_root), task_loader=_slow_loader, owner="doomed", lease_s=1.5, max_jobs=1)


def test_worker_killed_mid_job_is_requeued_scored_once_and_counted_once(world, tmp_path):
    from lesionbench.server.db import Job, Phase, Submission, utcnow
    from lesionbench.server.service import quota_state

    cfg = world["cfg"]
    sid = upload(world["client"], world["a"], world["phase"], predictions_csv(tmp_path / "a.csv")).json()["id"]
    proc = multiprocessing.get_context("fork").Process(target=_doomed_worker, args=(str(cfg.db.engine.url.render_as_string(hide_password=False)), str(cfg.blobs.root)))
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with cfg.db.session() as s:
            job = s.scalar(select(Job).where(Job.submission_id == sid))
            if job.state == "running" and job.lease_owner == "doomed":
                break
        time.sleep(0.1)
    else:
        raise AssertionError("the doomed worker never claimed the job")
    time.sleep(2.0)  # it renews its lease while it works
    with cfg.db.session() as s:
        assert s.scalar(select(Job).where(Job.submission_id == sid)).lease_expires_at > utcnow()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert drain(cfg) == 0  # the lease has not expired yet
    time.sleep(1.6)
    assert drain(cfg) == 1
    with cfg.db.session() as s:
        job = s.scalar(select(Job).where(Job.submission_id == sid))
        sub = s.get(Submission, sid)
        assert (job.state, job.attempts, sub.status, sub.counted) == ("done", 2, "scored", True)
        q = quota_state(s, s.get(Phase, world["phase"]), world["team_a"], utcnow())
        assert q["used_total"] == 1 and q["running"] == 0


def test_server_failures_never_count_and_end_as_infrastructure_failures(world, tmp_path):
    from lesionbench.server.db import Job, Phase, Submission, utcnow
    from lesionbench.server.service import quota_state
    from lesionbench.server.worker import run_worker

    cfg = world["cfg"]
    sid = upload(world["client"], world["a"], world["phase"], predictions_csv(tmp_path / "a.csv")).json()["id"]

    def broken(name):
        raise RuntimeError("disk on fire")

    assert run_worker(cfg.db, cfg.blobs, task_loader=broken, idle_exit_s=0, poll_s=0.01) == 3  # max_attempts
    with cfg.db.session() as s:
        sub = s.get(Submission, sid)
        assert (sub.status, sub.failure_class, sub.counted) == ("failed", "infrastructure", False)
        assert s.scalar(select(Job).where(Job.submission_id == sid)).state == "failed"
        assert quota_state(s, s.get(Phase, world["phase"]), world["team_a"], utcnow())["used_total"] == 0
    got = world["client"].get(f"/api/v1/submissions/{sid}", headers=world["a"].headers).json()
    assert got["failure_class"] == "infrastructure" and "does not count" in got["message"]


def test_restart_loses_nothing(world, tmp_path):
    from fastapi.testclient import TestClient

    from lesionbench.server import open_server
    from lesionbench.server.app import create_app

    cfg, c, a = world["cfg"], world["client"], world["a"]
    first = upload(c, a, world["phase"], predictions_csv(tmp_path / "a.csv")).json()["id"]
    drain(cfg)
    second = upload(c, a, world["phase"], predictions_csv(tmp_path / "b.csv", seed=3)).json()["id"]  # queued at the "crash"
    board_before = c.get(f"/api/v1/phases/{world['phase']}/board.csv").text
    url = cfg.db.engine.url.render_as_string(hide_password=False)
    cfg.db.engine.dispose()
    again = open_server(cfg.blobs.root.parent, database_url=url, task_loader=task_loader, n_perm=99)
    c2 = TestClient(create_app(again))
    assert c2.get(f"/api/v1/phases/{world['phase']}/board.csv").text == board_before
    assert c2.get(f"/api/v1/submissions/{second}", headers=a.headers).json()["status"] == "queued"
    assert drain(again) == 1
    got = {s["id"]: s["status"] for s in c2.get(f"/api/v1/phases/{world['phase']}/submissions", headers=a.headers).json()}
    assert got == {first: "scored", second: "scored"}
    again.db.engine.dispose()


def test_migrations_match_the_models(server):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from lesionbench.server.db import Base
    from lesionbench.server.migrate import current, head

    with server.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert current(server.db.engine.url.render_as_string(hide_password=False)) == head() != ""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scoring_on_dask_workers(world, tmp_path):
    distributed = pytest.importorskip("distributed", reason="needs dask[distributed] (test extra)")
    from lesionbench.server.worker import dask_executor, run_worker

    cfg = world["cfg"]
    good = upload(world["client"], world["a"], world["phase"], predictions_csv(tmp_path / "a.csv")).json()["id"]
    bad = tmp_path / "bad.csv"
    bad.write_text("lesion_id,score\nL000-0,7\n")
    wrong = upload(world["client"], world["b"], world["phase"], bad).json()["id"]
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        assert run_worker(cfg.db, cfg.blobs, task_loader=task_loader, idle_exit_s=0, poll_s=0.01, executor=dask_executor(client)) == 2
    from lesionbench.server.db import Submission

    with cfg.db.session() as s:
        assert s.get(Submission, good).status == "scored"
        assert (s.get(Submission, wrong).status, s.get(Submission, wrong).failure_class) == ("failed", "submission")  # the file's fault, raised on the Dask worker
