"""The challenge server's operations, shared by the JSON API and the HTML pages.

Every function takes the acting user (None: anonymous) and checks what that user may do before it
reads or writes anything: organisers run challenges and phases; a participant acts for the one team
they belong to in a challenge; nobody reads another team's submissions. The quota check and the new
submission are one write transaction holding the team's lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
``SELECT ... FOR UPDATE`` on the team row), so simultaneous uploads cannot overrun a quota.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.server.db import AuditEntry, Challenge, Database, Job, Phase, Submission, Team, TeamMember, User, utcnow

PHASE_KINDS = ("sanity", "public", "final")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,63}$")


class ServerError(LesionbenchError):
    """A refused request; ``status`` is its HTTP status code."""

    status = 400

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class NotAuthenticated(ServerError):
    status = 401


class Forbidden(ServerError, PermissionError):
    status = 403


class NotFound(ServerError, LookupError):
    status = 404


class Conflict(ServerError, ValueError):
    status = 409


class Invalid(ServerError, ValueError):
    status = 422


class QuotaExceeded(ServerError):
    status = 429


def audit(s: Session, user: User | None, action: str, detail: str = "") -> None:
    """Record an action in the audit log."""
    s.add(AuditEntry(user_id=None if user is None else user.id, action=action, detail=detail[:2000]))


def need_user(user: User | None) -> User:
    """The user, or 401."""
    if user is None:
        raise NotAuthenticated("sign in first (POST /api/v1/session) or send an API token: Authorization: Bearer lb_...")
    return user


def need_organiser(user: User | None) -> User:
    """The user when an organiser, else 401/403."""
    user = need_user(user)
    if not user.is_organiser:
        raise Forbidden("only organisers may do this")
    return user


def get_challenge(s: Session, slug: str) -> Challenge:
    """The challenge ``slug`` or 404."""
    c = s.scalar(select(Challenge).where(Challenge.slug == slug))
    if c is None:
        raise NotFound(f"no challenge {slug!r}; GET /api/v1/challenges lists them")
    return c


def get_phase(s: Session, phase_id: int) -> Phase:
    """The phase or 404 (draft phases exist for organisers only; callers check)."""
    p = s.get(Phase, phase_id)
    if p is None:
        raise NotFound(f"no phase {phase_id}")
    return p


def visible_phase(s: Session, phase_id: int, user: User | None) -> Phase:
    """The phase when ``user`` may see it: drafts are the organisers' only."""
    p = get_phase(s, phase_id)
    if p.state == "draft" and not (user is not None and user.is_organiser):
        raise NotFound(f"no phase {phase_id}")
    return p


def team_of(s: Session, user: User | None, challenge_id: int) -> Team | None:
    """The user's team in the challenge, or None."""
    if user is None:
        return None
    return s.scalar(select(Team).join(TeamMember, TeamMember.team_id == Team.id).where(TeamMember.user_id == user.id, TeamMember.challenge_id == challenge_id))


# ------------------------------------------------------------------------------ organisers
def create_challenge(s: Session, user: User | None, *, slug: str, title: str, description: str = "", team_signup: str = "open", n_boot: int = 1000) -> Challenge:
    """A new challenge (organisers only)."""
    user = need_organiser(user)
    if not _SLUG.match(slug):
        raise Invalid(f"challenge slug {slug!r}: use 2-63 lowercase letters, digits and '-', starting with a letter or digit")
    if team_signup not in ("open", "invitation"):
        raise Invalid(f"team_signup {team_signup!r}: choose 'open' (anyone may create a team) or 'invitation' (organisers create teams)")
    if s.scalar(select(Challenge.id).where(Challenge.slug == slug)) is not None:
        raise Conflict(f"challenge {slug!r} exists; choose another slug")
    c = Challenge(slug=slug, title=title[:200], description=description[:5000], team_signup=team_signup, n_boot=n_boot, created_by=user.id)
    s.add(c)
    s.flush()
    audit(s, user, "challenge.create", slug)
    return c


def create_phase(s: Session, user: User | None, challenge: Challenge, *, name: str, kind: str, task: str, task_version: str = "", **limits: Any) -> Phase:
    """A new phase in draft state (organisers only); ``limits``: quotas, deadlines, selection size."""
    user = need_organiser(user)
    if kind not in PHASE_KINDS:
        raise Invalid(f"phase kind {kind!r}: choose one of {', '.join(PHASE_KINDS)}")
    if not _NAME.match(name):
        raise Invalid(f"phase name {name!r}: 1-64 letters, digits, space and ._+()-")
    if s.scalar(select(Phase.id).where(Phase.challenge_id == challenge.id, Phase.name == name)) is not None:
        raise Conflict(f"challenge {challenge.slug!r} already has a phase {name!r}")
    for key in ("quota_per_window", "quota_window_hours", "quota_total", "max_concurrent", "final_selection_n"):
        if key in limits and (not isinstance(limits[key], int) or limits[key] < (1 if key != "quota_total" else 0)):
            raise Invalid(f"{key} must be a positive whole number, got {limits[key]!r}")
    opens, closes = limits.get("opens_at"), limits.get("closes_at")
    if opens is not None and closes is not None and closes <= opens:
        raise Invalid(f"closes_at ({closes.isoformat()}) must be after opens_at ({opens.isoformat()})")
    p = Phase(challenge_id=challenge.id, name=name, kind=kind, task=task, task_version=task_version, **limits)
    s.add(p)
    s.flush()
    audit(s, user, "phase.create", f"{challenge.slug}/{name} on {task}")
    return p


