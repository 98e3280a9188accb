"""The command line against a live server: `submit --server`, `submissions`, `db upgrade/current`, bad input."""

from __future__ import annotations

import threading

import pytest
from _server_fixtures import LiveServer, predictions_csv, task_loader

from lesionbench.cli import main


@pytest.fixture
def live(world):
    from lesionbench.server.worker import run_worker

    srv = LiveServer(world["client"].app)
    cfg = world["cfg"]
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(cfg.db, cfg.blobs), kwargs={"task_loader": task_loader, "poll_s": 0.1, "stop": stop}, daemon=True)
    worker.start()
    yield srv.url
    stop.set()
    worker.join(30)
    srv.stop()


def test_submit_to_server_and_list(world, live, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LESIONBENCH_TOKEN", world["a"].token)
    pred = predictions_csv(tmp_path / "p.csv")
    card = tmp_path / "card.json"
    card.write_text('{"model": "my-encoder", "licence": "MIT", "pretraining_sets": ["DeepLesion"]}')
    assert main(["submit", "--server", live, "--phase", str(world["phase"]), str(pred), "--wait", "--model-card", str(card)]) == 0
    out = capsys.readouterr().out
    assert "queued" in out and "scored" in out and "public auc" in out and "95% CI" in out
    assert main(["submissions", "--server", live, "--phase", str(world["phase"])]) == 0
    assert "scored" in capsys.readouterr().out
    # Python API: the same
    from lesionbench.server.client import ChallengeClient

    client = ChallengeClient(live)
    assert [(s["status"], s["model_card"]["model"]) for s in client.submissions(world["phase"])] == [("scored", "my-encoder")]
    card.write_text("[1, 2]")
    assert main(["submit", "--server", live, "--phase", str(world["phase"]), str(pred), "--model-card", str(card)]) == 2
    assert "must be an object" in capsys.readouterr().err
    assert client.board(world["phase"])["tasks"][0]["entries"][0]["team"] == "Team A"


def test_client_errors_are_one_line(world, live, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LESIONBENCH_TOKEN", "lb_nope_nope")
    pred = predictions_csv(tmp_path / "p.csv")
    assert main(["submissions", "--server", live, "--phase", str(world["phase"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "401" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("LESIONBENCH_TOKEN", world["b"].token)
    assert main(["submit", "--server", live, str(pred)]) == 2  # no --phase
    assert "--phase" in capsys.readouterr().err
    assert main(["submit", "--server", live, "--phase", "99", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_db_upgrade_and_current(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LESIONBENCH_DATABASE_URL", raising=False)
    folder = tmp_path / "org"
    assert main(["db", "current", "--folder", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("(empty)")
    from sqlalchemy import create_engine, inspect

    from lesionbench.server.migrate import upgrade

    upgrade(f"sqlite:///{folder / 'lesionbench.db'}", "0001")  # a database of the first release
    assert main(["db", "upgrade", "--folder", str(folder)]) == 0
    assert "revision 0002" in capsys.readouterr().out
    assert "model_card_json" in {c["name"] for c in inspect(create_engine(f"sqlite:///{folder / 'lesionbench.db'}")).get_columns("submissions")}
    monkeypatch.setenv("LESIONBENCH_ORGANISER_PASSWORD", "a long password")
    assert main(["db", "add-organiser", "boss@example.org", "--folder", str(folder)]) == 0
    assert main(["db", "add-organiser", "--folder", str(folder)]) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_leaderboard_build_exports_the_server_boards(world, tmp_path, monkeypatch):
    from _server_fixtures import drain, upload

    monkeypatch.setattr("lesionbench.server.worker.default_task_loader", task_loader)  # the toy task is not registered
    c, org = world["client"], world["org"]
    upload(c, world["a"], world["phase"], predictions_csv(tmp_path / "a.csv"))
    drain(world["cfg"])
    folder = world["cfg"].blobs.root.parent
    assert main(["leaderboard", "build", "--from-server", str(folder), "--out", str(tmp_path / "site"), "--n-perm", "99"]) == 0
    board = tmp_path / "site" / "toy" / f"{world['phase']}-public"
    assert "Team A" in (board / "index.html").read_text() and (board / "board.csv").read_text().count("\n") == 2
    assert not (tmp_path / "site" / "toy" / f"{world['phase']}-private").exists()  # not revealed
    c.post(f"/api/v1/phases/{world['phase']}/state/close", headers=org.headers)
    c.post(f"/api/v1/phases/{world['phase']}/state/reveal", headers=org.headers)
    assert main(["leaderboard", "build", "--from-server", str(folder), "--out", str(tmp_path / "site"), "--n-perm", "99"]) == 0
    assert "Team A" in (tmp_path / "site" / "toy" / f"{world['phase']}-private" / "index.html").read_text()
