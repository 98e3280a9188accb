"""The authorisation matrix: every API endpoint, called by anonymous, a participant of team A, of team B
and the organiser. Nobody reads another team's submissions or a private score before the reveal; nobody
but organisers reaches organiser actions. A new endpoint without a row here fails the test."""

from __future__ import annotations

import itertools
import json

from _server_fixtures import add_user, drain, predictions_csv, upload

ROLES = ("anon", "b", "org", "a")  # a last: it revokes its own spare token
_count = itertools.count()


def _matrix(w, ids):
    """(method, path, request kwargs, {role: expected status})."""
    p, draft, ta = w["phase"], ids["draft"], w["team_a"]
    sub_a, spare = ids["sub_a"], ids["spare_token"]
    pred = ids["pred_path"]

    def body_file():
        return {"files": {"file": ("p.csv", pred.read_bytes(), "text/csv")}, "data": {"kind": "predictions"}}

    every = dict.fromkeys(ROLES, 200)
    return [
        ("GET", "/api/v1/health", {}, every),
        ("POST", "/api/v1/users", lambda: {"json": {"email": f"new{next(_count)}@example.org", "password": "long enough pw", "display_name": "N"}}, dict.fromkeys(ROLES, 201)),
        ("POST", "/api/v1/session", {"json": {"email": "alice@example.org", "password": "wrong password"}}, dict.fromkeys(ROLES, 401)),
        ("DELETE", "/api/v1/session", {}, every),
        ("GET", "/api/v1/me", {}, {"anon": 401, "a": 200, "b": 200, "org": 200}),
        ("POST", "/api/v1/tokens", {"json": {"scopes": ["read"]}}, {"anon": 401, "a": 403, "b": 403, "org": 201}),
        ("GET", "/api/v1/tokens", {}, {"anon": 401, "a": 200, "b": 200, "org": 200}),
        ("DELETE", f"/api/v1/tokens/{spare}", {}, {"anon": 401, "a": 200, "b": 404, "org": 404}),
        ("GET", "/api/v1/challenges", {}, every),
        ("POST", "/api/v1/challenges", lambda: {"json": {"slug": f"c{next(_count)}", "title": "T"}}, {"anon": 401, "a": 403, "b": 403, "org": 201}),
        ("GET", "/api/v1/challenges/toy", {}, every),
        ("POST", "/api/v1/challenges/toy/phases", lambda: {"json": {"name": f"ph{next(_count)}", "kind": "public", "task": "toy_binary"}}, {"anon": 401, "a": 403, "b": 403, "org": 201}),
        ("POST", f"/api/v1/phases/{draft}/state/open", {}, {"anon": 401, "a": 403, "b": 403, "org": 200}),
        ("GET", f"/api/v1/phases/{p}", {}, every),
        ("POST", "/api/v1/challenges/toy/teams", lambda: {"json": {"name": f"T{next(_count)}"}}, {"anon": 401, "a": 409, "b": 409, "org": 201}),
        ("POST", "/api/v1/teams/join", {"json": {"code": ids["code_a"]}}, {"anon": 401, "a": 409, "b": 409, "org": 403}),
        ("POST", f"/api/v1/teams/{ta}/invitations", {}, {"anon": 401, "a": 201, "b": 403, "org": 201}),
        ("GET", f"/api/v1/teams/{ta}", {}, {"anon": 401, "a": 200, "b": 404, "org": 200}),
        ("POST", f"/api/v1/phases/{p}/submissions", body_file, {"anon": 401, "a": 202, "b": 202, "org": 403}),
        ("GET", f"/api/v1/phases/{p}/submissions", {}, {"anon": 401, "a": 200, "b": 200, "org": 200}),
        ("GET", f"/api/v1/submissions/{sub_a}", {}, {"anon": 401, "a": 200, "b": 404, "org": 200}),
        ("POST", f"/api/v1/phases/{p}/selection", {"json": {"submission_ids": [sub_a]}}, {"anon": 401, "a": 200, "b": 422, "org": 403}),
        ("GET", f"/api/v1/phases/{p}/board", {}, every),
        ("GET", f"/api/v1/phases/{p}/board?part=private", {}, {"anon": 403, "a": 403, "b": 403, "org": 200}),
        ("GET", f"/api/v1/phases/{p}/board.csv", {}, every),
        ("GET", f"/api/v1/phases/{p}/board.csv?part=private", {}, {"anon": 403, "a": 403, "b": 403, "org": 200}),
        # pages that show a team's data
        ("GET", f"/submissions/{sub_a}", {}, {"anon": 303, "a": 200, "b": 404, "org": 200}),
        ("GET", f"/teams/{ta}", {}, {"anon": 303, "a": 200, "b": 404, "org": 200}),
    ]


