"""Fixtures of the challenge-server tests: a small binary task, the database on SQLite and (where
LESIONBENCH_TEST_POSTGRES_URL names a server) PostgreSQL, the app under FastAPI's TestClient, and the
people of the authorisation matrix (organiser, two teams' participants, anonymous)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.types import TaskKind, TaskMeta

PG_ENV = "LESIONBENCH_TEST_POSTGRES_URL"
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class FakeTask:
    """A task: meta and a manifest (no images: the server only scores files)."""

    meta: TaskMeta
    table: pd.DataFrame

    def manifest(self) -> pd.DataFrame:
        return self.table.copy()


def make_task(name: str = "toy_binary", n_patients: int = 60, seed: int = 0) -> FakeTask:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        split = ("train", "train", "val", "test", "test")[p % 5]
        for j in range(2):
            rows.append({"lesion_id": f"L{p:03d}-{j}", "patient_id": f"P{p:03d}", "split": split, "label": int((p + j) % 2), "image_path": "x.nii.gz", "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0})
    df = pd.DataFrame(rows)
    df["f0"] = df["label"] + rng.normal(0, 0.5, len(df))
    meta = TaskMeta(name=name, version="1", kind=TaskKind.BINARY, description="toy", main_metric="auc", metrics=("auc", "ap"), class_names=("benign", "malignant"))
    return FakeTask(meta, df)


TASKS = {"toy_binary": make_task()}


def task_loader(name: str) -> FakeTask:
    from lesionbench.benchmark.errors import UnknownNameError

    if name not in TASKS:
        raise UnknownNameError(f"Unknown task {name!r}. Available: {', '.join(TASKS)}")
    return TASKS[name]


def predictions_csv(path: Path, *, quality: float = 1.0, seed: int = 0, task: FakeTask | None = None) -> Path:
    """Predictions for every test lesion: ``quality`` 1 follows the labels closely, 0 is noise."""
    task = task or TASKS["toy_binary"]
    test = task.table[task.table["split"] == "test"]
    rng = np.random.default_rng(seed)
    score = 0.35 * quality * test["label"].to_numpy() + 0.65 * rng.random(len(test))
    pd.DataFrame({"lesion_id": test["lesion_id"], "score": score}).to_csv(path, index=False)
    return path


def _pg_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Databases migrated once per session, copied for each test (Alembic per test costs ~1 s)."""
    from lesionbench.server.migrate import upgrade

    made: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in made:
            if kind == "sqlite":
                path = tmp_path_factory.mktemp("db-template") / "template.db"
                upgrade(f"sqlite:///{path}")
                made[kind] = str(path)
            else:
                import sqlalchemy as sa

                name = f"lbtemplate_{uuid.uuid4().hex[:12]}"
                admin = sa.create_engine(_pg_url(), isolation_level="AUTOCOMMIT")
                with admin.connect() as c:
                    c.execute(sa.text(f'CREATE DATABASE "{name}"'))
                admin.dispose()
                upgrade(_pg_url().rsplit("/", 1)[0] + "/" + name)
                made[kind] = name
        return made[kind]

    yield get
    if "postgresql" in made:
        import sqlalchemy as sa

        admin = sa.create_engine(_pg_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{made["postgresql"]}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, _templates: Any) -> Any:
    """A fresh database at the newest schema: SQLite in tmp_path, or a new PostgreSQL database (dropped afterwards)."""
    if request.param == "sqlite":
        import shutil

        path = tmp_path / "organiser" / "lesionbench.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_templates("sqlite"), path)
        yield f"sqlite:///{path}"
        return
    base = _pg_url()
    if base is None:
        if os.environ.get("LESIONBENCH_POSTGRES_REQUIRED"):
            pytest.fail(f"LESIONBENCH_POSTGRES_REQUIRED is set but {PG_ENV} is not")
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres); .ci/run starts one")
    import sqlalchemy as sa

    name = f"lbtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{_templates("postgresql")}"'))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Any:
    """A ServerConfig on a migrated database, with fast statistics (n_perm 99; the challenges use n_boot 50)."""
    from lesionbench.server import open_server

    cfg = open_server(tmp_path / "organiser", database_url=database_url, task_loader=task_loader, n_perm=99, migrate=False)
    yield cfg
    cfg.db.engine.dispose()


@dataclass
class Person:
    name: str
    token: str | None
    user_id: int | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def add_user(cfg: Any, email: str, *, organiser: bool = False, scopes: tuple[str, ...] = ("read", "submit")) -> Person:
    from lesionbench.server.auth import hash_password, new_token
    from lesionbench.server.db import User

    with cfg.db.session(lock=True) as s:
        u = User(email=email, display_name=email.split("@")[0], password_hash=hash_password(PASSWORD), is_organiser=organiser)
        s.add(u)
        s.flush()
        _, token = new_token(s, u, scopes=list(scopes) + (["admin"] if organiser else []))
        return Person(email.split("@")[0], token, u.id)


@pytest.fixture
def world(server: Any) -> Any:
    """Organiser, challenge with an open public phase on toy_binary, teams A and B with one participant each."""
    from fastapi.testclient import TestClient

    from lesionbench.server.app import create_app

    client = TestClient(create_app(server))
    org = add_user(server, "org@example.org", organiser=True)
    a = add_user(server, "alice@example.org")
    b = add_user(server, "bob@example.org")
    r = client.post("/api/v1/challenges", json={"slug": "toy", "title": "Toy", "n_boot": 50}, headers=org.headers)
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/challenges/toy/phases", json={"name": "public", "kind": "public", "task": "toy_binary", "quota_per_window": 5, "max_concurrent": 10}, headers=org.headers)
    assert r.status_code == 201, r.text
    phase = r.json()["id"]
    assert client.post(f"/api/v1/phases/{phase}/state/open", headers=org.headers).status_code == 200
    ta = client.post("/api/v1/challenges/toy/teams", json={"name": "Team A"}, headers=a.headers)
    tb = client.post("/api/v1/challenges/toy/teams", json={"name": "Team B"}, headers=b.headers)
    assert ta.status_code == 201 and tb.status_code == 201, (ta.text, tb.text)
    return {"client": client, "cfg": server, "org": org, "a": a, "b": b, "anon": Person("anon", None, None), "phase": phase, "team_a": ta.json()["id"], "team_b": tb.json()["id"]}


def upload(client: Any, person: Person, phase: int, path: Path, kind: str = "predictions") -> Any:
    with open(path, "rb") as f:
        return client.post(f"/api/v1/phases/{phase}/submissions", files={"file": (path.name, f, "text/csv")}, data={"kind": kind}, headers=person.headers)


def drain(cfg: Any, **kw: Any) -> int:
    """Score every queued job in this process."""
    from lesionbench.server.worker import run_worker

    return run_worker(cfg.db, cfg.blobs, task_loader=task_loader, idle_exit_s=0, poll_s=0.01, **kw)


def free_port() -> int:
    """A free loopback port (18500-18599 first: this machine's agreed range; else any)."""
    import socket

    for port in [*range(18500, 18600), 0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread (stopped by ``stop``); a port taken between the
    check and the bind (another xdist worker) is retried with the next free one."""

    def __init__(self, app: Any):
        import threading
        import time

        import uvicorn

        for _ in range(5):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
            self.thread = threading.Thread(target=self.server.run, daemon=True)
            self.thread.start()
            end = time.monotonic() + 30
            while not self.server.started and self.thread.is_alive() and time.monotonic() < end:
                time.sleep(0.05)
            if self.server.started:
                return
            self.stop()
        raise RuntimeError("uvicorn did not start on 127.0.0.1")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
