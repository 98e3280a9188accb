"""The challenge server's HTML pages: sign-in, account and tokens, challenge, upload, submission, board.

Pages run no script: forms post back (each write form carries the session's CSRF token) and a page
with work in progress refreshes itself. The board page is the leaderboard's own template
(:func:`lesionbench.leaderboard.render.render_html`) on the server's board document.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from lesionbench.server import auth, service
from lesionbench.server.api import Caller, ServerConfig, create_token, model_card_json, receive_upload, start_session
from lesionbench.server.db import ApiToken, Challenge, Phase, Submission, Team, TeamMember, User
from lesionbench.server.schemas import Id, Slug, TokenRequest
from lesionbench.server.views import challenge_view, submission_view

pages = APIRouter(include_in_schema=False)
PAGE_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals["fmt"] = lambda v: "-" if v is None else f"{v:.3f}"
    return env


def _render(template: str, code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("refresh", None)
    ctx.setdefault("user", None)
    ctx.setdefault("csrf", "")
    ctx.setdefault("message", None)
    html = _env().get_template(template).render(**ctx)
    return HTMLResponse(html, status_code=code, headers={"Content-Security-Policy": PAGE_CSP})


def _session(request: Request) -> tuple[User | None, str]:
    """The signed-in user and the session's CSRF token; an API token in the Authorization header reads pages too (no forms)."""
    cfg: ServerConfig = request.app.state.config
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        with cfg.db.session() as s:
            found = auth.token_user(s, header[7:].strip())
        if found is not None:
            auth.touch_token(cfg.db, found[2])
        return (found[0], "") if found else (None, "")
    sess = auth.SessionSigner(cfg.secret_key).read(request.cookies.get(auth.SESSION_COOKIE))
    if sess is None:
        return None, ""
    with cfg.db.session() as s:
        user = s.get(User, sess.user_id)
    return (user, sess.csrf) if user is not None else (None, "")


async def _form_caller(request: Request) -> tuple[Caller, Any]:
    """The signed-in user of a form post, after its CSRF token is checked; and the form."""
    cfg: ServerConfig = request.app.state.config
    form = await request.form()
    sess = auth.SessionSigner(cfg.secret_key).read(request.cookies.get(auth.SESSION_COOKIE))
    if sess is None:
        raise service.NotAuthenticated("sign in first")
    if not auth.csrf_ok(sess, form.get("csrf_token")):
        raise service.Forbidden("this form is stale or was not sent by this site (CSRF check failed); reload the page and try again")
    with cfg.db.session() as s:
        user = s.get(User, sess.user_id)
    if user is None:
        raise service.NotAuthenticated("sign in first")
    return Caller(user, "cookie", frozenset(auth.SCOPES)), form


def error_page(request: Request, status: int, message: str) -> Response:
    """A refused page request as a page."""
    if status == 401:
        return RedirectResponse("/signin?next=" + request.url.path, status_code=303)
    user, csrf = _session(request)
    return _render("message.html.j2", status, title="Not possible", message=message, status=status, user=user, csrf=csrf, back=None)


@pages.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    user, csrf = _session(request)
    with request.app.state.config.db.session() as s:
        challenges = [{"slug": c.slug, "title": c.title} for c in s.scalars(select(Challenge).order_by(Challenge.id))]
    return _render("home.html.j2", title="Challenges", challenges=challenges, user=user, csrf=csrf)


@pages.get("/signin", response_class=HTMLResponse)
def signin_page() -> HTMLResponse:
    return _render("signin.html.j2", title="Sign in", action="/signin", signup=False)


@pages.post("/signin")
async def signin_post(request: Request) -> Response:
    form = await request.form()
    response = RedirectResponse("/", status_code=303)
    try:
        start_session(request.app.state.config, request, response, str(form.get("email", "")), str(form.get("password", "")))
    except service.ServerError as exc:
        return _render("signin.html.j2", exc.status, title="Sign in", action="/signin", signup=False, message=str(exc))
    return response


@pages.get("/signup", response_class=HTMLResponse)
def signup_page() -> HTMLResponse:
    return _render("signin.html.j2", title="Sign up", action="/signup", signup=True)


