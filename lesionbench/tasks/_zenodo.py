"""Files of a Zenodo record: fetched when online, and checked on disk against what the record publishes.

Zenodo's API answers ``https://zenodo.org/api/records/<id>`` with the record's metadata; its ``files`` list
gives each file's name (``key``), size in bytes, checksum (``"md5:<hex>"``) and download address
(``links.self``). A download folder keeps that answer as ``zenodo-<id>.json``, so a later check works
offline (``LESIONBENCH_OFFLINE=1``) against the same published sizes and checksums. Without that file and
offline, a task module may ship digests of its own (:class:`RecordSpec` ``shipped``).

Verified files are remembered in ``lesionbench-verified.json`` (name, size, modification time, checksum), so
a re-run does not hash tens of gigabytes again; a file that changed is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.paths import OFFLINE_ENV, offline

logger = logging.getLogger(__name__)

API = "https://zenodo.org/api/records/{record_id}"
VERIFIED_JSON = "lesionbench-verified.json"
_CHUNK = 1 << 24


@dataclass(frozen=True)
class RecordFile:
    """One published file: its name, size in bytes (None if unknown), ``algo:hex`` checksum and address."""

    name: str
    size: int | None
    checksum: str
    url: str


@dataclass(frozen=True)
class RecordSpec:
    """The files a dataset needs from one Zenodo record."""

    record_id: str
    #: The file names needed (in the order they are fetched).
    names: tuple[str, ...]
    #: Digests known without the network (``name -> "sha256:<hex>"``); the record's own JSON is preferred.
    shipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def page(self) -> str:
        return f"https://zenodo.org/records/{self.record_id}"

    def cache_path(self, folder: Path) -> Path:
        return Path(folder) / f"zenodo-{self.record_id}.json"

    def file_url(self, name: str) -> str:
        return f"{self.page}/files/{name}?download=1"


@dataclass(frozen=True)
class Record:
    """The published files of a record, and where that list came from (the API, a saved copy, or shipped digests)."""

    spec: RecordSpec
    files: dict[str, RecordFile]
    source: str


def parse_record(data: Any, spec: RecordSpec, *, source: str) -> Record:
    """The files of a record from Zenodo's API JSON; a malformed answer raises naming ``source``."""
    try:
        entries = data["files"]
        files = {}
        for e in entries:
            name = str(e.get("key") or e["filename"])
            checksum = str(e["checksum"])
            algo, _, digest = checksum.partition(":")
            if algo not in ("md5", "sha256") or not digest:
                raise ValueError(f"unknown checksum {checksum!r} for {name}")
            url = (e.get("links") or {}).get("self") or (e.get("links") or {}).get("content") or spec.file_url(name)
            files[name] = RecordFile(name, int(e["size"]) if e.get("size") is not None else None, checksum, str(url))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataPreparationError(
            f"{source} is not a Zenodo record answer ({type(exc).__name__}: {exc}). Delete it and re-run online, "
            f"or compare the files by hand with {spec.page}."
        ) from exc
    return Record(spec, files, source)


def fetch_record(spec: RecordSpec, *, url: str | None = None, timeout: float = 30.0) -> tuple[Record, bytes]:
    """The record from Zenodo's API (network), and the raw answer (to keep beside the files)."""
    url = url or API.format(record_id=spec.record_id)
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (a fixed https address, or a test's file://)
        raw = resp.read(1 << 24)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DataPreparationError(f"{url} did not answer JSON ({exc}); try again later, or check the record at {spec.page}.") from exc
    return parse_record(data, spec, source=url), raw


def load_record(spec: RecordSpec, folder: Path | None, *, url: str | None = None) -> Record:
    """The record's files: from the API when online (saved as ``zenodo-<id>.json`` in ``folder`` unless it is None),
    else from that saved copy, else from the digests the task ships; raises when none is available."""
    cache = spec.cache_path(Path(folder) if folder is not None else Path("."))
    if not offline():
        try:
            record, raw = fetch_record(spec, url=url)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            logger.warning("Could not read Zenodo record %s (%s); checking against %s", spec.record_id, exc,
                           cache if folder is not None and cache.is_file() else "the digests lesionbench ships")  # fmt: skip
        else:
            if folder is not None:
                Path(folder).mkdir(parents=True, exist_ok=True)
                atomic_write(cache, lambda tmp: tmp.write_bytes(raw))
            return record
    if folder is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text())
        except (OSError, ValueError) as exc:
            raise DataPreparationError(f"{cache} could not be read ({exc}). Delete it and re-run online.") from exc
        return parse_record(data, spec, source=str(cache))
    if spec.shipped:
        files = {n: RecordFile(n, None, d, spec.file_url(n)) for n, d in spec.shipped.items()}
        return Record(spec, files, "the digests lesionbench ships")
    saved = f"{cache} does not exist" if folder is not None else f"no download folder holds its saved copy {cache.name}"
    raise DataPreparationError(
        f"Zenodo record {spec.record_id} cannot be read ({OFFLINE_ENV}=1 or no network) and {saved}, so the files cannot be "
        f"checked. Run once online (it saves the record there), or check them by hand on {spec.page}."
    )


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while b := f.read(_CHUNK):
            h.update(b)
    return h.hexdigest()


