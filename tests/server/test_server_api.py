"""The challenge server's API end to end on SQLite and PostgreSQL: submit, score, board, close, reveal."""

from __future__ import annotations

import csv
import io

from _server_fixtures import PASSWORD, drain, predictions_csv, task_loader, upload


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


def test_hostile_ids_and_strings_are_4xx_not_5xx(world):
    from fastapi.testclient import TestClient

    c = TestClient(world["client"].app, raise_server_exceptions=False)
    org, a = world["org"].headers, world["a"].headers
    big = "9" * 25
    checks = [
        ("GET", f"/api/v1/phases/{big}", org, None), ("GET", f"/api/v1/phases/{big}/board", None, None),
        ("GET", f"/api/v1/submissions/{big}", a, None), ("GET", "/api/v1/submissions/-1", a, None),
        ("GET", "/api/v1/challenges/to%00y", a, None), ("GET", f"/submissions/{big}", a, None),
        ("POST", "/api/v1/users", None, {"email": "x@y", "password": "x" * 12, "display_name": "nul\x00"}),
        ("POST", "/api/v1/session", None, {"email": "alice\x00@example.org", "password": "x"}),
        ("POST", "/api/v1/challenges", org, {"slug": "ok-slug", "title": "t\x00"}),
        ("POST", "/api/v1/challenges/toy/teams", a, {"name": "x\x00"}),
        ("POST", f"/api/v1/phases/{world['phase']}/selection", a, {"submission_ids": [int(big)]}),
    ]
    for method, path, headers, body in checks:
        r = c.request(method, path, headers=headers or {}, json=body)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:200])


def test_embeddings_are_probed_by_the_organiser(world, tmp_path):
    import numpy as np
    import pandas as pd
    from _server_fixtures import TASKS

    table = TASKS["toy_binary"].table
    rng = np.random.default_rng(0)
    feats = pd.DataFrame({"lesion_id": table["lesion_id"], "f0": table["label"] + rng.normal(0, 0.7, len(table)), "f1": rng.normal(size=len(table))})
    path = tmp_path / "emb.csv"
    feats.to_csv(path, index=False)
    c, a = world["client"], world["a"]
    sid = upload(c, a, world["phase"], path, kind="embeddings").json()["id"]
    drain(world["cfg"])
    got = c.get(f"/api/v1/submissions/{sid}", headers=a.headers).json()
    assert got["status"] == "scored", got["message"]
    assert got["kind"] == "embeddings" and 0.5 < got["public"]["auc"]["value"] <= 1.0


def test_invitation_only_teams_and_the_final_selection(world, tmp_path):
    from _server_fixtures import add_user

    c, org, a = world["client"], world["org"], world["a"]
    assert c.post("/api/v1/challenges", json={"slug": "closed", "title": "Closed", "team_signup": "invitation", "n_boot": 50}, headers=org.headers).status_code == 201
    assert c.post("/api/v1/challenges/closed/teams", json={"name": "Mine"}, headers=a.headers).status_code == 403
    made = c.post("/api/v1/challenges/closed/teams", json={"name": "Invited"}, headers=org.headers).json()
    dave = add_user(world["cfg"], "dave@example.org")
    assert c.post("/api/v1/teams/join", json={"code": "wrong"}, headers=dave.headers).status_code == 404
    assert c.post("/api/v1/teams/join", json={"code": made["invite_code"]}, headers=dave.headers).json()["name"] == "Invited"
    assert c.get("/api/v1/challenges/closed", headers=dave.headers).json()["team"]["name"] == "Invited"
    # a new invitation replaces the old code
    new = c.post(f"/api/v1/teams/{made['id']}/invitations", headers=dave.headers).json()["invite_code"]
    erin = add_user(world["cfg"], "erin@example.org")
    assert c.post("/api/v1/teams/join", json={"code": made["invite_code"]}, headers=erin.headers).status_code == 404
    assert c.post("/api/v1/teams/join", json={"code": new}, headers=erin.headers).status_code == 200
    # final selection: team A picks its worse submission; the private board uses it
    p = world["phase"]
    good = upload(c, a, p, predictions_csv(tmp_path / "good.csv", quality=1.0)).json()["id"]
    bad = upload(c, a, p, predictions_csv(tmp_path / "bad.csv", quality=0.0, seed=9)).json()["id"]
    drain(world["cfg"])
    assert c.post(f"/api/v1/phases/{p}/selection", json={"submission_ids": [good, bad, good]}, headers=a.headers).status_code == 422  # more than 2
    assert c.post(f"/api/v1/phases/{p}/selection", json={"submission_ids": [bad]}, headers=a.headers).json() == {"selected": [bad]}
    private = c.get(f"/api/v1/phases/{p}/board?part=private", headers=org.headers).json()
    assert private["tasks"][0]["entries"][0]["submission_id"] == bad
    public = c.get(f"/api/v1/phases/{p}/board").json()
    assert public["tasks"][0]["entries"][0]["submission_id"] == good  # the public board: the best public score