@pages.post("/signup")
async def signup_post(request: Request) -> Response:
    from pydantic import ValidationError

    from lesionbench.server.api import sign_up
    from lesionbench.server.schemas import SignUp

    cfg: ServerConfig = request.app.state.config
    form = await request.form()
    try:
        body = SignUp(email=str(form.get("email", "")), password=str(form.get("password", "")), display_name=str(form.get("display_name", "")))
        sign_up(body, request, cfg)
    except ValidationError as exc:
        return _render("signin.html.j2", 422, title="Sign up", action="/signup", signup=True, message="; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors()))
    except service.ServerError as exc:
        return _render("signin.html.j2", exc.status, title="Sign up", action="/signup", signup=True, message=str(exc))
    response = RedirectResponse("/", status_code=303)
    start_session(cfg, request, response, body.email, body.password)
    return response


@pages.post("/signout")
async def signout(request: Request) -> Response:
    await _form_caller(request)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


def _account(request: Request, user: User, csrf: str, new_token: str | None = None) -> HTMLResponse:
    with request.app.state.config.db.session() as s:
        tokens = s.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)).all()
    return _render("account.html.j2", title="Account", user=user, csrf=csrf, tokens=tokens, new_token=new_token)


@pages.get("/account", response_class=HTMLResponse)
def account(request: Request) -> Response:
    user, csrf = _session(request)
    if user is None:
        return RedirectResponse("/signin", status_code=303)
    return _account(request, user, csrf)


@pages.post("/account/tokens")
async def account_token(request: Request) -> Response:
    c, form = await _form_caller(request)
    days = str(form.get("expires_in_days") or "90")
    body = TokenRequest(name=str(form.get("name", ""))[:64], scopes=form.getlist("scopes") or ["read"], expires_in_days=int(days) if days.isdigit() else 90)
    made = create_token(body, c, request.app.state.config)
    return _account(request, c.user, str(form.get("csrf_token")), new_token=made["token"])


@pages.post("/account/tokens/{token_id}/revoke")
async def account_revoke(token_id: Id, request: Request) -> Response:
    from lesionbench.server.api import revoke_token

    c, _ = await _form_caller(request)
    revoke_token(token_id, c, request.app.state.config)
    return RedirectResponse("/account", status_code=303)


def _challenge_page(request: Request, slug: Slug, user: User | None, csrf: str, **extra: Any) -> HTMLResponse:
    cfg: ServerConfig = request.app.state.config
    with cfg.db.session() as s:
        ch = service.get_challenge(s, slug)
        view = challenge_view(s, ch, user)
        rows = [] if view["team"] is None else _team_rows(s, view["team"]["id"])
    busy = any(r["status"] in ("queued", "running") for r in rows)
    return _render("challenge.html.j2", title=view["title"], challenge=view, user=user, csrf=csrf, submissions=rows, refresh=3 if busy else None, invite_path=None, **extra)


def _team_rows(s: Any, team_id: int) -> list[dict[str, Any]]:
    """The team's submissions as table rows (newest first): status, failure class, public score with its CI."""
    rows = []
    q = select(Submission, Phase.name).join(Phase, Phase.id == Submission.phase_id).where(Submission.team_id == team_id).order_by(Submission.id.desc())
    for sub, phase_name in s.execute(q):
        pub = json.loads(sub.public_json) if sub.public_json else {}
        main = next(iter(pub.items()), None)
        score = "-" if main is None or main[1]["value"] is None else f"{main[0]} {main[1]['value']:.3f} ({main[1]['ci_low'] or float('nan'):.3f}–{main[1]['ci_high'] or float('nan'):.3f})"
        rows.append({"id": sub.id, "phase": phase_name, "filename": sub.filename, "status": sub.status, "failure_class": sub.failure_class, "score": score, "created": sub.created_at.strftime("%Y-%m-%d %H:%M:%S")})
    return rows


@pages.get("/teams/{team_id}", response_class=HTMLResponse)
def team_page(team_id: Id, request: Request) -> Response:
    """A team's page: members and every submission (its members and the organisers only)."""
    user, csrf = _session(request)
    if user is None:
        return RedirectResponse("/signin", status_code=303)
    with request.app.state.config.db.session() as s:
        team = s.get(Team, team_id)
        mine = None if team is None else service.team_of(s, user, team.challenge_id)
        if team is None or not (user.is_organiser or (mine is not None and mine.id == team.id)):
            raise service.NotFound(f"no team {team_id}")
        members = [m.display_name for m in s.scalars(select(User).join(TeamMember, TeamMember.user_id == User.id).where(TeamMember.team_id == team.id))]
        challenge = s.get(Challenge, team.challenge_id)
        rows = _team_rows(s, team.id)
    return _render("team.html.j2", title=f"Team {team.name}", team=team, members=members, challenge=challenge, submissions=rows, user=user, csrf=csrf)


@pages.get("/c/{slug}", response_class=HTMLResponse)
def challenge_page(slug: Slug, request: Request) -> HTMLResponse:
    user, csrf = _session(request)
    return _challenge_page(request, slug, user, csrf)


@pages.post("/c/{slug}/team")
async def team_post(slug: Slug, request: Request) -> Response:
    c, form = await _form_caller(request)
    with request.app.state.config.db.session(lock=True) as s:
        _, code = service.create_team(s, c.user, service.get_challenge(s, slug), str(form.get("name", "")))
    return _challenge_page(request, slug, c.user, str(form.get("csrf_token")), invite_path=f"/join/{code}")