def set_phase_state(s: Session, user: User | None, phase: Phase, action: str) -> Phase:
    """open, close or reveal a phase (organisers only). Reveal needs a closed phase."""
    user = need_organiser(user)
    if action == "open":
        phase.state = "open"
    elif action == "close":
        if phase.state == "draft":
            raise Conflict(f"phase {phase.id} was never opened; open it first")
        phase.state = "closed"
    elif action == "reveal":
        if phase.state != "closed":
            raise Conflict(f"phase {phase.id} is {phase.state}; close it before revealing the private board")
        phase.revealed = True
    else:
        raise Invalid(f"unknown action {action!r}: open, close or reveal")
    audit(s, user, f"phase.{action}", str(phase.id))
    return phase


# ------------------------------------------------------------------------------------ teams
def _invite_digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def create_team(s: Session, user: User | None, challenge: Challenge, name: str) -> tuple[Team, str]:
    """A new team with ``user`` in it; returns the team and its invitation code (shown once).

    With ``team_signup == "invitation"`` only organisers create teams (and are not members)."""
    user = need_user(user)
    if not _NAME.match(name):
        raise Invalid(f"team name {name!r}: 1-64 letters, digits, space and ._+()-, starting with a letter or digit")
    if challenge.team_signup == "invitation" and not user.is_organiser:
        raise Forbidden(f"teams of {challenge.slug!r} are created by the organisers; ask them for an invitation link")
    join = not user.is_organiser
    if join and team_of(s, user, challenge.id) is not None:
        raise Conflict("you are already in a team of this challenge (one team per person per challenge)")
    if s.scalar(select(Team.id).where(Team.challenge_id == challenge.id, func.lower(Team.name) == name.lower())) is not None:
        raise Conflict(f"a team named {name!r} exists in this challenge; choose another name")
    code = secrets.token_urlsafe(18)
    team = Team(challenge_id=challenge.id, name=name, invite_digest=_invite_digest(code))
    s.add(team)
    s.flush()
    if join:
        s.add(TeamMember(team_id=team.id, user_id=user.id, challenge_id=challenge.id))
    audit(s, user, "team.create", f"{challenge.slug}/{name}")
    return team, code


def new_invitation(s: Session, user: User | None, team: Team) -> str:
    """A fresh invitation code (the old one stops working); members and organisers only."""
    user = need_user(user)
    if not user.is_organiser:
        mine = team_of(s, user, team.challenge_id)
        if mine is None or mine.id != team.id:
            raise Forbidden("only the team's members and the organisers may invite to this team")
    code = secrets.token_urlsafe(18)
    team.invite_digest = _invite_digest(code)
    audit(s, user, "team.invite", str(team.id))
    return code


def join_team(s: Session, user: User | None, code: str) -> Team:
    """Join the team whose invitation ``code`` this is."""
    user = need_user(user)
    if user.is_organiser:
        raise Forbidden("organisers run the challenge and do not join teams; use a participant account")
    team = s.scalar(select(Team).where(Team.invite_digest == _invite_digest(code or "")))
    if team is None:
        raise NotFound("this invitation code is not valid (it may have been replaced); ask the team for a new link")
    if team_of(s, user, team.challenge_id) is not None:
        raise Conflict("you are already in a team of this challenge (one team per person per challenge)")
    s.add(TeamMember(team_id=team.id, user_id=user.id, challenge_id=team.challenge_id))
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict("you are already in a team of this challenge (one team per person per challenge)") from exc
    audit(s, user, "team.join", str(team.id))
    return team


# ------------------------------------------------------------------------------ submissions
def _phase_open(p: Phase, now: datetime) -> str | None:
    if p.state != "open":
        return f"phase {p.name!r} is {p.state}; submissions are accepted while it is open"
    if p.opens_at is not None and now < p.opens_at:
        return f"phase {p.name!r} opens at {p.opens_at.isoformat(timespec='minutes')} UTC"
    if p.closes_at is not None and now >= p.closes_at:
        return f"phase {p.name!r} closed at {p.closes_at.isoformat(timespec='minutes')} UTC"
    return None


