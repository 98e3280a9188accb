"""The challenge server's database: SQLAlchemy 2 models and the engine.

Embedded default: one SQLite file in the organiser folder, opened with WAL journaling, a busy timeout,
foreign keys on and ``synchronous=NORMAL`` (set on every new connection). PostgreSQL for real
deployments: ``LESIONBENCH_DATABASE_URL=postgresql+psycopg://user@host/db``. The schema is created and
changed by Alembic (:mod:`lesionbench.server.migrate`); :func:`create_all` exists for throwaway databases.

Private scores and labelled predictions live in this database and the blob store only; every query that
serves them to a person checks the phase's ``revealed`` flag (:mod:`lesionbench.server.board`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Engine, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from lesionbench.benchmark.errors import ConfigurationError

#: The environment variable naming the database (any SQLAlchemy URL; default: SQLite in the organiser folder).
DATABASE_ENV = "LESIONBENCH_DATABASE_URL"
#: SQLite waits this long for a lock before it reports "database is locked".
BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware (every timestamp the server stores)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC and read back timezone-aware on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every server table."""


class User(Base):
    """A person: organiser (``is_organiser``) or participant."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_organiser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """An API token: only its prefix and SHA-256 digest are stored; the secret is shown once."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(64))  # space-separated: read submit admin
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Challenge(Base):
    """A challenge: phases on task versions, teams, and how teams form (``team_signup``)."""

    __tablename__ = "challenges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    team_signup: Mapped[str] = mapped_column(String(16), default="open")  # open | invitation
    n_boot: Mapped[int] = mapped_column(Integer, default=1000)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Phase(Base):
    """One phase of a challenge on one task: sanity, public (live public board) or final (private part)."""

    __tablename__ = "phases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # sanity | public | final
    task: Mapped[str] = mapped_column(String(64))
    task_version: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default="draft")  # draft | open | closed
    revealed: Mapped[bool] = mapped_column(Boolean, default=False)
    opens_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    quota_per_window: Mapped[int] = mapped_column(Integer, default=5)
    quota_window_hours: Mapped[int] = mapped_column(Integer, default=24)
    quota_total: Mapped[int] = mapped_column(Integer, default=100)
    max_concurrent: Mapped[int] = mapped_column(Integer, default=2)
    final_selection_n: Mapped[int] = mapped_column(Integer, default=2)
    allow_embeddings: Mapped[bool] = mapped_column(Boolean, default=True)
    __table_args__ = (UniqueConstraint("challenge_id", "name"),)


class Team(Base):
    """A team in one challenge; ``invite_digest`` is the SHA-256 of its current invitation code."""

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    invite_digest: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("challenge_id", "name"),)


class TeamMember(Base):
    """A person in a team; one team per person per challenge (the unique constraint)."""

    __tablename__ = "team_members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"))
    __table_args__ = (UniqueConstraint("challenge_id", "user_id"),)


class Submission(Base):
    """One uploaded file of a team for a phase; the file itself is in the blob store under ``file_sha256``.

    ``status``: queued | running | scored | failed; ``failure_class``: submission (the file's fault:
    counts against the quota) or infrastructure (the server's: never counts). ``public_json`` and
    ``private_json`` hold the metrics with CIs; ``predictions_sha256`` the labelled per-lesion table
    (organiser-only blob, used for the board's paired statistics).
    """

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))  # predictions | embeddings
    filename: Mapped[str] = mapped_column(String(255), default="")
    file_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(String(500), default="")
    #: The team's model card (:class:`lesionbench.server.schemas.ModelCard`, validated JSON), or None.
    model_card_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    failure_class: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")
    counted: Mapped[bool] = mapped_column(Boolean, default=True)
    selected: Mapped[bool] = mapped_column(Boolean, default=False)
    public_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    private_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    main_public: Mapped[float | None] = mapped_column(nullable=True)
    predictions_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n_public: Mapped[int] = mapped_column(Integer, default=0)
    n_private: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    """A scoring job with a lease (no broker): see :mod:`lesionbench.server.jobs`."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # queued | running | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Who did what, for the organiser (sign-ins, tokens, phase changes, submissions)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


# ------------------------------------------------------------------------------------ engine
def default_url(organiser_dir: str | Path) -> str:
    """``$LESIONBENCH_DATABASE_URL``, else SQLite ``lesionbench.db`` in ``organiser_dir``."""
    env = os.environ.get(DATABASE_ENV)
    if env:
        return env
    path = Path(organiser_dir).expanduser().resolve() / "lesionbench.db"
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # driver-level autocommit: SQLAlchemy's "begin" event below emits BEGIN itself, so that a write
    # transaction can take the database lock up front (BEGIN IMMEDIATE) instead of failing to upgrade later
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", f"busy_timeout={BUSY_TIMEOUT_MS}", "foreign_keys=ON", "synchronous=NORMAL"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, busy timeout, foreign keys and explicit BEGIN [IMMEDIATE]."""
    if not url or "://" not in url:
        raise ConfigurationError(f"Database URL {url!r} is not a URL; give e.g. sqlite:///path/lesionbench.db or postgresql+psycopg://user@host/db in {DATABASE_ENV}.")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def is_sqlite(engine: Engine) -> bool:
    """True for the embedded database."""
    return engine.dialect.name == "sqlite"


def create_all(engine: Engine) -> None:
    """Create every table directly (tests, throwaway databases); deployments use ``lesionbench db upgrade``."""
    Base.metadata.create_all(engine)


def _refuse_unlocked_write(session: Session, _context: Any, _instances: Any) -> None:
    """On SQLite, an ORM write in a session opened without ``lock=True`` is a bug that shows only under load: a
    deferred transaction that read first cannot take the write lock once another writer committed (SQLite
    answers "database is locked" at once, whatever the busy timeout). Refuse it every time instead."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("An ORM write in a read session: open it with db.session(lock=True) (SQLite takes its write lock at BEGIN).")


class Database:
    """An engine and two session factories: ordinary, and write-locking (SQLite ``BEGIN IMMEDIATE``)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.locking_sessions = sessionmaker(engine.execution_options(immediate=True), expire_on_commit=False)
        if is_sqlite(engine):
            event.listen(self.sessions, "before_flush", _refuse_unlocked_write)

    @classmethod
    def from_url(cls, url: str) -> Database:
        """A database for ``url`` (see :func:`make_engine`)."""
        return cls(make_engine(url))

    @property
    def sqlite(self) -> bool:
        return is_sqlite(self.engine)

    @contextmanager
    def session(self, *, lock: bool = False) -> Iterator[Session]:
        """A session committed on success and rolled back on error; ``lock``: take SQLite's write lock at BEGIN
        (PostgreSQL callers lock rows with ``SELECT ... FOR UPDATE`` instead)."""
        factory = self.locking_sessions if lock else self.sessions
        with factory() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise
