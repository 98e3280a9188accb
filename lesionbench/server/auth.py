"""Who is asking: passwords (argon2), browser sessions (signed cookies + CSRF), API tokens, rate limits.

- Passwords are hashed with argon2-cffi's defaults (argon2id); a hash with outdated parameters is
  re-hashed at the next sign-in.
- A browser session is an itsdangerous-signed, time-limited cookie holding the user id and a random
  CSRF token; a state-changing request authenticated by the cookie must echo that token (form field
  ``csrf_token`` or header ``X-CSRF-Token``). Token-authenticated requests carry no cookie, so need none.
- API tokens look like ``lb_<prefix>_<secret>``: shown once, stored as the prefix and the SHA-256 of the
  whole token, scoped (``read``, ``submit``, ``admin``), revocable, with an optional expiry.
- Rate limits: a sliding window per key (sign-in per address and per e-mail, submissions per team),
  in the server process (one uvicorn worker per database is the documented layout).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.server.db import ApiToken, User, utcnow

logger = logging.getLogger(__name__)

SCOPES = ("read", "submit", "admin")
SESSION_COOKIE = "lb_session"
SESSION_MAX_AGE_S = 7 * 24 * 3600
TOKEN_PREFIX = "lb_"

_hasher = PasswordHasher()


def use_password_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Replace the password hasher (tests use argon2's cheapest profile); returns the previous one."""
    global _hasher, _dummy
    previous, _hasher, _dummy = _hasher, hasher, None
    return previous


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``."""
    return _hasher.hash(password)


def check_password(user: User, password: str) -> bool:
    """True when ``password`` is the user's; re-hashes an outdated hash in place (caller commits)."""
    try:
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


# A dummy hash, verified when the e-mail is unknown, so a sign-in takes as long either way.
_dummy: str | None = None


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user with this e-mail and password, or None (same work whether or not the e-mail exists)."""
    user = None if "\x00" in email else session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        global _dummy
        _dummy = _dummy or _hasher.hash("lesionbench-no-such-user")
        try:
            _hasher.verify(_dummy, password)
        except VerificationError:
            pass
        return None
    return user if check_password(user, password) else None


# ------------------------------------------------------------------------------------ tokens
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(session: Session, user: User, *, scopes: list[str], name: str = "", expires_in_days: int | None = 90) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns (row, the secret token: shown once, never stored)."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigurationError(f"Token scopes {scopes!r} are not valid; choose one or more of {', '.join(SCOPES)}.")
    if "admin" in scopes and not user.is_organiser:
        raise PermissionError("only organisers may create admin tokens")
    prefix = secrets.token_hex(6)
    secret = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    expires = None if expires_in_days is None else utcnow() + timedelta(days=expires_in_days)
    row = ApiToken(user_id=user.id, name=name[:64], prefix=prefix, digest=_digest(secret), scopes=" ".join(sorted(set(scopes))), expires_at=expires)
    session.add(row)
    session.flush()
    return row, secret


def token_user(session: Session, token: str) -> tuple[User, set[str], int | None] | None:
    """The user, scopes and (when its last use is to be recorded) the token id of a valid (known,
    unrevoked, unexpired) token; None otherwise. Reads only: :func:`touch_token` records the use."""
    parts = token.split("_")
    if len(parts) < 3 or not token.startswith(TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.prefix == parts[1]))
    if row is None or not hmac.compare_digest(row.digest, _digest(token)):
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    # last use at minute resolution: a write per request would serialise every reader on SQLite
    touch = row.id if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1) else None
    user = session.get(User, row.user_id)
    return (user, set(row.scopes.split()), touch) if user is not None else None


def touch_token(db: Any, token_id: int | None) -> None:
    """Record a token's use (best effort, in its own short write transaction; a busy database skips it)."""
    if token_id is None:
        return
    from sqlalchemy import update
    from sqlalchemy.exc import OperationalError

    try:
        with db.session(lock=True) as s:
            s.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))
    except OperationalError as exc:  # the use is bookkeeping; never fail a request over it
        logger.debug("Could not record the use of token %s: %s", token_id, exc)


# ------------------------------------------------------------------------------------ sessions
@dataclass(frozen=True)
class BrowserSession:
    """What the signed cookie says: who, and the CSRF token of this session."""

    user_id: int
    csrf: str


class SessionSigner:
    """Signs and reads the session cookie with the server's secret key."""

    def __init__(self, secret_key: str):
        if len(secret_key) < 16:
            raise ConfigurationError("The server's secret key is shorter than 16 characters; set LESIONBENCH_SECRET_KEY to a long random string.")
        self._s = URLSafeTimedSerializer(secret_key, salt="lesionbench-session")

    def issue(self, user_id: int) -> tuple[str, BrowserSession]:
        """A new cookie value for ``user_id`` with a fresh CSRF token."""
        sess = BrowserSession(user_id, secrets.token_urlsafe(24))
        return self._s.dumps({"u": sess.user_id, "c": sess.csrf}), sess

    def read(self, cookie: str | None) -> BrowserSession | None:
        """The session in a cookie, or None when absent, forged or older than :data:`SESSION_MAX_AGE_S`."""
        if not cookie:
            return None
        try:
            data: Any = self._s.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("c"), str):
            return None
        return BrowserSession(data["u"], data["c"])


def csrf_ok(sess: BrowserSession, given: str | None) -> bool:
    """True when ``given`` is this session's CSRF token (constant-time)."""
    return bool(given) and hmac.compare_digest(sess.csrf, str(given))


# ------------------------------------------------------------------------------------ limits
class RateLimiter:
    """At most ``limit`` events per ``window_s`` seconds per key (sliding window, thread-safe)."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Record an event; None when allowed, else the seconds until the next one is."""
        now = time.monotonic()
        with self._lock:
            q = self._events.setdefault(key, deque())
            while q and q[0] <= now - self.window_s:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.0, q[0] + self.window_s - now)
            q.append(now)
            if len(self._events) > 100_000:  # bounded memory under a flood of distinct keys
                self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self.window_s}
            return None


def is_expired(when: datetime | None) -> bool:
    """True for a past expiry."""
    return when is not None and when <= utcnow()