def quota_state(s: Session, phase: Phase, team_id: int, now: datetime) -> dict[str, Any]:
    """Used and remaining quota of a team in a phase (counted submissions only)."""
    base = select(func.count(Submission.id)).where(Submission.phase_id == phase.id, Submission.team_id == team_id)
    in_window = s.scalar(base.where(Submission.counted.is_(True), Submission.created_at >= now - timedelta(hours=phase.quota_window_hours))) or 0
    total = s.scalar(base.where(Submission.counted.is_(True))) or 0
    running = s.scalar(base.where(Submission.status.in_(("queued", "running")))) or 0
    return {
        "window_hours": phase.quota_window_hours, "used_in_window": in_window, "per_window": phase.quota_per_window,
        "used_total": total, "total": phase.quota_total, "running": running, "max_concurrent": phase.max_concurrent,
    }  # fmt: skip


def accept_submission(db: Database, user: User | None, phase_id: int, *, kind: str, filename: str, digest: str, size: int, description: str = "", max_attempts: int = 3,
                      model_card: str | None = None) -> Submission:  # fmt: skip
    """Record an uploaded (already stored) file as a queued submission of the user's team, within quota."""
    if kind not in ("predictions", "embeddings"):
        raise Invalid(f"submission kind {kind!r}: choose 'predictions' or 'embeddings'")
    with db.session(lock=True) as s:
        user = need_user(user if user is None else s.get(User, user.id))
        phase = visible_phase(s, phase_id, user)
        if kind == "embeddings" and not phase.allow_embeddings:
            raise Invalid(f"phase {phase.name!r} takes predictions files only")
        team = team_of(s, user, phase.challenge_id)
        if team is None:
            raise Forbidden("join or create a team of this challenge before submitting")
        if not db.sqlite:  # serialise this team's quota checks; SQLite's BEGIN IMMEDIATE already did
            s.execute(select(Team.id).where(Team.id == team.id).with_for_update())
        now = utcnow()
        closed = _phase_open(phase, now)
        if closed:
            raise Conflict(closed)
        q = quota_state(s, phase, team.id, now)
        if q["used_in_window"] >= q["per_window"]:
            raise QuotaExceeded(f"team {team.name!r} used its {q['per_window']} submissions of the last {q['window_hours']} h in phase {phase.name!r}; failed runs caused by the server do not count", retry_after=3600)
        if q["used_total"] >= q["total"]:
            raise QuotaExceeded(f"team {team.name!r} used all {q['total']} submissions of phase {phase.name!r}")
        if q["running"] >= q["max_concurrent"]:
            raise QuotaExceeded(f"team {team.name!r} has {q['running']} submissions waiting or being scored (at most {q['max_concurrent']}); wait for one to finish", retry_after=30)
        sub = Submission(phase_id=phase.id, team_id=team.id, user_id=user.id, kind=kind, filename=filename[:255], file_sha256=digest, size=size, description=description[:500], model_card_json=model_card, created_at=now)
        s.add(sub)
        s.flush()
        s.add(Job(submission_id=sub.id, max_attempts=max_attempts))
        audit(s, user, "submission.create", f"{sub.id} phase {phase.id} team {team.id} sha256 {digest}")
        return sub


def readable_submission(s: Session, user: User | None, submission_id: int) -> tuple[Submission, Phase]:
    """A submission the user may read: their team's, or any for organisers (404 otherwise, so ids leak nothing)."""
    user = need_user(user)
    sub = s.get(Submission, submission_id)
    if sub is None:
        raise NotFound(f"no submission {submission_id}")
    phase = s.get(Phase, sub.phase_id)
    if not user.is_organiser:
        team = team_of(s, user, phase.challenge_id)
        if team is None or team.id != sub.team_id:
            raise NotFound(f"no submission {submission_id}")
    return sub, phase


def select_final(s: Session, user: User | None, phase: Phase, ids: list[int]) -> list[int]:
    """The team's choice of final submissions (at most ``final_selection_n``, scored, its own); [] clears it."""
    user = need_user(user)
    team = team_of(s, user, phase.challenge_id)
    if team is None:
        raise Forbidden("only a team's members choose its final submissions")
    if phase.state == "closed":
        raise Conflict(f"phase {phase.name!r} is closed; the selection is final")
    if len(ids) > phase.final_selection_n:
        raise Invalid(f"select at most {phase.final_selection_n} submissions, got {len(ids)}")
    subs = s.scalars(select(Submission).where(Submission.phase_id == phase.id, Submission.team_id == team.id)).all()
    mine = {x.id: x for x in subs}
    bad = [i for i in ids if i not in mine or mine[i].status != "scored"]
    if bad:
        raise Invalid(f"submissions {bad} are not scored submissions of your team in this phase")
    for x in subs:
        x.selected = x.id in ids
    audit(s, user, "submission.select", f"phase {phase.id} team {team.id}: {ids}")
    return sorted(ids)
