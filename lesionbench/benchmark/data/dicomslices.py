"""A DICOM series read slice file by slice file: only the slices a patch touches are decoded.

:func:`read_series` is the whole read :func:`~lesionbench.benchmark.data.reading.read_image` does for a folder
(SimpleITK's ``ImageSeriesReader`` on the files ``GetGDCMSeriesFileNames`` lists for the folder's series).
:func:`map_series` gives the same image as a :class:`SeriesSlices` (which
:func:`~lesionbench.benchmark.data.rawmap.map_image` wraps in a ``MappedVolume``): a (z, y, x) array-like that
decodes a slice file the first time a block needs it and keeps it for the next lesions of the volume.

Bit-identity with the whole read rests on three things:

- the same file list, from the same two GDCM calls;
- the geometry computed by ITK itself: ``ImageSeriesReader`` on the first and last files alone gives the
  origin, the in-plane spacing and the direction exactly as the whole read does (both come from the first
  file and the first-to-last offset), and its slice spacing is that offset's norm divided by 1, where the
  whole read divides it by ``n - 1`` (one IEEE division, repeated here);
- each slice decoded by SimpleITK's ``ImageFileReader`` into the series' pixel type (the first file's, as
  the series reader picks it), the same per-file read and rescale (RescaleSlope/Intercept) the series
  reader does into its buffer.

Every file's header is read first (GDCM parses the whole file without decoding it: 0.09-0.12 s for 200
uncompressed 512x512 slices against 0.17-0.33 s for their whole read, on top of the GDCM scan both paths do). Anything not certain returns None and the folder is read
whole, which also reports errors: several series in the folder, fewer than three slices, a multi-frame
or multi-component file, slices that differ in size, pixel type, in-plane spacing or orientation,
positions off the straight line from the first to the last slice or unevenly spaced along it (relative
:data:`SPACING_TOLERANCE`), a slice step that is not along the slice normal (gantry tilt), or an unusable
header. A slice file that fails to decode later is read whole (:func:`read_series`), so its error is the
one a whole read gives.

The whole read refuses a series with a missing, duplicate or out-of-place slice, a gantry tilt, an uneven
step, slices of another PixelSpacing, and a slice file that does not decode wherever it is, naming the files
(:mod:`~lesionbench.benchmark.data._series_checks`): ITK would stack the slices at one spacing with only a
printed warning, and GDCM leaves a truncated or empty slice file out of the series without a word.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lesionbench.benchmark.errors import ImageError
from lesionbench.benchmark.data.geometry import ImageGeometry

logger = logging.getLogger(__name__)

#: Largest tolerated deviation of a slice's position from its place on the evenly spaced line from the
#: first to the last slice, relative to the slice spacing (the relative threshold at which ITK warns of non-uniform sampling).
SPACING_TOLERANCE = 1e-4
#: Largest tolerated sine of the angle between the slice step and the slice normal (gantry tilt).
TILT_TOLERANCE = 1e-6
#: Fewer slices than this are read whole (nothing to save).
MIN_SLICES = 3


def _series_files(folder: Path) -> tuple[list[str], list[str]]:
    """The folder's series IDs and the sorted files of the first one, as :func:`read_series` lists them."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        return series, []
    return series, list(reader.GetGDCMSeriesFileNames(str(folder), series[0]))


def read_series(folder: str | Path):
    """The whole ``SimpleITK.Image`` of the (first) DICOM series in ``folder``; :class:`ImageError` when
    there is none or it cannot be read (the reason and the fix)."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import read_fix, sitk_reason
    from lesionbench.benchmark.data._series_checks import slice_gap_problem, undecoded_slices_problem

    p = Path(folder)
    try:
        series, files = _series_files(p)
        if not series:
            raise ImageError(f"{p} is a folder without a DICOM series.")
        heads = _headers(files, sitk.ImageFileReader().GetImageIOFromFileName(files[0]))  # headers only, nothing decoded
        if heads is not None and (problem := declared_size_problem(p, heads)) is not None:
            raise ImageError(problem)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, for the gap check
        image = reader.Execute()
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        reason = sitk_reason(exc)
        raise ImageError(f"could not read image {p}: {reason}. {read_fix(reason)}") from exc
    if (problem := slice_gap_problem(p, files, reader, image) or undecoded_slices_problem(p, files)) is not None:
        raise ImageError(problem)
    return image


class SeriesSlices:
    """The (z, y, x) voxels of a DICOM series, each slice file decoded on first use and kept.

    Supports what patch cutting does with a volume: ``shape``, ``dtype``, ``ndim`` and indexing with a
    3-tuple of slices or integers (the z index must be an integer or a slice; y and x anything numpy
    takes). ``numpy.asarray`` reads every slice.
    """

    ndim = 3

    def __init__(
        self,
        folder: Path,
        files: tuple[str, ...],
        *,
        geometry: ImageGeometry,
        pixel_id: int,
        dtype: np.dtype,
        io: str,
        stats: tuple[tuple[int, ...], ...],
        known: dict[int, np.ndarray],
    ):
        self.folder = folder
        self.files = files
        self.geometry = geometry
        self.shape = geometry.size[::-1]
        self.dtype = dtype
        self._pixel_id = pixel_id
        self._io = io
        self._stats = stats  # each file's _stat_key before its header was read
        self._planes = dict(known)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def _read_plane(self, z: int) -> np.ndarray:
        import SimpleITK as sitk

        try:
            same = _stat_key(self.files[z]) == self._stats[z]
        except OSError:
            same = False
        if not same:  # never a volume of slices from two versions of the series
            raise ImageError(
                f"the DICOM series in {self.folder} changed while it was read ({self.files[z]} is not the file it was). "
                "Run again once the folder is complete."
            )
        reader = sitk.ImageFileReader()
        reader.SetFileName(self.files[z])
        reader.SetImageIO(self._io)
        reader.SetOutputPixelType(self._pixel_id)
        try:
            arr = sitk.GetArrayFromImage(reader.Execute())
        except RuntimeError:
            return self._read_whole()[z]
        if arr.shape != (1, *self.shape[1:]) or arr.dtype != self.dtype:  # changed since it was mapped
            return self._read_whole()[z]
        return arr[0]

    def _read_whole(self) -> np.ndarray:
        """Every slice, from the whole read (which raises the error a whole read gives); kept."""
        import SimpleITK as sitk

        logger.debug("reading %s whole: a slice file did not decode alone", self.folder)
        arr = sitk.GetArrayFromImage(read_series(self.folder))
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ImageError(
                f"the DICOM series in {self.folder} changed while it was read (now {arr.shape[::-1]} {arr.dtype}, "
                f"was {self.shape[::-1]} {self.dtype}). Run again once the folder is complete."
            )
        self._planes = {z: arr[z] for z in range(arr.shape[0])}
        return arr

    def plane(self, z: int) -> np.ndarray:
        """Slice ``z`` (y, x), decoded now if it was not yet."""
        with self._lock:  # one decode per slice, also when two threads cut patches of one volume
            if z not in self._planes:
                self._planes[z] = self._read_plane(z)
            return self._planes[z]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 3 or any(k is Ellipsis or k is None for k in key):
            raise IndexError(f"SeriesSlices takes up to three indices (z, y, x), got {key!r}")
        kz, rest = key[0], (key[1:] + (slice(None),) * 2)[:2]
        if isinstance(kz, (int, np.integer)):
            return self.plane(range(self.shape[0])[kz])[rest]
        if not isinstance(kz, slice):
            raise IndexError(f"SeriesSlices takes an integer or a slice for z, got {kz!r}")
        zs = range(self.shape[0])[kz]
        if len(zs) == 0:
            return np.empty((0, *np.empty(self.shape[1:], dtype=self.dtype)[rest].shape), dtype=self.dtype)
        return np.stack([self.plane(z)[rest] for z in zs])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:, :, :]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def _stat_key(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Header:
    """What :func:`_regular` compares of one slice file's header."""

    dimension: int
    size: tuple[int, ...]
    pixel_id: int
    components: int
    spacing: tuple[float, ...]
    direction: tuple[float, ...]
    origin: tuple[float, ...]
    #: ImagePositionPatient / ImageOrientationPatient as written (None where absent or not numbers; ITK then
    #: gives a default origin / direction): what the whole read's slice check compares.
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None


