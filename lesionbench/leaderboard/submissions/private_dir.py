"""Checks that keep the organiser store private and apart from the public one.

The organiser folder holds private scores, labelled predictions, the quota ledger and ``challenge.toml``
(the quotas). Found already there, it is trusted only when it is the current user's and neither group
nor others have any access (mode 0700): a folder made with a plain ``mkdir`` (0755) lets every local
user read the private scores, and a folder that another user made in a world-writable parent (``/tmp``)
carries that user's quotas. :func:`check_private_folder` refuses both before anything is read or written;
:func:`lesionbench.leaderboard.submissions.organiser.OrganiserStore` calls it, and writes its files with mode 0600.

:func:`check_apart` refuses an organiser store that is (or lies inside, or holds) the public results
folder, and an organiser MLflow store that is the public one: whatever is published would carry the
private scores and labels with it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.tracking.mlflow_sink import absolute_sqlite_uri, redact_uri

#: Mode of organiser files and folders: the owner only.
FILE_MODE = 0o600
DIR_MODE = 0o700


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_private_folder(root: str | Path) -> None:
    """Refuse an existing organiser folder that is not the current user's or that group or others may use.

    A missing folder passes (it is created with mode 0700). Not on POSIX (no uid): nothing to check."""
    root = Path(root)
    if not hasattr(os, "getuid"):
        return
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigurationError(f"Organiser folder {root} cannot be examined ({exc.strerror or exc}); give an --organiser-dir you own.") from None
    me = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid != me:
            raise ConfigurationError(f"Organiser folder {root} is a link owned by {_owner(st.st_uid)}, not you; remove it or give another --organiser-dir.")
        st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"Organiser folder {root} is not a folder; give an --organiser-dir that is one (or none yet: it is created mode 0700).")
    if st.st_uid != me:
        raise ConfigurationError(
            f"Organiser folder {root} belongs to {_owner(st.st_uid)}, not you ({_owner(me)}): its challenge settings and ledger "
            "are not yours to trust. Give an --organiser-dir of your own (created mode 0700 when it does not exist)."
        )
    if st.st_mode & 0o077:
        raise ConfigurationError(
            f"Organiser folder {root} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may read the private scores "
            f"and labels (or change the quotas). Run `chmod -R go-rwx {root}` and try again."
        )


def check_private_file(path: str | Path) -> None:
    """Refuse a file of the organiser folder (``challenge.toml``) that is not the current user's or that others may write."""
    path = Path(path)
    if not hasattr(os, "getuid") or not path.exists():
        return
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise ConfigurationError(f"{path} belongs to {_owner(st.st_uid)}, not you: its settings are not yours to trust. Remove it, or write your own.")
    if st.st_mode & 0o022:
        raise ConfigurationError(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: others may change it. Run `chmod 600 {path}` and try again.")


def make_private_dirs(path: str | Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700 (``Path.mkdir(parents=True)`` gives parents 0777 less the umask)."""
    path = Path(path)
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        p.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def _sqlite_path(uri: str | None) -> Path | None:
    m = re.match(r"sqlite:///(.+)$", absolute_sqlite_uri(uri)) if uri else None
    return Path(m.group(1)).expanduser().resolve() if m and not m.group(1).startswith("file:") else None


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_apart(organiser_dir: str | Path, *, results_dir: str | Path | None = None, tracking_uri: str | None = None, organiser_tracking_uri: str | None = None) -> None:
    """Refuse an organiser store that shares a place with the public store (module docstring)."""
    org = Path(organiser_dir).expanduser().resolve()
    if results_dir is not None:
        res = Path(results_dir).expanduser().resolve()
        if _overlap(org, res):
            raise ConfigurationError(
                f"The organiser folder {org} and the public results folder {res} overlap: publishing the results would publish "
                "the private scores and labels. Give an --organiser-dir outside the results folder (the default is beside it)."
            )
    public_db = _sqlite_path(tracking_uri)
    if public_db is not None and public_db.is_relative_to(org):
        raise ConfigurationError(f"The public MLflow store {public_db} lies inside the organiser folder {org}; give a --tracking-uri outside it.")
    if organiser_tracking_uri is None:
        return
    if tracking_uri is not None and absolute_sqlite_uri(tracking_uri).rstrip("/") == absolute_sqlite_uri(organiser_tracking_uri).rstrip("/"):
        raise ConfigurationError(
            f"The organiser's MLflow store is the public one ({redact_uri(tracking_uri)}): private scores would be logged where anyone "
            "reads the leaderboard. Give an --organiser-tracking-uri of its own (default: mlflow.db in the organiser folder)."
        )
    org_db = _sqlite_path(organiser_tracking_uri)
    if org_db is not None and results_dir is not None and org_db.is_relative_to(Path(results_dir).expanduser().resolve()):
        raise ConfigurationError(f"The organiser's MLflow store {org_db} lies inside the public results folder; give an --organiser-tracking-uri outside it.")
    if org_db is not None and public_db is not None and org_db.parent == public_db.parent:
        raise ConfigurationError(
            f"The organiser's MLflow store {org_db} and the public one {public_db} share a folder (and its mlartifacts/); "
            "give an --organiser-tracking-uri in the organiser folder."
        )
