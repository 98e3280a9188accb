"""What the API and the pages show of challenges, phases and submissions, depending on who asks.

One place decides what leaves the server: private scores appear only for organisers, or for the
submitting team once the phase is revealed; a sanity phase shows the team its scoring log, the other
phases only the failure class and the file's problems (which concern the file, not the labels).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lesionbench.server.db import Challenge, Phase, Submission, Team, User, utcnow
from lesionbench.server.service import quota_state, team_of


def phase_view(s: Session, p: Phase, user: User | None) -> dict[str, Any]:
    """A phase, with the caller's team quota when they have a team."""
    out: dict[str, Any] = {
        "id": p.id, "name": p.name, "kind": p.kind, "task": p.task, "task_version": p.task_version, "state": p.state,
        "revealed": p.revealed, "opens_at": p.opens_at, "closes_at": p.closes_at,
        "limits": {"per_window": p.quota_per_window, "window_hours": p.quota_window_hours, "total": p.quota_total, "max_concurrent": p.max_concurrent, "final_selection_n": p.final_selection_n},
        "allow_embeddings": p.allow_embeddings,
    }  # fmt: skip
    team = team_of(s, user, p.challenge_id)
    if team is not None:
        out["quota"] = quota_state(s, p, team.id, utcnow())
    return out


def challenge_view(s: Session, c: Challenge, user: User | None) -> dict[str, Any]:
    """A challenge with the phases the caller may see and the caller's team."""
    organiser = bool(user and user.is_organiser)
    phases = s.scalars(select(Phase).where(Phase.challenge_id == c.id).order_by(Phase.id)).all()
    team = team_of(s, user, c.id)
    return {
        "slug": c.slug, "title": c.title, "description": c.description, "team_signup": c.team_signup,
        "phases": [phase_view(s, p, user) for p in phases if organiser or p.state != "draft"],
        "team": None if team is None else {"id": team.id, "name": team.name},
    }  # fmt: skip


def submission_view(s: Session, sub: Submission, phase: Phase, user: User | None) -> dict[str, Any]:
    """A submission as its team (or an organiser) sees it."""
    organiser = bool(user and user.is_organiser)
    team = s.get(Team, sub.team_id)
    out: dict[str, Any] = {
        "id": sub.id, "phase_id": sub.phase_id, "team": team.name if team else None, "kind": sub.kind, "filename": sub.filename,
        "file_sha256": sub.file_sha256, "size": sub.size, "description": sub.description, "status": sub.status,
        "failure_class": sub.failure_class, "message": sub.message, "counted": sub.counted, "selected": sub.selected,
        "created_at": sub.created_at, "finished_at": sub.finished_at, "n_public": sub.n_public,
        "public": json.loads(sub.public_json) if sub.public_json else None,
        "model_card": json.loads(sub.model_card_json) if sub.model_card_json else None,
    }  # fmt: skip
    if phase.kind == "sanity" or organiser:
        out["log"] = sub.log
    if organiser or phase.revealed:
        out["private"] = json.loads(sub.private_json) if sub.private_json else None
        out["n_private"] = sub.n_private
    return out
