"""The challenge server's API end to end on SQLite and PostgreSQL: submit, score, board, close, reveal."""

from __future__ import annotations

import csv
import io

from _server_fixtures import PASSWORD, drain, predictions_csv, upload


def test_submit_score_board_and_reveal(world, tmp_path):
    c, a, b, org, phase = world["client"], world["a"], world["b"], world["org"], world["phase"]
    r = upload(c, a, phase, predictions_csv(tmp_path / "a.csv", quality=1.0))
    assert r.status_code == 202, r.text
    sub_a = r.json()
    assert sub_a["status"] == "queued" and "private" not in sub_a
    assert upload(c, b, phase, predictions_csv(tmp_path / "b.csv", quality=0.2, seed=1)).status_code == 202
    assert drain(world["cfg"]) == 2
    got = c.get(f"/api/v1/submissions/{sub_a['id']}", headers=a.headers).json()
    assert got["status"] == "scored" and got["public"]["auc"]["ci_low"] < got["public"]["auc"]["value"] < got["public"]["auc"]["ci_high"]
    assert "private" not in got and got["n_public"] > 0
    board = c.get(f"/api/v1/phases/{phase}/board").json()
    entries = board["tasks"][0]["entries"]
    assert [e["team"] for e in entries] == ["Team A", "Team B"]
    assert entries[0]["rank_interval"] and entries[0]["metrics"]["auc"]["ci_low"] is not None
    assert entries[1]["comparison"]["versus"] == "Team A"
    rows = list(csv.DictReader(io.StringIO(c.get(f"/api/v1/phases/{phase}/board.csv").text)))
    assert [r["team"] for r in rows] == ["Team A", "Team B"] and rows[0]["tied_with_top"] == "True"
    # the private board: organisers only until the reveal, which needs a closed phase
    assert c.get(f"/api/v1/phases/{phase}/board?part=private").status_code == 403
    assert c.get(f"/api/v1/phases/{phase}/board?part=private", headers=a.headers).status_code == 403
    assert c.get(f"/api/v1/phases/{phase}/board?part=private", headers=org.headers).status_code == 200
    assert c.post(f"/api/v1/phases/{phase}/state/reveal", headers=org.headers).status_code == 409
    assert c.post(f"/api/v1/phases/{phase}/state/close", headers=org.headers).status_code == 200
    assert upload(c, a, phase, predictions_csv(tmp_path / "late.csv", seed=5)).status_code == 409
    assert c.post(f"/api/v1/phases/{phase}/state/reveal", headers=org.headers).status_code == 200
    private = c.get(f"/api/v1/phases/{phase}/board?part=private").json()
    assert private["phase"]["part"] == "private" and len(private["tasks"][0]["entries"]) == 2
    assert "private" in c.get(f"/api/v1/submissions/{sub_a['id']}", headers=a.headers).json()


def test_bad_file_fails_as_the_submissions_fault_and_counts(world, tmp_path):
    c, a, phase = world["client"], world["a"], world["phase"]
    bad = tmp_path / "bad.csv"
    bad.write_text("lesion_id,score\nnope,2\n")
    sid = upload(c, a, phase, bad).json()["id"]
    drain(world["cfg"])
    got = c.get(f"/api/v1/submissions/{sid}", headers=a.headers).json()
    assert got["status"] == "failed" and got["failure_class"] == "submission" and got["counted"] is True
    assert "nope" in got["message"] and "log" not in got  # logs: sanity phases only


def test_session_cookie_needs_csrf_and_tokens_are_shown_once(world):
    c = world["client"]
    r = c.post("/api/v1/session", json={"email": "alice@example.org", "password": PASSWORD})
    assert r.status_code == 200
    csrf = r.json()["csrf_token"]
    assert c.post("/api/v1/tokens", json={"scopes": ["read"]}).status_code == 403  # no CSRF token
    made = c.post("/api/v1/tokens", json={"scopes": ["read"]}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201 and made.json()["token"].startswith("lb_")
    listed = c.get("/api/v1/tokens").json()
    assert all("token" not in t for t in listed)
    tok = {"Authorization": f"Bearer {made.json()['token']}"}
    c.cookies.clear()
    assert c.get("/api/v1/me", headers=tok).json()["scopes"] == ["read"]
    # a read token cannot submit; a revoked token is refused
    assert c.post("/api/v1/challenges/toy/teams", json={"name": "X"}, headers=tok).status_code == 403
    assert c.delete(f"/api/v1/tokens/{made.json()['id']}", headers=world["a"].headers).status_code == 200
    assert c.get("/api/v1/me", headers=tok).status_code == 401
    assert c.post("/api/v1/session", json={"email": "alice@example.org", "password": "wrong"}).status_code == 401


def test_sign_in_is_rate_limited(world):
    c = world["client"]
    codes = [c.post("/api/v1/session", json={"email": "bob@example.org", "password": "wrong"}).status_code for _ in range(12)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429
