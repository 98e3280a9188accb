"""Image reading for extraction: :func:`read_image` (SimpleITK, with lesionbench's checks), the read-ahead
:class:`ImagePrefetcher` (a small pool of reader threads under a byte budget), and
:func:`in_order_on_a_thread`, which cuts patches on a thread of its own while the caller runs the model.

Extraction is a three-stage pipeline on one machine: reader threads decode images ahead (SimpleITK releases
the GIL while it reads and decompresses), one thread cuts and resamples the patches of the next image
(numpy and scipy's interpolation release it too), and the caller's thread runs the forward pass. Each
stage works in plan order, so the patches, and hence the features, are those of reading and cutting one
image after another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from lesionbench.benchmark.data._image_checks import MAX_IMAGE_BYTES, MAX_IMAGE_BYTES_ENV, max_image_bytes  # noqa: F401 - their home before
from lesionbench.benchmark.data.dicomslices import read_series
from lesionbench.benchmark.errors import ConfigurationError, ImageError
from lesionbench.benchmark.data.rawmap import MappedVolume, data_size_problem, map_image

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Images :class:`ImagePrefetcher` may hold read ahead at start-up, whatever their bytes (mapped files).
MAX_WAITING = 64
#: Pixel data that :class:`ImagePrefetcher` may hold read ahead (512 MiB: about five 512x512x200 int16 CTs,
#: read at start-up while torch is imported and the weights load). An image larger than this is still read,
#: alone.
PREFETCH_BYTES = 512 * 2**20


def read_image(path: str | Path):
    """Read a 3D image whole with SimpleITK (a file, or a folder holding a DICOM series: its first one)."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import HEADER_FIX, gzip_truncation_problem, header_problem, metaimage_data_file_problem, read_fix, sitk_reason

    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file not found: {p}")
    if not (p.is_file() or p.is_dir()):  # a FIFO or a device would block the reader or never end
        raise ImageError(f"{p} is not a regular file or a folder (a FIFO, socket or device?). Give an image file or a DICOM series folder.")
    if (problem := metaimage_data_file_problem(p)) is not None:
        raise ImageError(problem)
    if p.is_file() and (problem := data_size_problem(p)) is not None:  # ITK zero-fills a short .nii silently
        raise ImageError(problem)
    if p.is_file() and (declared := image_nbytes(p)) > max_image_bytes():  # a 1 MB .nii.gz may declare 16 GB of voxels
        raise ImageError(
            f"{p} declares {declared / 2**30:.1f} GiB of voxels in its header, more than the {max_image_bytes() / 2**30:.1f} GiB "
            f"an image may take ({MAX_IMAGE_BYTES_ENV} raises the bound). A CT is a few hundred MiB: the header is damaged or "
            "crafted; re-convert the image."
        )
    try:
        # a folder: the series is read as dicomslices reads it when a slice does not decode alone
        image = read_series(p) if p.is_dir() else sitk.ReadImage(str(p))
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        reason = sitk_reason(exc)
        raise ImageError(f"could not read image {p}: {reason}. {read_fix(reason)}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{p} is not a 3D scalar image (dimension {image.GetDimension()}, {image.GetNumberOfComponentsPerPixel()} components).")
    if (problem := header_problem(image.GetSpacing(), image.GetOrigin(), image.GetDirection())) is not None:
        raise ImageError(f"{p}: {problem}. {HEADER_FIX}")
    # ITK zero-fills a truncated .gz silently; the gzip trailer tells (4 bytes read in the usual case)
    if (problem := gzip_truncation_problem(p, image.GetNumberOfPixels() * image.GetSizeOfPixelComponent())) is not None:
        raise ImageError(problem)
    return image


def file_identity(path: str | Path) -> str:
    """The identity of an image or mask file for cache keys: resolved path, size, mtime, inode and ctime (ns).

    mtime alone can be set back (``touch -d``, ``cp -p``, ``rsync -t``): a file rewritten with the same size
    and mtime would reuse stale features. Any write, rename over or ``utime`` sets the ctime to now, which
    no user can set back, and a file replaced by another has another inode. A MetaImage or detached NRRD
    header also stands for its voxel data file; a DICOM series folder for each of its files. A ``stat`` per
    file: about as cheap as the old key (``benchmarks/cache_key_cost.py``), where a content digest reads
    every byte."""
    p = Path(path).resolve()
    st = p.stat()
    if p.is_dir():  # a DICOM series: every file's identity (a digest of the sorted list keeps the key short)
        h = hashlib.sha256()
        n = 0
        for f in sorted(p.iterdir()):
            fs = f.stat()
            if stat.S_ISREG(fs.st_mode):
                n += 1
                h.update(f"{f.name}|{_stat_identity(fs)}\n".encode("utf-8", "surrogateescape"))
        return f"{p}|dir|{n}|{h.hexdigest()}"
    key = f"{p}|{_stat_identity(st)}"
    data = _detached_data_file(p) if p.suffix.lower() in (".mhd", ".nhdr") else None
    if data is not None:
        try:
            key += f"|data|{data.resolve()}|{_stat_identity(data.stat())}"
        except OSError:
            key += f"|data|missing:{data}"
    return key