def test_sanity_phase_shows_the_scoring_log(world, tmp_path):
    c, org, a = world["client"], world["org"], world["a"]
    sanity = c.post("/api/v1/challenges/toy/phases", json={"name": "sanity", "kind": "sanity", "task": "toy_binary"}, headers=org.headers).json()["id"]
    c.post(f"/api/v1/phases/{sanity}/state/open", headers=org.headers)
    sid = upload(c, a, sanity, predictions_csv(tmp_path / "p.csv")).json()["id"]
    drain(world["cfg"])
    got = c.get(f"/api/v1/submissions/{sid}", headers=a.headers).json()
    assert got["status"] == "scored" and "log" in got
    # a few cases only: the file covers every test lesion, the score uses those of SANITY_PATIENTS patients
    from lesionbench.server.worker import SANITY_PATIENTS, sanity_cases

    task = task_loader("toy_binary")
    man = task.manifest()
    cases = sanity_cases(task.meta, man)
    test = man[man["split"] == "test"]
    assert test.loc[test["lesion_id"].isin(cases), "patient_id"].nunique() == SANITY_PATIENTS < test["patient_id"].nunique()
    assert set(test.loc[test["lesion_id"].isin(cases), "label"]) == {0, 1} and cases == sanity_cases(task.meta, man.sample(frac=1, random_state=1))
    with world["cfg"].db.session() as s:
        from lesionbench.server.db import Submission

        sub = s.get(Submission, sid)
        assert sub.n_public + sub.n_private == len(cases)
    assert f"scored on {len(cases)} of them only" in got["log"]
    # an unknown task is refused when the phase is made, naming the tasks there are
    r = c.post("/api/v1/challenges/toy/phases", json={"name": "x", "kind": "public", "task": "toy_binry"}, headers=org.headers)
    assert r.status_code == 422 and "toy_binary" in r.json()["detail"]


def test_deadlines_in_utc_and_submission_rate_limit(world, tmp_path):
    from datetime import datetime, timedelta, timezone

    c, org, a = world["client"], world["org"], world["a"]
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    naive = c.post("/api/v1/challenges/toy/phases", json={"name": "n", "kind": "public", "task": "toy_binary", "closes_at": "2030-01-01T00:00:00"}, headers=org.headers)
    assert naive.status_code == 422  # a deadline without a time zone is refused
    late = c.post("/api/v1/challenges/toy/phases", json={"name": "late", "kind": "public", "task": "toy_binary", "closes_at": past}, headers=org.headers).json()
    c.post(f"/api/v1/phases/{late['id']}/state/open", headers=org.headers)
    r = upload(c, a, late["id"], predictions_csv(tmp_path / "p.csv"))
    assert r.status_code == 409 and "closed at" in r.json()["detail"]
    world["cfg"].submit_limit = (2, 60.0)
    world["cfg"].limiters.pop("submit", None)
    codes = [upload(c, a, late["id"], predictions_csv(tmp_path / "p.csv")).status_code for _ in range(3)]
    assert codes == [409, 409, 429] and "retry-after" in {k.lower() for k in upload(c, a, late["id"], tmp_path / "p.csv").headers}


def test_security_headers_and_the_board_served_from_memory(world):
    """Every response carries the security headers (also a refusal and a page); a public board is served
    from memory on the event loop, and a new scored state reaches it after the freshness window."""
    from lesionbench.server import board as board_mod

    c, phase = world["client"], world["phase"]
    for path in (f"/api/v1/phases/{phase}/board", "/api/v1/phases/999999/board", "/signin"):
        r = c.get(path)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY", path
        assert r.headers["referrer-policy"] == "same-origin"
    boards = c.app.state.boards
    first = c.get(f"/api/v1/phases/{phase}/board").content
    assert boards.fresh(phase, "public", fmt="json") == first  # what the next anonymous reader gets without the database
    assert boards.fresh(phase, "private", fmt="json") is None  # never from the anonymous fast path
    boards._checked[(phase, "public")] -= board_mod.FRESH_S  # the window has passed: the next read asks the database
    assert boards.fresh(phase, "public", fmt="json") is None and c.get(f"/api/v1/phases/{phase}/board").content == first


def test_model_cards_are_validated_shown_and_inert(world, tmp_path):
    """A submission's model card is checked field by field (a bad one is a 422 naming the field, and nothing is
    queued), kept, and shown on its page escaped; a javascript: address is refused, not linked."""
    import json

    from lesionbench.server.db import Submission

    c, a, phase = world["client"], world["a"], world["phase"]
    pred = predictions_csv(tmp_path / "p.csv")

    def post(card):
        with open(pred, "rb") as f:
            return c.post(f"/api/v1/phases/{phase}/submissions", files={"file": ("p.csv", f, "text/csv")}, data={"kind": "predictions", "model_card": card}, headers=a.headers)

    with world["cfg"].db.session() as s:
        before = s.query(Submission).count()
    for bad, field in ((json.dumps({"model": "m", "url": "javascript:alert(1)"}), "url"), (json.dumps({"model": "m", "licence": "x", "secret": 1}), "secret"),
                       (json.dumps({"licence": "MIT"}), "model"), ("{not json", "model_card"), (json.dumps({"model": "m", "weights_sha256": "abc"}), "weights_sha256")):  # fmt: skip
        r = post(bad)
        assert r.status_code == 422 and field in r.json()["detail"], (bad, r.text)
    with world["cfg"].db.session() as s:
        assert s.query(Submission).count() == before  # nothing queued, no quota used
    card = {"model": "<script>alert(1)</script>", "parameters": 23_000_000, "embedding_dim": 4096, "licence": "CC-BY-NC-4.0",
            "pretraining_sets": ["DeepLesion"], "url": "https://example.org/paper?a=1&b=2"}  # fmt: skip
    r = post(json.dumps(card))
    assert r.status_code == 202 and r.json()["model_card"] == card
    page = c.get(f"/submissions/{r.json()['id']}", headers=a.headers).text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="https://example.org/paper?a=1&amp;b=2" rel="nofollow noopener noreferrer"' in page and "DeepLesion" in page
    r = post(json.dumps({"model": "m", "pretraining_sets": []}))
    assert "no public dataset" in c.get(f"/submissions/{r.json()['id']}", headers=a.headers).text