def file_problem(path: Path, expected: RecordFile, *, known: Mapping[str, Any] | None = None) -> str | None:
    """Why ``path`` is not the published file (size, then checksum), or None when it is."""
    if not path.is_file():
        return "missing"
    st = path.stat()
    if expected.size is not None and st.st_size != expected.size:
        return f"{st.st_size:,} bytes, the record publishes {expected.size:,}"
    memo = (known or {}).get(expected.name)
    if memo and memo.get("size") == st.st_size and memo.get("mtime_ns") == st.st_mtime_ns and memo.get("checksum") == expected.checksum:
        return None
    algo, _, want = expected.checksum.partition(":")
    got = _digest(path, algo)
    if got != want.lower():
        return f"{algo} {got}, the record publishes {want}"
    return None


def verify(record: Record, folder: Path, *, names: tuple[str, ...] | None = None) -> list[Path]:
    """Check the record's files in ``folder``; one :class:`DataPreparationError` names every missing or corrupted file."""
    folder = Path(folder)
    names = names or record.spec.names
    unknown = [n for n in names if n not in record.files]
    if unknown:
        raise DataPreparationError(
            f"{record.source} lists no file {unknown} (it lists {sorted(record.files)}): the record changed. "
            f"Compare with {record.spec.page} and report it to lesionbench."
        )
    memo_path = folder / VERIFIED_JSON
    known = _known(folder)
    missing, corrupted, good = [], [], []
    for n in names:
        problem = file_problem(folder / n, record.files[n], known=known)
        if problem == "missing":
            missing.append(n)
        elif problem:
            corrupted.append(f"{folder / n}: {problem}")
        else:
            st = (folder / n).stat()
            known[n] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": record.files[n].checksum}
            good.append(folder / n)
    if good:
        atomic_write(memo_path, lambda tmp: tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n"))
    if corrupted or missing:
        lines = [f"{c} (corrupted: delete it and download it again)" for c in corrupted]
        lines += [f"{folder / n}: missing; download {record.files[n].url}" for n in missing]
        raise DataPreparationError(
            f"{len(corrupted)} corrupted and {len(missing)} missing file(s) of Zenodo record {record.spec.record_id} "
            f"(checked against {record.source}):\n  - " + "\n  - ".join(lines)
        )
    return good


def download(record: Record, folder: Path, *, names: tuple[str, ...] | None = None, progress: bool = True) -> list[Path]:
    """Fetch the files not already verified in ``folder`` (each to ``.part``, renamed when its size and checksum
    match), then verify them all. Refuses offline."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    names = names or record.spec.names
    todo, known = [], _known(folder)
    for n in (n for n in names if n in record.files):
        if file_problem(folder / n, record.files[n], known=known) is not None:
            todo.append(n)
        else:
            _remember(folder, n, record.files[n].checksum)  # checked just now: verify() below need not hash it again
    if todo and offline():
        try:
            verify(record, folder, names=names)
        except DataPreparationError as exc:
            raise DataPreparationError(
                f"{exc}\n{OFFLINE_ENV}=1 forbids downloading: fetch these from {record.spec.page} on a machine with internet "
                "access and copy them here, or re-run online."
            ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    for n in todo:
        f = record.files[n]
        part = folder / f"{n}.part"
        algo, _, want = f.checksum.partition(":")
        h = hashlib.new(algo)
        logger.info("downloading %s (%s bytes) from %s", n, f"{f.size:,}" if f.size else "?", f.url)
        try:
            with urllib.request.urlopen(f.url, timeout=60) as resp, open(part, "wb") as out:  # noqa: S310
                bar = tqdm(total=f.size, unit="B", unit_scale=True, desc=n, disable=not progress)
                while b := resp.read(_CHUNK):
                    out.write(b)
                    h.update(b)
                    bar.update(len(b))
                bar.close()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DataPreparationError(f"Downloading {f.url} failed ({type(exc).__name__}: {exc}). Re-run the same command to resume.") from exc
        size = part.stat().st_size
        if (f.size is not None and size != f.size) or h.hexdigest() != want.lower():
            part.unlink()
            raise DataPreparationError(
                f"The download of {n} from {f.url} is corrupted ({size:,} bytes, {algo} {h.hexdigest()}; the record publishes "
                f"{f.size if f.size is not None else '?'} bytes, {want}); re-run the same command."
            )
        part.replace(folder / n)
        _remember(folder, n, f.checksum)
    return verify(record, folder, names=names)


def _known(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / VERIFIED_JSON).read_text())
    except (OSError, ValueError):
        return {}


def _remember(folder: Path, name: str, checksum: str) -> None:
    """Record a file whose checksum was just computed, so :func:`verify` does not hash it again."""
    known = _known(folder)
    st = (folder / name).stat()
    known[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": checksum}
    atomic_write(folder / VERIFIED_JSON, lambda tmp: tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n"))