def test_authorisation_matrix(world, tmp_path):
    from lesionbench.server.auth import new_token
    from lesionbench.server.db import Submission, User

    c, cfg = world["client"], world["cfg"]
    pred = predictions_csv(tmp_path / "a.csv")
    sub_a = upload(c, world["a"], world["phase"], pred).json()["id"]
    drain(cfg)
    with cfg.db.session(lock=True) as s:
        spare = new_token(s, s.get(User, world["a"].user_id), scopes=["read"])[0].id
        private = json.loads(s.get(Submission, sub_a).private_json)
    secrets = {repr(v["value"]) for v in private.values() if v["value"] is not None} | {repr(v["ci_low"]) for v in private.values() if v["ci_low"] is not None}
    draft = c.post("/api/v1/challenges/toy/phases", json={"name": "draft", "kind": "final", "task": "toy_binary"}, headers=world["org"].headers).json()["id"]
    code_a = c.post(f"/api/v1/teams/{world['team_a']}/invitations", headers=world["a"].headers).json()["invite_code"]
    ids = {"sub_a": sub_a, "spare_token": spare, "draft": draft, "code_a": code_a, "pred_path": pred}
    matrix = _matrix(world, ids)

    # every API route of the app has a row (a new endpoint must be added to the matrix)
    from fastapi.routing import APIRoute

    covered = {(m, path.split("?")[0]) for m, path, _, _ in matrix}
    concrete = {"{phase_id}": str(world["phase"]), "{slug}": "toy", "{team_id}": str(world["team_a"]), "{submission_id}": str(sub_a), "{token_id}": str(spare)}
    for route in c.app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api/"):
            for method in route.methods - {"HEAD"}:
                path = route.path
                if "{action}" in path:
                    path = path.replace("{phase_id}", str(draft)).replace("{action}", "open")
                for k, v in concrete.items():
                    path = path.replace(k, v)
                assert (method, path) in covered, f"{method} {route.path} has no row in the authorisation matrix"

    failures = []
    for method, path, kwargs, expected in matrix:
        for role in ROLES:
            c.cookies.clear()
            kw = kwargs() if callable(kwargs) else dict(kwargs)
            r = c.request(method, path, headers=world[role].headers, follow_redirects=False, **kw)
            if r.status_code != expected[role]:
                failures.append(f"{role:>4} {method} {path}: {r.status_code} (expected {expected[role]}) {r.text[:120]}")
            if role != "org" and any(sv in r.text for sv in secrets):
                failures.append(f"{role:>4} {method} {path}: a private score left the server")
    assert not failures, "\n".join(failures)


def test_team_lists_show_only_the_own_team(world, tmp_path):
    c = world["client"]
    upload(c, world["a"], world["phase"], predictions_csv(tmp_path / "a.csv"))
    upload(c, world["b"], world["phase"], predictions_csv(tmp_path / "b.csv", seed=2))
    teams = {role: {s["team"] for s in c.get(f"/api/v1/phases/{world['phase']}/submissions", headers=world[role].headers).json()} for role in ("a", "b", "org")}
    assert teams == {"a": {"Team A"}, "b": {"Team B"}, "org": {"Team A", "Team B"}}


def test_expired_token_is_refused(world):
    from datetime import timedelta

    from lesionbench.server.db import ApiToken, utcnow

    person = add_user(world["cfg"], "carol@example.org")
    c = world["client"]
    assert c.get("/api/v1/me", headers=person.headers).status_code == 200
    with world["cfg"].db.session(lock=True) as s:
        for t in s.query(ApiToken).filter(ApiToken.user_id == person.user_id):
            t.expires_at = utcnow() - timedelta(seconds=1)
    assert c.get("/api/v1/me", headers=person.headers).status_code == 401


def test_bad_authorisation_headers_are_401(world):
    for header in ("Bearer", "Basic abc", "Bearer lb_x", "Bearer lb_0123_wrong", "Bearer " + world["a"].token + "x"):
        assert world["client"].get("/api/v1/me", headers={"Authorization": header}).status_code == 401, header
