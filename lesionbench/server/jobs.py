"""Scoring jobs without a broker: a jobs table with leases.

A worker claims the oldest claimable job (queued, or running with an expired lease) and holds it under a
lease it renews while it works. PostgreSQL claims with ``SELECT ... FOR UPDATE SKIP LOCKED``, so workers
never wait for each other; SQLite claims inside ``BEGIN IMMEDIATE``, which serialises claims. Each claim
adds one attempt. A job whose lease expired (its worker died or hung) is claimed again; once it has used
``max_attempts`` it is an infrastructure failure: the submission shows so and does not count against the
team's quota. No submission stays "running" forever.

Completing a job is conditional on still holding the lease (owner and attempt): a worker that lost its
lease (another has re-claimed the job) cannot record a second score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update

from lesionbench.server.db import Database, Job, Submission, utcnow

logger = logging.getLogger(__name__)

#: How long a claim lasts unless renewed.
DEFAULT_LEASE_S = 120.0


@dataclass(frozen=True)
class Claim:
    """A job held by ``owner`` on its ``attempt``-th try."""

    job_id: int
    submission_id: int
    owner: str
    attempt: int


def _claimable(now):
    return or_(Job.state == "queued", (Job.state == "running") & (Job.lease_expires_at < now))


def fail_exhausted(db: Database) -> int:
    """Mark expired jobs that used all their attempts as infrastructure failures; returns how many."""
    now = utcnow()
    n = 0
    with db.session(lock=True) as s:
        q = select(Job).where(Job.state == "running", Job.lease_expires_at < now, Job.attempts >= Job.max_attempts)
        if not db.sqlite:
            q = q.with_for_update(skip_locked=True)
        for job in s.scalars(q):
            job.state, job.lease_owner, job.updated_at = "failed", None, now
            sub = s.get(Submission, job.submission_id)
            if sub is not None:
                sub.status, sub.failure_class, sub.counted, sub.finished_at = "failed", "infrastructure", False, now
                sub.message = f"the server could not score this submission in {job.attempts} attempts (worker lost or timed out); it does not count against your quota, please resubmit"
            n += 1
    if n:
        logger.warning("%d job(s) failed after their last attempt (infrastructure failures, not counted).", n)
    return n


def claim(db: Database, owner: str, *, lease_s: float = DEFAULT_LEASE_S) -> Claim | None:
    """Claim the oldest claimable job for ``owner``; None when there is none."""
    fail_exhausted(db)
    now = utcnow()
    with db.session(lock=True) as s:
        q = select(Job).where(_claimable(now), Job.attempts < Job.max_attempts).order_by(Job.id).limit(1)
        if not db.sqlite:
            q = q.with_for_update(skip_locked=True)
        job = s.scalars(q).first()
        if job is None:
            return None
        if job.state == "running":
            logger.warning("Job %d: the lease of %s expired; re-queued as attempt %d.", job.id, job.lease_owner, job.attempts + 1)
        job.state, job.attempts, job.lease_owner = "running", job.attempts + 1, owner
        job.lease_expires_at, job.updated_at = now + timedelta(seconds=lease_s), now
        sub = s.get(Submission, job.submission_id)
        if sub is not None:
            sub.status = "running"
        return Claim(job.id, job.submission_id, owner, job.attempts)


def renew(db: Database, c: Claim, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Extend the lease; False when it was lost (the job was re-claimed or finished)."""
    now = utcnow()
    with db.session() as s:
        res = s.execute(
            update(Job).where(Job.id == c.job_id, Job.lease_owner == c.owner, Job.attempts == c.attempt, Job.state == "running")
            .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
        )  # fmt: skip
        return res.rowcount == 1


def holds(s, c: Claim) -> Job | None:
    """The job row, locked, when ``c`` still holds its lease; None otherwise."""
    q = select(Job).where(Job.id == c.job_id, Job.lease_owner == c.owner, Job.attempts == c.attempt, Job.state == "running")
    if s.get_bind().dialect.name != "sqlite":
        q = q.with_for_update()
    return s.scalars(q).first()


def release_for_retry(db: Database, c: Claim) -> None:
    """Give the job back at once (an infrastructure error this attempt): re-queued, or failed after the last attempt."""
    with db.session(lock=True) as s:
        job = holds(s, c)
        if job is None:
            return
        job.state, job.lease_owner, job.lease_expires_at, job.updated_at = "queued", None, None, utcnow()
        sub = s.get(Submission, job.submission_id)
        if sub is not None:
            sub.status = "queued"
    fail_exhausted_now(db, c.job_id)


def fail_exhausted_now(db: Database, job_id: int) -> None:
    """A queued job that has used every attempt becomes an infrastructure failure."""
    with db.session(lock=True) as s:
        job = s.get(Job, job_id)
        if job is not None and job.state == "queued" and job.attempts >= job.max_attempts:
            job.state = "running"
            job.lease_expires_at = utcnow() - timedelta(seconds=1)
    fail_exhausted(db)