@pages.post("/teams/{team_id}/invite")
async def invite_post(team_id: Id, request: Request) -> Response:
    c, form = await _form_caller(request)
    with request.app.state.config.db.session(lock=True) as s:
        team = s.get(Team, team_id)
        if team is None:
            raise service.NotFound(f"no team {team_id}")
        code = service.new_invitation(s, c.user, team)
        slug = s.get(Challenge, team.challenge_id).slug
    return _challenge_page(request, slug, c.user, str(form.get("csrf_token")), invite_path=f"/join/{code}")


@pages.get("/join/{code}", response_class=HTMLResponse)
def join_page(code: str, request: Request) -> Response:
    user, csrf = _session(request)
    if user is None:
        return RedirectResponse(f"/signin?next=/join/{code}", status_code=303)
    from lesionbench.server.service import _invite_digest

    with request.app.state.config.db.session() as s:
        team = s.scalar(select(Team).where(Team.invite_digest == _invite_digest(code)))
        if team is None:
            raise service.NotFound("this invitation link is not valid (it may have been replaced); ask the team for a new one")
    return _render("join.html.j2", title="Join a team", team=team, code=code, user=user, csrf=csrf)


@pages.post("/join/{code}")
async def join_post(code: str, request: Request) -> Response:
    c, _ = await _form_caller(request)
    with request.app.state.config.db.session(lock=True) as s:
        team = service.join_team(s, c.user, code)
        slug = s.get(Challenge, team.challenge_id).slug
    return RedirectResponse(f"/c/{slug}", status_code=303)


@pages.post("/phases/{phase_id}/upload")
async def upload_post(phase_id: Id, request: Request) -> Response:
    c, form = await _form_caller(request)
    upload = form.get("file")
    if upload is None or not hasattr(upload, "file"):
        raise service.Invalid("choose a file to upload")
    kind = str(form.get("kind", "predictions"))
    if kind not in ("predictions", "embeddings"):
        raise service.Invalid(f"unknown kind {kind!r}")
    field = lambda name: str(form.get(name, "")).strip()  # noqa: E731
    card = None
    if field("card_model"):
        card = {"model": field("card_model"), "licence": field("card_licence"), "url": field("card_url") or None,
                "pretraining_sets": [x.strip() for x in field("card_pretraining").split(",") if x.strip()] if field("card_pretraining") else None}  # fmt: skip
    receive_upload(request.app.state.config, c, phase_id, upload, kind, str(form.get("description", "")).replace("\x00", "")[:500], model_card_json(card))
    with request.app.state.config.db.session() as s:
        slug = s.get(Challenge, s.get(Phase, phase_id).challenge_id).slug
    return RedirectResponse(f"/c/{slug}", status_code=303)


@pages.post("/phases/{phase_id}/state/{action}")
async def phase_state_post(phase_id: Id, action: str, request: Request) -> Response:
    c, _ = await _form_caller(request)
    with request.app.state.config.db.session(lock=True) as s:
        phase = service.set_phase_state(s, c.user, service.get_phase(s, phase_id), action)
        slug = s.get(Challenge, phase.challenge_id).slug
    return RedirectResponse(f"/c/{slug}", status_code=303)


@pages.get("/phases/{phase_id}/board", response_class=HTMLResponse)
def board_page(phase_id: Id, request: Request, part: str = "public") -> HTMLResponse:
    from lesionbench.leaderboard.render import CSP

    user, _ = _session(request)
    organiser = bool(user and user.is_organiser)
    doc = request.app.state.boards.document(phase_id, part, organiser=organiser)
    html = request.app.state.boards.rendered(phase_id, part, organiser=organiser, fmt="html").decode()
    title = f"{doc['challenge']['title']} · {doc['phase']['name']} · {part} board"
    html = html.replace("<body>", f'<body><p><a href="/c/{doc["challenge"]["slug"]}">&larr; {_escape(title)}</a></p>', 1)
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP})


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


@pages.get("/submissions/{submission_id}", response_class=HTMLResponse)
def submission_page(submission_id: Id, request: Request) -> Response:
    user, csrf = _session(request)
    if user is None:
        return RedirectResponse("/signin", status_code=303)
    with request.app.state.config.db.session() as s:
        sub, phase = service.readable_submission(s, user, submission_id)
        view = submission_view(s, sub, phase, user)
        back = f"/c/{s.get(Challenge, phase.challenge_id).slug}"
    busy = view["status"] in ("queued", "running")
    return _render("submission.html.j2", title=f"Submission {submission_id}", s=view, user=user, csrf=csrf, back=back, refresh=3 if busy else None)
