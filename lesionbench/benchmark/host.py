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


#: The distributions whose versions a result records (the first installed of each group): the harness and what moves its numbers.
ENV_PACKAGES = (("lesionbench",), ("numpy",), ("scipy",), ("pandas",), ("scikit-learn",), ("scikit-survival",), ("torch",),
                ("monai",), ("SimpleITK", "simpleitk"), ("pyradiomics", "pyradiomics-bhklab"), ("mlflow", "mlflow-skinny"))  # fmt: skip


def environment(encoder: Any = None) -> dict[str, Any]:
    """What produced a result: Python, platform, package versions, the torch device and git commits.

    ``git_commit`` holds the commit of lesionbench's source checkout (with ``-dirty`` when tracked files
    were changed) and, for an encoder from another package, that package's: its checkout's commit, else the
    commit pip recorded for a ``git+`` install (``direct_url.json``). A value that cannot be known is left out.
    """
    import platform
    import sys

    packages: dict[str, str] = {}
    for group in ENV_PACKAGES:
        if (found := _first_installed(group)) is not None:
            packages[found[0]] = found[1]
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(terse=True), "packages": packages}
    commits: dict[str, str] = {}
    if (own := git_commit(Path(__file__).resolve().parents[2])) is not None:
        commits["lesionbench"] = own
    if encoder is not None:
        env["device"] = str(getattr(encoder, "device", None) or "cpu")
        top = type(encoder).__module__.split(".")[0]
        if top not in ("lesionbench", "__main__", "builtins"):
            found = _first_installed((top, top.replace("_", "-")))
            dist = found[0] if found else None
            if found is not None:
                packages.setdefault(*found)
            where = Path(getattr(sys.modules.get(top), "__file__", None) or ".").resolve().parent
            # a module file's folder or a package's parent, or (src layout) the folder above that
            commit = next((c for root in (where, where.parent, where.parent.parent) if (c := git_commit(root))), None)
            commit = commit or (_pip_vcs_commit(dist) if dist else None)
            if commit is not None:
                commits[dist or top] = commit
    env["git_commit"] = commits
    return env


def _first_installed(names: tuple[str, ...]) -> tuple[str, str] | None:
    """``(name, version)`` of the first of ``names`` installed as a distribution."""
    from importlib import metadata

    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def git_commit(root: Path) -> str | None:
    """The HEAD commit of the git checkout whose top level is ``root`` (``-dirty`` with changed tracked files); None otherwise."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    # only root's own checkout: a package installed in a virtual environment that lives inside some repository is not
    if not (root / ".git").exists() or (commit := git("rev-parse", "HEAD")) is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit


def _pip_vcs_commit(dist: str) -> str | None:
    """The commit pip recorded for a package installed from a git URL (PEP 610 ``direct_url.json``)."""
    import json
    from importlib import metadata

    try:
        text = metadata.distribution(dist).read_text("direct_url.json")
        return str(json.loads(text)["vcs_info"]["commit_id"]) if text else None
    except (metadata.PackageNotFoundError, ValueError, KeyError, TypeError):
        return None