def _headers(files: list[str], io: str) -> list[_Header] | None:
    """Each file's header (``ImageFileReader.ReadImageInformation``); None if one fails."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._series_checks import _numbers

    def tag(reader: Any, key: str) -> tuple[float, ...] | None:
        return _numbers(reader.GetMetaData(key)) if reader.HasMetaDataKey(key) else None

    heads = []
    for f in files:
        reader = sitk.ImageFileReader()  # not kept: GDCM's reader holds the whole parsed file
        reader.SetFileName(f)
        reader.SetImageIO(io)  # the one the first file gets (not every reader probing each file)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
        heads.append(
            _Header(
                reader.GetDimension(), tuple(reader.GetSize()), reader.GetPixelID(), reader.GetNumberOfComponents(),
                tuple(reader.GetSpacing()), tuple(reader.GetDirection()), tuple(reader.GetOrigin()),
                tag(reader, "0020|0032"), tag(reader, "0020|0037"), tag(reader, "0028|0030"),
            )  # fmt: skip
        )
    return heads


def _regular(heads: list[_Header]) -> bool:
    """Whether the slices are single frames of one size, type, spacing and orientation, evenly spaced along
    their normal (then the lazy volume is certain to equal the whole read)."""
    first = heads[0]
    if first.dimension != 3 or len(first.size) != 3 or first.size[2] != 1 or first.components != 1:
        return False
    keys = [(h.size, h.pixel_id, h.components, h.spacing[:2], h.direction) for h in heads]
    if any(k != keys[0] for k in keys):
        return False
    pos = np.array([h.origin for h in heads], dtype=float)
    n = len(pos)
    step = (pos[-1] - pos[0]) / (n - 1)
    spacing = float(np.linalg.norm(step))
    if not np.isfinite(spacing) or spacing <= 1e-6:
        return False
    normal = np.asarray(first.direction, dtype=float).reshape(3, 3)[:, 2]
    if not np.linalg.norm(normal) > 1e-6 or np.linalg.norm(np.cross(step / spacing, normal / np.linalg.norm(normal))) > TILT_TOLERANCE:
        return False
    expected = pos[0] + np.arange(n)[:, None] * step
    return bool(np.max(np.linalg.norm(pos - expected, axis=1)) <= SPACING_TOLERANCE * spacing)


def _tag_problem(folder: Path, files: list[str], heads: list[_Header]) -> str | None:
    """:func:`~lesionbench.benchmark.data._series_checks.slice_position_problem` on the headers' position and
    orientation tags (ITK's defaults for a missing tag would hide it)."""
    from lesionbench.benchmark.data._series_checks import slice_position_problem

    if heads[0].dimension != 3 or len(files) < 3:
        return None
    normal = np.asarray(heads[0].direction, dtype=float).reshape(3, 3)[:, 2]
    return slice_position_problem(folder, files, [h.position for h in heads], [h.orientation for h in heads], normal)


def _grid_problem(folder: Path, files: list[str], heads: list[_Header], geometry: ImageGeometry) -> str | None:
    """The whole read's PixelSpacing and placement checks (:mod:`~lesionbench.benchmark.data._series_checks`) from the
    headers: each slice's PixelSpacing tag, and where ITK's geometry puts each slice against its position tag."""
    from lesionbench.benchmark.data._series_checks import pixel_spacing_problem, placement_problem

    if len(files) < 3:
        return None
    if (why := pixel_spacing_problem(folder, files, [h.pixel_spacing for h in heads])) is not None:
        return why
    placed = [tuple(v) for v in geometry.index_to_world(np.array([[0.0, 0.0, float(k)] for k in range(len(files))]))]
    return placement_problem(folder, files, [h.position for h in heads], placed, geometry.spacing)


def _ends_geometry(files: list[str], heads: list[_Header]) -> tuple[Any, ImageGeometry | None]:
    """The first and last slices as ITK's series reader reads them, and the header the whole read gives: ITK
    takes origin, in-plane spacing and direction from those two and divides their distance (the two-slice
    read's slice spacing) by n - 1, unless every slice sits at one origin (ITK's default spacing then).
    No geometry for an image that is not 3-D."""
    import SimpleITK as sitk

    ends = sitk.ImageSeriesReader()
    ends.SetFileNames([files[0], files[-1]] if len(files) > 1 else files)
    two = ends.Execute()
    if two.GetDimension() != 3:  # the callers refuse it
        return two, None
    sx, sy, sz = (float(s) for s in two.GetSpacing())
    if len(files) > 1 and heads[0].origin != heads[-1].origin:
        sz /= len(files) - 1
    geometry = ImageGeometry(
        size=(int(two.GetSize()[0]), int(two.GetSize()[1]), len(files)),
        spacing=(sx, sy, sz),
        origin=tuple(float(s) for s in two.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(s) for s in two.GetDirection()),
    )
    return two, geometry


def declared_size_problem(folder: Path, heads: list[_Header]) -> str | None:
    """Why the series is refused before any slice is decoded: its headers declare more voxel bytes than an image
    may take (:func:`~lesionbench.benchmark.data._image_checks.max_image_bytes`); a compressed slice of a few kB
    may declare gigabytes. None when within the bound."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import MAX_IMAGE_BYTES_ENV, max_image_bytes

    component: dict[int, int] = {}  # bytes per voxel component, per pixel type (one tiny image each)
    total = 0
    for h in heads:
        if h.pixel_id not in component:
            component[h.pixel_id] = int(sitk.Image([1, 1], h.pixel_id).GetSizeOfPixelComponent())
        n = h.components * component[h.pixel_id]
        for s in h.size:
            n *= int(s)
        total += n
    if total <= max_image_bytes():
        return None
    big = max(heads, key=lambda h: int(np.prod(h.size, dtype=np.int64)))
    return (f"the DICOM series in {folder} declares {total / 2**30:.1f} GiB of voxels in its slice headers (largest slice "
            f"{' x '.join(str(s) for s in big.size)}), more than the {max_image_bytes() / 2**30:.1f} GiB an image may take "
            f"({MAX_IMAGE_BYTES_ENV} raises the bound). A CT is a few hundred MiB: a header is damaged or crafted; re-export the series.")


def series_header_problem(folder: str | Path) -> tuple[str | None, Any]:
    """(why the DICOM series in ``folder`` cannot be used, or None; its :class:`ImageGeometry` as the whole read
    would give it, or None) from the slice headers alone, for ``lesionbench validate``: the same position and
    orientation checks as :func:`read_series`, on the same tags; no pixel data is decoded but the first and
    last slices' (ITK's own geometry arithmetic, as :func:`map_series`)."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import HEADER_FIX, header_problem, read_fix, sitk_reason
    from lesionbench.benchmark.data._series_checks import undecoded_slices_problem

    p = Path(folder)
    try:
        series, files = _series_files(p)
        if not series:
            return f"{p} is a folder without a DICOM series. Give a NIfTI/NRRD/MetaImage file, or a folder of one series' slice files.", None
        io = sitk.ImageFileReader().GetImageIOFromFileName(files[0])
        heads = _headers(files, io)
        if heads is None:
            return f"a slice header of the DICOM series in {p} could not be read. {read_fix('')}", None
        if (why := declared_size_problem(p, heads)) is not None:
            return why, None
        if any(h.components != 1 for h in heads):
            return f"{p} is not a scalar (grey-level) series: {heads[0].components} components per voxel. CT series are grey-level.", None
        if odd := [Path(f).name for f, h in zip(files, heads, strict=True) if h.size != heads[0].size or h.dimension != heads[0].dimension]:
            return f"the DICOM series in {p} has slices of another size than {Path(files[0]).name}: {', '.join(odd[:5])}. Keep one series per folder.", None
        if (why := _tag_problem(p, files, heads)) is not None:
            return why, None
        two, geometry = _ends_geometry(files, heads)
        if two.GetDimension() != 3 or two.GetNumberOfComponentsPerPixel() != 1:
            return f"{p} is not a 3D scalar series (dimension {two.GetDimension()}, {two.GetNumberOfComponentsPerPixel()} components).", None
        if (why := _grid_problem(p, files, heads, geometry) or undecoded_slices_problem(p, files)) is not None:
            return why, None
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        reason = sitk_reason(exc)
        return f"could not read the DICOM series in {p}: {reason}. {read_fix(reason)}", None
    except OSError as exc:
        return f"could not read the DICOM series in {p}: {exc.strerror or exc}.", None
    if (problem := header_problem(geometry.spacing, geometry.origin, geometry.direction)) is not None:
        return f"{p}: {problem}. {HEADER_FIX}", None
    return None, geometry


