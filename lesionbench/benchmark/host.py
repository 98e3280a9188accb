"""What lesionbench needs from the host system: the CPU cores it may use, files written atomically,
and streaming file digests. Shared by the harness, the encoders, the tasks and the leaderboard."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share; else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def inference_device(device: str | None, threads: int | None) -> tuple[Any, int]:
    """An encoder's torch device (``device``, else CUDA when available, else CPU) and its CPU thread count
    (``threads``, else every usable core), set now for CPU inference. Dask tasks set the count again in their
    own thread (:func:`lesionbench.scaleout.extract.pin_torch_threads`). One clear error for an unknown device
    or CUDA asked for where there is none."""
    import torch

    from lesionbench.benchmark.errors import ConfigurationError

    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise ConfigurationError(f"Unknown torch device {device!r} ({exc}); use cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"Device {device!r} asked for, but CUDA is not available here; use --device cpu.")
    n = int(threads or usable_cores())
    if dev.type == "cpu":
        torch.set_num_threads(n)
    return dev, n


def current_umask() -> int:
    """The process's file-mode creation mask.

    Read from ``/proc/self/status`` (Linux): ``os.umask`` can only be read by setting it, and the mask is
    process-wide, so a set-and-restore would let another thread create files with the temporary mask in
    between. The set-and-restore is only the fallback where ``/proc`` has no ``Umask:`` line (macOS, old kernels).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object], *, mode: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffixes), then rename it into place.

    A crash leaves either the old file or no file, never a half-written one, so a re-run can trust any
    file that exists. The temporary name starts with a dot, so globs such as ``shard-*.npz`` skip it.
    The file gets the permissions a plain ``open(path, "w")`` would give it (those of the file it replaces,
    else ``0o666`` less the umask), not ``mkstemp``'s private ``0o600``: a lab's shared cache or data folder
    must stay readable to the colleagues the umask admits. ``mode`` sets the permissions instead (``0o600``
    for the organiser's private files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~current_umask()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, mode)
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
