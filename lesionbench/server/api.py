"""The challenge server's JSON API under ``/api/v1`` (the application: :mod:`.app`; pages: :mod:`.pages`).

Who may call what is decided in :mod:`lesionbench.server.service`; this module only turns requests into
those calls: it finds the caller (an API token in ``Authorization: Bearer``, else the signed session
cookie), checks the token's scope (read / submit / admin) and, for cookie-authenticated writes, the
CSRF token, and maps refusals to HTTP status codes with one-line messages.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.server import auth, service
from lesionbench.server.blobs import BlobStore
from lesionbench.server.board import Boards
from lesionbench.server.db import ApiToken, Challenge, Database, Submission, Team, TeamMember, User, utcnow
from lesionbench.server.schemas import ChallengeRequest, Id, JoinRequest, PhaseRequest, Selection, SignIn, SignUp, Slug, TeamRequest, TokenRequest
from lesionbench.server.views import challenge_view, phase_view, submission_view

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """What the app needs: the database, the blob store, the session key and how to find a task's metadata."""

    db: Database
    blobs: BlobStore
    secret_key: str
    task_meta: Any  # Callable[[str], TaskMeta]
    n_perm: int = 1000
    secure_cookies: bool = False
    signin_limit: tuple[int, float] = (10, 60.0)
    submit_limit: tuple[int, float] = (30, 60.0)
    max_attempts: int = 3
    limiters: dict[str, auth.RateLimiter] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """The authenticated user (or None), how they authenticated, and a token's scopes."""

    user: User | None
    via: str = "anonymous"  # anonymous | token | cookie
    scopes: frozenset[str] = frozenset()


def secret_key_for(folder: Path) -> str:
    """``$LESIONBENCH_SECRET_KEY``, else a random key kept in ``folder/secret.key`` (created 0600 once)."""
    env = os.environ.get("LESIONBENCH_SECRET_KEY")
    if env:
        return env
    path = Path(folder) / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def get_config(request: Request) -> ServerConfig:
    return request.app.state.config


async def caller(request: Request) -> Caller:
    """Who sent the request; a bad or expired token is a 401, never silently anonymous. An anonymous request
    (no Authorization header, no session) is answered on the event loop; the others read the database in the
    thread pool."""
    if not request.headers.get("authorization") and getattr(request.state, "browser_session", None) is None and auth.SESSION_COOKIE not in request.cookies:
        return Caller(None)
    return await run_in_threadpool(_caller, request)


def _caller(request: Request) -> Caller:
    cfg: ServerConfig = request.app.state.config
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise service.NotAuthenticated("the Authorization header must be 'Bearer lb_...'")
        with cfg.db.session() as s:
            found = auth.token_user(s, token.strip())
        if found is not None:
            auth.touch_token(cfg.db, found[2])
        if found is None:
            raise service.NotAuthenticated("this API token is unknown, revoked or expired; create a new one on your account page")
        return Caller(found[0], "token", frozenset(found[1]))
    sess = getattr(request.state, "browser_session", None)
    if sess is None:
        sess = auth.SessionSigner(cfg.secret_key).read(request.cookies.get(auth.SESSION_COOKIE))
    if sess is not None:
        with cfg.db.session() as s:
            user = s.get(User, sess.user_id)
        if user is not None:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                given = request.headers.get("x-csrf-token") or getattr(request.state, "form_csrf", None)
                if not auth.csrf_ok(sess, given):
                    raise service.Forbidden("missing or wrong CSRF token: send the X-CSRF-Token header (from POST /api/v1/session or GET /api/v1/me)")
            return Caller(user, "cookie", frozenset(auth.SCOPES))
    return Caller(None)


def scoped(scope: str):
    """The caller, refused (403) when a token without ``scope`` is used."""

    def dep(c: Annotated[Caller, Depends(caller)]) -> Caller:
        if c.via == "token" and scope not in c.scopes and "admin" not in c.scopes:
            raise service.Forbidden(f"this API token lacks the '{scope}' scope; create one with it")
        return c

    return dep