def _stat_identity(st: os.stat_result) -> str:
    return f"{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"


def _detached_data_file(header: Path) -> Path | None:
    """The voxel data file a ``.mhd`` (ElementDataFile) or ``.nhdr`` (data file) header names, if one."""
    import re

    try:
        with header.open("rb") as f:
            text = f.read(1 << 16).decode("latin-1")
    except OSError:
        return None
    m = re.search(r"^\s*(?:ElementDataFile\s*=|data ?file\s*:)\s*(\S[^\r\n]*?)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    if m is None or m.group(1).upper() in ("LOCAL", "LIST") or "%" in m.group(1) or m.group(1).upper().startswith("LIST"):
        return None
    name = Path(m.group(1))
    return name if name.is_absolute() else header.parent / name


def _image_bytes(item: Any) -> int:
    """Pixel bytes of a decoded SimpleITK image (0 for a failed read)."""
    try:
        return int(item.GetNumberOfPixels()) * int(item.GetSizeOfPixelComponent()) * int(item.GetNumberOfComponentsPerPixel())
    except AttributeError:
        return 0


def image_nbytes(path: str | Path) -> int:
    """Pixel bytes the image at ``path`` will take once read, from its header alone (a few ms, also for
    ``.nii.gz``); 0 when unknown (a DICOM folder, an unreadable header: the read itself reports those)."""
    import SimpleITK as sitk

    p = Path(path)
    if not p.is_file():
        return 0
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
        n = 1
        for s in reader.GetSize():
            n *= int(s)
        component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
        return n * int(component) * int(reader.GetNumberOfComponents())
    except RuntimeError:  # SimpleITK reports every header failure as RuntimeError
        return 0


class ImagePrefetcher:
    """Reads images ahead of their use, in a planned order, on ``readers`` background threads.

    A reader claims the next planned image, sizes it from its header (:func:`image_nbytes`) and starts
    reading only while the images held (read and waiting, or being read) stay within the budget:

    - until the first :meth:`get` (the start-up, while the caller imports torch and loads weights), while
      their pixel bytes are below ``max_bytes`` and they are fewer than :data:`MAX_WAITING`;
    - afterwards, while fewer than ``ahead + readers - 1`` are held and their bytes plus the next one's fit
      in ``max_bytes``.

    An image is always read when nothing is held, however large. Claims are made one at a time in plan
    order, so a later image never takes the room an earlier one waits for. So at most ``max_bytes`` (or one
    image, if larger) plus the image the caller works on are in memory, whatever the number of images.

    Uncompressed ``.nii``/``.mha``/``.mhd``/``.nrrd``/``.nhdr`` files are mapped instead of read, and a regular
    DICOM series folder is opened for reading slice by slice (:mod:`~lesionbench.benchmark.data.rawmap`):
    :meth:`get_pixels` hands out the map, :meth:`get` a ``SimpleITK.Image`` (read then, for such images).

    :meth:`get` must be called in plan order (from one thread); paths it skips over are dropped, and a path
    that is not (or no longer) planned is read on the spot. :meth:`retain` narrows the plan (e.g. to the
    images with lesions missing from the feature cache). Use as a context manager, or call :meth:`close`.
    ``read`` and ``nbytes`` replace :func:`read_image` and :func:`image_nbytes` (tests).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        ahead: int = 1,
        max_bytes: int = PREFETCH_BYTES,
        readers: int = 1,
        read: Callable[[str], Any] | None = None,
        nbytes: Callable[[str], int] | None = None,
    ):
        if ahead < 1:
            raise ConfigurationError(f"ahead must be >= 1, got {ahead}.")
        if readers < 1:
            raise ConfigurationError(f"readers must be >= 1, got {readers}.")
        if max_bytes < 0:
            raise ConfigurationError(f"max_bytes must be >= 0, got {max_bytes}.")
        self._max_bytes = int(max_bytes)
        self._ahead = int(ahead)
        self._readers = int(readers)
        self._read = read or read_image
        self._nbytes = nbytes or image_nbytes
        self._consuming = False  # set by the first get(): the start-up budget no longer applies
        self._order = list(dict.fromkeys(str(p) for p in paths))
        self._next = 0  # the next index of _order to claim
        self._planned = set(self._order)
        self._ready: dict[str, tuple[Any, int]] = {}  # path -> (SimpleITK image or the ImageError of its read, bytes)
        self._reading: dict[str, int] = {}  # path -> bytes reserved for its read
        self._closed = False
        self._crash: BaseException | None = None
        self._cond = threading.Condition()
        self._claim = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"lesionbench-image-read-{i}", daemon=True) for i in range(self._readers)
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ reader threads
    def held_bytes(self) -> int:
        """Pixel bytes read ahead and waiting, plus those reserved by reads under way (call under the lock)."""
        return sum(b for _, b in self._ready.values()) + sum(self._reading.values())

    def _room(self, size: int) -> bool:
        held = len(self._ready) + len(self._reading)
        if held == 0:
            return True
        if not self._consuming:  # a count cap too: a mapped file weighs 0 bytes but holds a file descriptor
            return held < MAX_WAITING and self.held_bytes() < self._max_bytes
        return held < self._ahead + self._readers - 1 and self.held_bytes() + size <= self._max_bytes

    def _claim_next(self) -> str | None:
        """The next planned path, with its bytes reserved once there is room; None when done or closed."""
        with self._claim:  # one claim at a time, in plan order
            while True:
                with self._cond:
                    while self._next < len(self._order) and self._order[self._next] not in self._planned:
                        self._next += 1
                    if self._closed or self._next >= len(self._order):
                        return None
                    path = self._order[self._next]
                    self._next += 1
                size = self._nbytes(path)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or path not in self._planned or self._room(size))
                    if self._closed:
                        return None
                    if path in self._planned:
                        self._reading[path] = size
                        return path

    def _run(self) -> None:
        try:
            while (path := self._claim_next()) is not None:
                try:  # an uncompressed file or a DICOM series is mapped (nothing decoded yet), anything else read whole
                    item: Any = map_image(path) or self._read(path)
                except ImageError as exc:
                    item = exc
                with self._cond:
                    del self._reading[path]
                    if path in self._planned and not self._closed:
                        self._ready[path] = (item, _image_bytes(item))
                    self._cond.notify_all()
        except BaseException as exc:  # e.g. MemoryError: handed to the consumer, never lost in the thread
            with self._cond:
                self._crash = exc
                self._closed = True
                self._cond.notify_all()

    # ------------------------------------------------------------------ the consumer
    def retain(self, paths: Sequence[str | Path]) -> None:
        """Keep only ``paths`` in the plan; images already read for other paths are released."""
        keep = {str(p) for p in paths}
        with self._cond:
            self._planned &= keep
            for p in [p for p in self._ready if p not in keep]:
                del self._ready[p]
            self._cond.notify_all()

    def _take(self, path: str) -> Any:
        """The item read ahead for ``path`` (None when it is not planned: the caller reads it)."""
        entry = None
        with self._cond:
            self._consuming = True
            if path in self._planned and not self._closed:
                # everything planned before this path is skipped by the caller: release it
                for p in self._order[: self._order.index(path)]:
                    self._planned.discard(p)
                    self._ready.pop(p, None)
                self._cond.notify_all()
                self._cond.wait_for(lambda: path in self._ready or self._closed or not any(t.is_alive() for t in self._threads))
                self._planned.discard(path)
                entry = self._ready.pop(path, None)
                self._cond.notify_all()
                if entry is None and self._crash is not None:
                    raise self._crash
        if entry is not None and isinstance(entry[0], ImageError):
            raise entry[0]
        return None if entry is None else entry[0]

    def get(self, path: str | Path):
        """The ``SimpleITK.Image`` at ``path`` (read ahead if planned, else now); raises :class:`ImageError`."""
        item = self._take(str(path))
        return self._read(str(path)) if item is None or isinstance(item, MappedVolume) else item

    def get_pixels(self, path: str | Path):
        """The image at ``path`` for cutting patches: a :class:`~lesionbench.benchmark.data.rawmap.MappedVolume`
        for an uncompressed file or a regular DICOM series (only the blocks used are read), else the
        ``SimpleITK.Image``."""
        item = self._take(str(path))
        return item if item is not None else (map_image(path) or self._read(str(path)))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def __enter__(self) -> ImagePrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_order_on_a_thread(jobs: Iterable[tuple[Any, Callable[[], T]]], *, depth: int = 1) -> Iterator[tuple[Any, T]]:
    """``(tag, job())`` for each ``(tag, job)``, in order, each job run on one background thread, at most
    ``depth`` jobs ahead of the caller (finished or under way): the caller works on one result (the forward
    pass) while the next ones are computed (reading and cutting patches). A job's exception is raised here,
    in its turn. Closing the iterator cancels the jobs not started and waits for the one under way."""
    if depth < 1:
        raise ConfigurationError(f"depth must be >= 1, got {depth}.")
    it = iter(jobs)
    pending: deque[tuple[Any, Future]] = deque()
    # one thread: the jobs run one after another in plan order, as ImagePrefetcher.get needs
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lesionbench-patches")
    try:

        def submit() -> None:
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(nxt[1])))

        for _ in range(depth):
            submit()
        while pending:
            tag, fut = pending.popleft()
            result = fut.result()
            submit()
            yield tag, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
