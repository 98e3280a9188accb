"""A content-addressed file store: uploads and organiser-only artefacts, named by their SHA-256.

Only digests go into the database. A blob is written to a temporary file in the store's own folder,
hashed while it streams, size-limited, then renamed into ``<root>/<ab>/<abcdef...>``: a crash leaves no
half-written blob under a digest, and the same bytes uploaded twice are stored once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from lesionbench.benchmark.errors import ConfigurationError, SubmissionError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class BlobStore:
    """Files by SHA-256 under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (it may not exist)."""
        if not _DIGEST.match(digest or ""):
            raise ConfigurationError(f"{digest!r} is not a SHA-256 hex digest; blobs are addressed by 64 lowercase hex digits.")
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        """True when the blob is stored."""
        return self.path(digest).is_file()

    def put_stream(self, stream: BinaryIO, *, max_bytes: int, what: str = "upload") -> tuple[str, int]:
        """Store ``stream``; returns (digest, size). More than ``max_bytes`` is refused with nothing kept."""
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise SubmissionError(what, [f"the file is larger than the limit of {max_bytes} bytes; submit a smaller file"])
                    h.update(chunk)
                    out.write(chunk)
            digest = h.hexdigest()
            dst = self.path(digest)
            dst.parent.mkdir(exist_ok=True)
            if dst.exists():
                os.unlink(tmp)
            else:
                os.replace(tmp, dst)
            return digest, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its digest."""
        import io

        return self.put_stream(io.BytesIO(data), max_bytes=len(data) + 1)[0]

    def read_bytes(self, digest: str) -> bytes:
        """The blob's bytes (its digest is checked: a corrupted blob is an error, not data)."""
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConfigurationError(f"Blob {digest} in {self.root} is corrupted (its content no longer matches its digest); restore it from a backup.")
        return data
