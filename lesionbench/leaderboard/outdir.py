"""Replace the leaderboard's folder as a whole: build beside it, then swap.

Writing ``index.html``, ``leaderboard.json`` and the others one by one leaves, after a kill half-way, a
new JSON beside an old page. :func:`publish_folder` writes every file into a sibling folder and then swaps
it with the old one in one step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, with the old
folder kept under a dot name until the new one is in place), so a reader sees the old set or the new set.

The swap replaces the whole folder, so it refuses a folder that holds anything but a build's own files
(another tool's or the user's files would be removed with it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.host import current_umask

logger = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: the file system cannot; fall back
        return False
    raise OSError(err, os.strerror(err), str(b))


def check_out_folder(out: Path, names: frozenset[str]) -> None:
    """Refuse an ``out`` that is not a folder or holds files other than ``names`` (before anything is read)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigurationError(f"--out {out} is not a folder; give a folder for the leaderboard's files.")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in names)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ConfigurationError(
                f"--out {out} holds files the leaderboard did not write ({shown}); a build replaces the whole folder. "
                "Give an empty folder or the --out of an earlier build."
            )
    parent = out.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigurationError(f"Cannot write the leaderboard beside {out}: {parent} is not a writable folder. Give another --out.")


def publish_folder(out: str | Path, texts: Mapping[str, str]) -> Path:
    """Write ``texts`` (file name -> text) as the folder ``out``, replacing an earlier build in one swap."""
    out = Path(out)
    check_out_folder(out, frozenset(texts))
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.absolute().parent))
    try:
        os.chmod(new, 0o777 & ~current_umask())  # a published folder: readable as any folder the user makes
        for name, text in texts.items():
            path = new / name
            path.write_text(text, encoding="utf-8")
            os.chmod(path, 0o666 & ~current_umask())
        if not out.exists():
            os.rename(new, out)
            return out
        if _exchange(new, out):
            shutil.rmtree(new, ignore_errors=True)  # now the old build
            return out
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(new, out)
        shutil.rmtree(old, ignore_errors=True)
        return out
    finally:
        if new.exists():
            shutil.rmtree(new, ignore_errors=True)