def limit(cfg: ServerConfig, name: str, key: str) -> None:
    """Apply the named rate limit to ``key`` (429 with Retry-After when exceeded)."""
    n, window = cfg.signin_limit if name == "signin" else cfg.submit_limit
    limiter = cfg.limiters.setdefault(name, auth.RateLimiter(n, window))
    wait = limiter.hit(key)
    if wait is not None:
        raise service.QuotaExceeded(f"too many {name} attempts; try again in {int(wait) + 1} s", retry_after=wait)


# ------------------------------------------------------------------------------------ routes
api = APIRouter(prefix="/api/v1")
Cfg = Annotated[ServerConfig, Depends(get_config)]


@api.get("/health")
def health(cfg: Cfg) -> dict[str, Any]:
    """Liveness: the database answers."""
    with cfg.db.session(lock=True) as s:
        s.execute(select(1))
    return {"ok": True}


@api.post("/users", status_code=201)
def sign_up(body: SignUp, request: Request, cfg: Cfg) -> dict[str, Any]:
    """Create a participant account."""
    limit(cfg, "signin", f"ip:{request.client.host if request.client else '-'}")
    with cfg.db.session(lock=True) as s:
        email = body.email.strip().lower()
        if s.scalar(select(User.id).where(User.email == email)) is not None:
            raise service.Conflict("an account with this e-mail exists; sign in instead")
        u = User(email=email, display_name=body.display_name, password_hash=auth.hash_password(body.password))
        s.add(u)
        s.flush()
        service.audit(s, u, "user.create", email)
        return {"id": u.id, "email": u.email, "display_name": u.display_name}


def start_session(cfg: ServerConfig, request: Request, response: Response, email: str, password: str) -> tuple[User, auth.BrowserSession]:
    """Check the password (rate-limited per address and per e-mail) and set the session cookie."""
    limit(cfg, "signin", f"ip:{request.client.host if request.client else '-'}")
    limit(cfg, "signin", f"email:{email.strip().lower()}")
    with cfg.db.session(lock=True) as s:
        user = auth.authenticate(s, email, password)
        service.audit(s, user, "session.create" if user else "session.refused", email.strip().lower()[:254])
    if user is None:
        raise service.NotAuthenticated("wrong e-mail or password")
    value, sess = auth.SessionSigner(cfg.secret_key).issue(user.id)
    response.set_cookie(auth.SESSION_COOKIE, value, max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="lax", secure=cfg.secure_cookies)
    return user, sess


@api.post("/session")
def sign_in(body: SignIn, request: Request, response: Response, cfg: Cfg) -> dict[str, Any]:
    """Sign in: sets the session cookie; returns the CSRF token that cookie-authenticated writes must send."""
    user, sess = start_session(cfg, request, response, body.email, body.password)
    return {"id": user.id, "email": user.email, "is_organiser": user.is_organiser, "csrf_token": sess.csrf}


@api.delete("/session")
def sign_out(response: Response) -> dict[str, Any]:
    """Sign out (drops the cookie)."""
    response.delete_cookie(auth.SESSION_COOKIE)
    return {"ok": True}