def map_series(folder: str | Path) -> SeriesSlices | None:
    """The DICOM series in ``folder`` as a :class:`SeriesSlices` (nothing decoded but the first and last
    slices); None when the folder must be read whole (see the module docstring)."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import header_problem
    from lesionbench.benchmark.data._series_checks import undecoded_slices_problem

    p = Path(folder)
    try:
        series, files = _series_files(p)
        if len(series) != 1 or len(files) < MIN_SLICES:
            return None
        stats = tuple(_stat_key(f) for f in files)
        io = sitk.ImageFileReader().GetImageIOFromFileName(files[0])
        if io != "GDCMImageIO":
            return None
        heads = _headers(files, io)
        if heads is None or declared_size_problem(p, heads) is not None:
            return None  # the whole read reports it (before decoding anything)
        if not _regular(heads) or _tag_problem(p, files, heads) is not None:
            return None  # the whole read refuses a series whose tags do not make one volume, naming the files
        if any(h.pixel_spacing != heads[0].pixel_spacing for h in heads) or undecoded_slices_problem(p, files) is not None:
            return None  # the whole read refuses it, naming the files
        two, geometry = _ends_geometry(files, heads)  # ITK's own geometry arithmetic, on two slices
    except (RuntimeError, OSError):  # read whole instead, where errors are reported
        return None
    if two.GetDimension() != 3 or two.GetNumberOfComponentsPerPixel() != 1 or two.GetPixelID() != heads[0].pixel_id:
        return None
    if header_problem(geometry.spacing, geometry.origin, geometry.direction) is not None:
        return None
    ends_zyx = sitk.GetArrayFromImage(two)
    known = {0: ends_zyx[0], len(files) - 1: ends_zyx[1]}  # decoded for the geometry: kept
    return SeriesSlices(p, tuple(files), geometry=geometry, pixel_id=two.GetPixelID(), dtype=ends_zyx.dtype, io=io, stats=stats, known=known)
