"""What lesionbench needs from the host system: the CPU cores it may use, files written atomically,
and streaming file digests. Shared by the harness, the encoders, the tasks and the leaderboard."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share; else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffixes), then rename it into place.

    A crash leaves either the old file or no file, never a half-written one, so a re-run can trust any
    file that exists. The temporary name starts with a dot, so globs such as ``shard-*.npz`` skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    """The sha256 hex digest of a file, read in chunks (weights files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()