@api.get("/me")
def me(request: Request, c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> dict[str, Any]:
    """The caller's account (and, with a cookie, its CSRF token)."""
    user = service.need_user(c.user)
    sess = auth.SessionSigner(cfg.secret_key).read(request.cookies.get(auth.SESSION_COOKIE)) if c.via == "cookie" else None
    return {"id": user.id, "email": user.email, "display_name": user.display_name, "is_organiser": user.is_organiser, "via": c.via, "scopes": sorted(c.scopes), "csrf_token": sess.csrf if sess else None}


@api.post("/tokens", status_code=201)
def create_token(body: TokenRequest, c: Annotated[Caller, Depends(caller)], cfg: Cfg) -> dict[str, Any]:
    """A new API token, shown once (signed-in browser session, or a token with the admin scope)."""
    user = service.need_user(c.user)
    if c.via == "token" and "admin" not in c.scopes:
        raise service.Forbidden("tokens are created from a signed-in session (or with an admin token)")
    with cfg.db.session(lock=True) as s:
        try:
            row, secret = auth.new_token(s, s.get(User, user.id), scopes=list(body.scopes), name=body.name, expires_in_days=body.expires_in_days)
        except PermissionError as exc:
            raise service.Forbidden(str(exc)) from exc
        service.audit(s, user, "token.create", row.prefix)
        return {"id": row.id, "token": secret, "prefix": row.prefix, "scopes": row.scopes.split(), "expires_at": row.expires_at, "note": "shown once: store it now"}


@api.get("/tokens")
def list_tokens(c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> list[dict[str, Any]]:
    """The caller's tokens (prefixes only)."""
    user = service.need_user(c.user)
    with cfg.db.session() as s:
        rows = s.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)).all()
        return [{"id": t.id, "name": t.name, "prefix": t.prefix, "scopes": t.scopes.split(), "created_at": t.created_at, "expires_at": t.expires_at, "revoked": t.revoked_at is not None, "last_used_at": t.last_used_at} for t in rows]


@api.delete("/tokens/{token_id}")
def revoke_token(token_id: Id, c: Annotated[Caller, Depends(caller)], cfg: Cfg) -> dict[str, Any]:
    """Revoke one of the caller's tokens."""
    user = service.need_user(c.user)
    with cfg.db.session(lock=True) as s:
        t = s.get(ApiToken, token_id)
        if t is None or t.user_id != user.id:
            raise service.NotFound(f"no token {token_id} of yours")
        t.revoked_at = t.revoked_at or utcnow()
        service.audit(s, user, "token.revoke", t.prefix)
        return {"id": t.id, "revoked": True}


@api.get("/challenges")
def list_challenges(cfg: Cfg) -> list[dict[str, Any]]:
    """Every challenge (public)."""
    with cfg.db.session() as s:
        return [{"slug": c.slug, "title": c.title} for c in s.scalars(select(Challenge).order_by(Challenge.id))]


@api.post("/challenges", status_code=201)
def create_challenge(body: ChallengeRequest, c: Annotated[Caller, Depends(scoped("admin"))], cfg: Cfg) -> dict[str, Any]:
    """Create a challenge (organisers)."""
    with cfg.db.session(lock=True) as s:
        ch = service.create_challenge(s, c.user, **body.model_dump())
        return challenge_view(s, ch, c.user)


