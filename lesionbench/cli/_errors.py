"""What every command's output passes through: secrets redacted from every line, and the environment's
failures (an output folder that is read-only, full or a file; a closed standard output) as one ``error:``
line instead of a traceback.

- :class:`RedactingFilter` sits on the console's log handlers: a record from any library (urllib3's retry
  warnings quote the request URL with its ``?token=``) is written with the credentials of every URI in it
  replaced by ``***`` (:func:`lesionbench.benchmark.tracking.mlflow_sink.redact_uri`).
- :func:`redacted_warnings` does the same for the lines ``warnings.warn`` prints while a command runs (restored after).
- :func:`os_error_line` words an ``OSError`` as the one line ``main`` prints, naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path


def redact(text: str) -> str:
    """``text`` with the user, password and secret-looking query values of every URI in it replaced by ``***``."""
    from lesionbench.benchmark.tracking.mlflow_sink import redact_uri

    return redact_uri(text)


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record's message with its secrets redacted (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not format: the handler reports it
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Put one :class:`RedactingFilter` on each handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


@contextlib.contextmanager
def redacted_warnings() -> Iterator[None]:
    """While the block runs, warnings are shown with their secrets redacted. The *formatter* is wrapped, not
    ``showwarning``: a caller recording warnings (``catch_warnings(record=True)``) still gets them."""
    formatter = warnings.formatwarning

    def redacting(message, category, filename, lineno, line=None):
        return redact(formatter(message, category, filename, lineno, line))

    warnings.formatwarning = redacting
    try:
        yield
    finally:
        warnings.formatwarning = formatter


_FIXES = {
    errno.EACCES: "you may not write there: choose a folder you can write to (or fix its permissions)",
    errno.EPERM: "you may not write there: choose a folder you can write to (or fix its permissions)",
    errno.EROFS: "the file system is read-only: choose a folder on a writable disk",
    errno.ENOSPC: "the disk is full: free some space or choose a folder on another disk",
    getattr(errno, "EDQUOT", -2): "your disk quota is used up: free some space or choose a folder on another disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EPIPE: "standard output was closed (a pipe whose reader stopped)",
    errno.EBADF: "standard output or error is closed: run the command with its output going to a file or terminal",
}


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError`` the environment raised: the path(s), the system's reason and the fix."""
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or type(exc).__name__
    fix = _FIXES.get(exc.errno or -1, "check the path and try again")
    return redact(f"{where + ': ' if where else ''}{reason} ({fix}).")


def stdout_problem() -> str | None:
    """Why the command's standard output cannot be written (closed with ``>&-``), or None."""
    out = sys.stdout
    if out is None:
        return "standard output is closed (>&-); run the command with its output going to a file, a pipe or a terminal."
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # captured (tests, notebooks): writable
    try:
        os.fstat(fd)
    except OSError:
        return "standard output is closed (>&-); run the command with its output going to a file, a pipe or a terminal."
    return None


def writable_output(path: Path) -> None:
    """Refuse, before any work, an output file whose folder cannot hold it (a file on the way, a read-only or
    full folder, a folder where the file should be): one :class:`~lesionbench.benchmark.errors.ConfigurationError`."""
    import tempfile

    from lesionbench.benchmark.errors import ConfigurationError

    path = Path(path)
    if path.is_dir():
        raise ConfigurationError(f"output {path} is a folder; give a file name, e.g. {path / 'features.csv'}.")
    existing = next((f for f in (path.parent, *path.parent.parents) if f.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigurationError(f"output {path}: {existing} is a file, not a folder; choose another path.")
    try:  # in the nearest folder that exists (the rest is made at the end): nothing is left behind
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".lesionbench-write-check-"):
            pass
    except OSError as exc:
        raise ConfigurationError(f"output {path} cannot be written: {os_error_line(exc)}") from None
