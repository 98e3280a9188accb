"""The feature cache: lesion features stored per encoder fingerprint, keyed by what they depend on.

:func:`lesion_keys` gives each manifest row a key made of the image's identity (path, size, mtime, inode, ctime), the seed
coordinates (exact floats) and, for encoders whose features depend on the mask, the mask's identity, the
diameter and the mask label; :class:`FeatureCache` stores features under those keys in append-only shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import stat
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.data.reading import file_identity
from lesionbench.benchmark.types import COORDS, EncoderMeta
from lesionbench.benchmark.types import is_missing as _is_missing

logger = logging.getLogger(__name__)

#: Shard files in one cache folder before they are merged into one on the next read.
COMPACT_AFTER = 64


class FeatureCache:
    """Append-only store of lesion features for one encoder fingerprint.

    ``<root>/<encoder name>/<fingerprint>/``: ``meta.json`` (the encoder's metadata, for humans) and
    ``shard-*.npz`` files, each holding ``keys`` (lesion keys) and ``features`` (k, d) float32.
    Shards are written to a temporary name and renamed, so a killed run never leaves a half-written one.

    A cache is only as trustworthy as who can write to it: when the folder (or the encoder's folder or the
    cache root above it) belongs to another user or is writable by others (or by a group not the user's own), :meth:`load` warns and
    uses none of its shards (every lesion is recomputed); a shard owned by another user or writable by others
    is skipped with a warning. A key found in two shards with different features (a shard dropped in beside
    genuine ones) is recomputed with a warning, and the conflicting entries are removed.
    """

    def __init__(self, root: Path, meta: EncoderMeta):
        self.meta = meta
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", meta.name) or "encoder"
        self.root = Path(root)
        self.dir = Path(root) / safe / meta.fingerprint()
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_file = self.dir / "meta.json"
        if not meta_file.exists():
            atomic_write(meta_file, lambda tmp: tmp.write_text(json.dumps(meta.to_dict(), indent=1, default=str)))

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz"))

    def untrusted(self) -> str | None:
        """Why this cache's folders cannot be trusted (another user's, or writable by others), or None."""
        if not hasattr(os, "geteuid"):  # no POSIX owners (Windows): nothing to check
            return None
        for folder in (self.dir, self.dir.parent, self.root):
            why = _foreign(folder)
            if why is not None:
                return f"{folder} {why}"
        return None

    def load(self) -> dict[str, np.ndarray]:
        """Every cached lesion: key -> feature vector (none when the folder is untrusted, see the class)."""
        found: dict[str, np.ndarray] = {}
        if (why := self.untrusted()) is not None:
            logger.warning(
                "Not using the feature cache %s: %s, so its shards may have been planted. Every lesion is recomputed. "
                "Fix: chmod go-w the folder (and make it yours), or give a --cache-dir of your own.", self.dir, why
            )
            return found
        conflicts: set[str] = set()
        shards = self._shards()
        for s in shards:
            if hasattr(os, "geteuid") and (why := _foreign(s)) is not None:
                logger.warning("Ignoring feature cache shard %s: it %s; its lesions are recomputed.", s, why)
                continue
            try:
                with np.load(s, allow_pickle=False) as z:
                    keys, feats = z["keys"], z["features"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a damaged file: recompute
                logger.warning("Ignoring unreadable feature cache shard %s (%s); its lesions are recomputed.", s, exc)
                continue
            if feats.ndim != 2 or feats.shape[1] != self.meta.feature_dim or len(keys) != len(feats):
                logger.warning("Ignoring feature cache shard %s of shape %s (expected (k, %d)).", s, feats.shape, self.meta.feature_dim)
                continue
            finite = np.isfinite(feats).all(axis=1)
            if not finite.all():  # written before non-finite features were refused: recompute those lesions
                logger.warning("Ignoring %d lesions with NaN or infinite features in cache shard %s; they are recomputed.", int((~finite).sum()), s)
            for k, f, ok in zip(keys.tolist(), feats, finite, strict=True):
                if not ok or k in conflicts:
                    continue
                if k in found and not np.array_equal(found[k], f):  # never "the last file name wins"
                    conflicts.add(k)
                    del found[k]
                    continue
                found[k] = f
        if conflicts:
            logger.warning(
                "%d lesion(s) have different features in two shards of the feature cache %s (a shard copied in from elsewhere?); "
                "they are recomputed and the conflicting entries removed.", len(conflicts), self.dir
            )
        if (len(shards) > COMPACT_AFTER or conflicts) and found:
            self._compact(found, shards)
        elif conflicts:
            for s in shards:
                s.unlink(missing_ok=True)
        return found

    def _compact(self, found: dict[str, np.ndarray], shards: list[Path]) -> None:
        keys = list(found)
        self.put(keys, np.stack([found[k] for k in keys]))
        for s in shards:
            s.unlink(missing_ok=True)

    def put(self, keys: Sequence[str], features: np.ndarray) -> Path:
        """Write one shard (atomically)."""
        feats = np.ascontiguousarray(features, dtype=np.float32)
        final = self.dir / f"shard-{uuid.uuid4().hex}.npz"
        return atomic_write(final, lambda tmp: np.savez(tmp, keys=np.asarray(list(keys), dtype=str), features=feats))


def _foreign(path: Path) -> str | None:
    """Why ``path`` may hold what another user wrote: owned by another user, writable by others, or writable
    by a group other than the user's own primary group (with the user-private groups of a umask 002 system,
    that group is the user alone)."""
    try:
        st = path.stat()
    except OSError:
        return None  # not there (yet): nothing to trust or distrust
    if st.st_uid != os.geteuid():
        return f"is owned by user id {st.st_uid}, not you ({os.geteuid()})"
    if st.st_mode & stat.S_IWOTH:
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_mode & stat.S_IWGRP and st.st_gid != os.getegid():
        return f"is writable by group id {st.st_gid} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _feature_depends_on_mask(encoder: Any) -> bool:
    return hasattr(encoder, "encode_lesions") or bool(encoder.meta.patch.with_mask)


def lesion_keys(df: pd.DataFrame, *, with_mask: bool) -> tuple[list[str | None], dict[int, str]]:
    """Cache keys per row (None where the image cannot be identified) and the reasons for those rows."""
    ids: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    failures: dict[int, str] = {}
    keys: list[str | None] = []
    for r, rec in enumerate(df.to_dict("records")):
        path = str(rec["image_path"])
        if path not in ids and path not in unreadable:
            try:
                ids[path] = file_identity(path)
            except OSError as exc:
                unreadable[path] = f"image file not found or not accessible ({type(exc).__name__}: {exc.strerror or exc})"
        if path in unreadable:
            failures[r] = unreadable[path]
            keys.append(None)
            continue
        coords = [float(rec[c]) for c in COORDS]
        if not all(math.isfinite(v) for v in coords):
            failures[r] = "seed coordinates are not finite numbers"
            keys.append(None)
            continue
        parts: list[Any] = [ids[path], [v.hex() for v in coords]]
        if with_mask:
            mpath = rec.get("mask_path")
            mid = ""
            if not _is_missing(mpath):
                try:
                    mid = file_identity(mpath)
                except OSError:
                    mid = f"missing:{mpath}"
            d = rec.get("diameter_mm")
            lab = rec.get("mask_label")
            parts += [mid, None if _is_missing(d) else float(d).hex(), None if _is_missing(lab) else str(lab)]
        keys.append(hashlib.sha256(json.dumps(parts).encode()).hexdigest())
    return keys, failures


__all__ = ["COORDS", "FeatureCache", "lesion_keys"]