@api.get("/challenges/{slug}")
def get_challenge(slug: Slug, c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> dict[str, Any]:
    """A challenge with its visible phases and the caller's team."""
    with cfg.db.session() as s:
        return challenge_view(s, service.get_challenge(s, slug), c.user)


@api.post("/challenges/{slug}/phases", status_code=201)
def create_phase(slug: Slug, body: PhaseRequest, c: Annotated[Caller, Depends(scoped("admin"))], cfg: Cfg) -> dict[str, Any]:
    """Add a phase on a registered task (organisers); it starts as a draft."""
    service.need_organiser(c.user)
    try:
        meta = cfg.task_meta(body.task)
    except LesionbenchError as exc:
        raise service.Invalid(str(exc).splitlines()[0]) from exc
    with cfg.db.session(lock=True) as s:
        p = service.create_phase(s, c.user, service.get_challenge(s, slug), task_version=meta.version, **body.model_dump())
        return phase_view(s, p, c.user)


@api.post("/phases/{phase_id}/state/{action}")
def phase_action(phase_id: Id, action: Literal["open", "close", "reveal"], c: Annotated[Caller, Depends(scoped("admin"))], cfg: Cfg) -> dict[str, Any]:
    """Open, close or reveal a phase (organisers)."""
    service.need_organiser(c.user)
    with cfg.db.session(lock=True) as s:
        p = service.set_phase_state(s, c.user, service.get_phase(s, phase_id), action)
        return phase_view(s, p, c.user)


@api.get("/phases/{phase_id}")
def get_phase(phase_id: Id, c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> dict[str, Any]:
    """A phase (with the caller's team quota)."""
    with cfg.db.session() as s:
        return phase_view(s, service.visible_phase(s, phase_id, c.user), c.user)


@api.post("/challenges/{slug}/teams", status_code=201)
def create_team(slug: Slug, body: TeamRequest, c: Annotated[Caller, Depends(scoped("submit"))], cfg: Cfg) -> dict[str, Any]:
    """Create a team (and join it); returns the invitation code, shown once."""
    with cfg.db.session(lock=True) as s:
        team, code = service.create_team(s, c.user, service.get_challenge(s, slug), body.name)
        return {"id": team.id, "name": team.name, "invite_code": code, "invite_path": f"/join/{code}"}


@api.post("/teams/join")
def join_team(body: JoinRequest, c: Annotated[Caller, Depends(scoped("submit"))], cfg: Cfg) -> dict[str, Any]:
    """Join a team with its invitation code."""
    with cfg.db.session(lock=True) as s:
        team = service.join_team(s, c.user, body.code)
        return {"id": team.id, "name": team.name}


@api.post("/teams/{team_id}/invitations", status_code=201)
def invite(team_id: Id, c: Annotated[Caller, Depends(scoped("submit"))], cfg: Cfg) -> dict[str, Any]:
    """A new invitation code for the team (members and organisers)."""
    with cfg.db.session(lock=True) as s:
        team = s.get(Team, team_id)
        if team is None:
            raise service.NotFound(f"no team {team_id}")
        code = service.new_invitation(s, c.user, team)
        return {"id": team.id, "invite_code": code, "invite_path": f"/join/{code}"}


@api.get("/teams/{team_id}")
def get_team(team_id: Id, c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> dict[str, Any]:
    """A team and its members (its members and organisers)."""
    user = service.need_user(c.user)
    with cfg.db.session() as s:
        team = s.get(Team, team_id)
        mine = None if team is None else service.team_of(s, user, team.challenge_id)
        if team is None or not (user.is_organiser or (mine is not None and mine.id == team.id)):
            raise service.NotFound(f"no team {team_id}")
        members = s.scalars(select(User).join(TeamMember, TeamMember.user_id == User.id).where(TeamMember.team_id == team.id)).all()
        return {"id": team.id, "name": team.name, "members": [m.display_name for m in members]}


def model_card_json(card: str | dict[str, Any] | None) -> str | None:
    """The validated model card as JSON (None when none was given); a bad one is a 422 naming the field."""
    import json

    from pydantic import ValidationError

    from lesionbench.server.schemas import ModelCard

    if card is None or (isinstance(card, str) and not card.strip()):
        return None
    try:
        parsed = ModelCard.model_validate_json(card) if isinstance(card, str) else ModelCard.model_validate(card)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the card"
        raise service.Invalid(f"model_card: {where}: {first['msg']} (fields: {', '.join(ModelCard.model_fields)}; only 'model' is required)") from None
    return json.dumps(parsed.model_dump(exclude_none=True), ensure_ascii=False)


def receive_upload(cfg: ServerConfig, c: Caller, phase_id: Id, file: UploadFile, kind: str, description: str, model_card: str | None = None) -> Submission:
    """Store the upload in the blob store and queue it (quota-checked); nothing is kept when refused.
    ``model_card``: validated JSON (:func:`model_card_json`)."""
    from lesionbench.leaderboard.submissions.submission_file import MAX_FEATURES_BYTES, MAX_SUBMISSION_BYTES

    user = service.need_user(c.user)
    limit(cfg, "submit", f"user:{user.id}")
    with cfg.db.session() as s:  # cheap refusals before reading the upload
        phase = service.visible_phase(s, phase_id, user)
        team = service.team_of(s, user, phase.challenge_id)
        if team is None:
            raise service.Forbidden("join or create a team of this challenge before submitting")
    digest, size = cfg.blobs.put_stream(file.file, max_bytes=MAX_SUBMISSION_BYTES if kind == "predictions" else MAX_FEATURES_BYTES, what=file.filename or "upload")
    try:
        return service.accept_submission(cfg.db, user, phase_id, kind=kind, filename=file.filename or "", digest=digest, size=size, description=description, max_attempts=cfg.max_attempts,
                                          model_card=model_card)  # fmt: skip
    except service.ServerError:
        with cfg.db.session() as s:
            if s.scalar(select(Submission.id).where(Submission.file_sha256 == digest).limit(1)) is None:
                cfg.blobs.path(digest).unlink(missing_ok=True)
        raise


@api.post("/phases/{phase_id}/submissions", status_code=202)
def submit(
    phase_id: Id, c: Annotated[Caller, Depends(scoped("submit"))], cfg: Cfg, file: Annotated[UploadFile, File()],
    kind: Annotated[Literal["predictions", "embeddings"], Form()] = "predictions", description: Annotated[str, Form(max_length=500, pattern=r"^[^\x00]*$")] = "",
    model_card: Annotated[str, Form(max_length=4000, description="optional JSON model card: model (required), parameters, embedding_dim, licence, pretraining_sets, weights_sha256, url")] = "",
) -> dict[str, Any]:
    """Upload a predictions or embeddings CSV for the caller's team; it is queued for scoring."""
    card = model_card_json(model_card)  # refused before the upload is read
    sub = receive_upload(cfg, c, phase_id, file, kind, description, card)
    with cfg.db.session() as s:
        sub, phase = service.readable_submission(s, c.user, sub.id)
        return submission_view(s, sub, phase, c.user)


@api.get("/phases/{phase_id}/submissions")
def my_submissions(phase_id: Id, c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> list[dict[str, Any]]:
    """The caller's team's submissions in a phase (organisers: every team's)."""
    user = service.need_user(c.user)
    with cfg.db.session() as s:
        phase = service.visible_phase(s, phase_id, user)
        q = select(Submission).where(Submission.phase_id == phase.id).order_by(Submission.id)
        if not user.is_organiser:
            team = service.team_of(s, user, phase.challenge_id)
            if team is None:
                return []
            q = q.where(Submission.team_id == team.id)
        return [submission_view(s, x, phase, user) for x in s.scalars(q)]


@api.get("/submissions/{submission_id}")
def get_submission(submission_id: Id, c: Annotated[Caller, Depends(scoped("read"))], cfg: Cfg) -> dict[str, Any]:
    """One submission of the caller's team (organisers: any)."""
    with cfg.db.session(lock=True) as s:
        sub, phase = service.readable_submission(s, c.user, submission_id)
        return submission_view(s, sub, phase, c.user)


@api.post("/phases/{phase_id}/selection")
def select_final(phase_id: Id, body: Selection, c: Annotated[Caller, Depends(scoped("submit"))], cfg: Cfg) -> dict[str, Any]:
    """Choose the team's final submissions (default without a choice: its best public ones)."""
    with cfg.db.session(lock=True) as s:
        ids = service.select_final(s, c.user, service.visible_phase(s, phase_id, c.user), body.submission_ids)
        return {"selected": ids}


@api.get("/phases/{phase_id}/board", response_model=dict[str, Any])
async def board_json(phase_id: Id, request: Request, c: Annotated[Caller, Depends(caller)], part: Literal["public", "private"] = "public") -> Response:
    """The board document (public; the private part: organisers, or anyone after the reveal)."""
    # a public board fresh in memory is served on the event loop; anything that reads the database goes to the thread pool
    body = boards(request).fresh(phase_id, part, fmt="json")
    if body is None:
        body = await run_in_threadpool(boards(request).rendered, phase_id, part, organiser=bool(c.user and c.user.is_organiser), fmt="json")
    return Response(body, media_type="application/json")


@api.get("/phases/{phase_id}/board.csv", response_class=PlainTextResponse)
def board_csv_route(phase_id: Id, request: Request, c: Annotated[Caller, Depends(caller)], part: Literal["public", "private"] = "public") -> Response:
    """The board as CSV."""
    body = boards(request).rendered(phase_id, part, organiser=bool(c.user and c.user.is_organiser), fmt="csv")
    return Response(body, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="phase-{phase_id}-{part}.csv"'})


def boards(request: Request) -> Boards:
    """The app's board cache."""
    return request.app.state.boards
