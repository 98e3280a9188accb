"""Uncompressed images mapped, not read: only the blocks the patches touch come from disk.

For an uncompressed NIfTI (``.nii``), MetaImage (``.mha`` with its data inline, ``.mhd`` with a raw data
file) or NRRD (``.nrrd`` with ``encoding: raw``, or a detached ``.nhdr`` header and its raw data file), the
geometry comes from SimpleITK's own header parser (``ImageFileReader.ReadImageInformation``) and the
voxels are a read-only ``numpy.memmap`` of the data at the offset the format's header gives, in the
on-disk type and byte order. Patch cutting slices the bounding block of each patch
(:func:`~lesionbench.benchmark.data.geometry.sample_linear`), so a lesion reads a few MB of a volume, and an image
costs no memory beyond the page cache. The voxel values are the same bytes SimpleITK would decode, so the
patches equal the whole-volume path's; any case this module does not recognise with certainty (scaled
NIfTI, compressed or multi-file MetaImage, gzip/bzip2/text NRRD, NIfTI-2, a size mismatch, a bad header)
returns None and the image is read whole by :func:`~lesionbench.benchmark.data.reading.read_image`, which also
reports errors. A folder holding one DICOM series is read slice file by slice file instead
(:mod:`~lesionbench.benchmark.data.dicomslices`).

``.nii.gz`` stays with SimpleITK: its bundled zlib-ng inflated a 512x512x200 volume faster than Python's
zlib into a buffer used in place, and as fast as python-isal's igzip (benchmarks/README.md).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lesionbench.benchmark.data.dicomslices import map_series

#: NIfTI-1 datatype codes -> numpy types (the scalar ones).
_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
#: MetaImage ElementType -> numpy types.
_META_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4", "MET_UINT": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}  # fmt: skip


#: NRRD ``type`` field values (every spelling the NRRD format allows) -> numpy types.
_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"), "i8"),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), "u8"),
    "float": "f4",
    "double": "f8",
}


@dataclass(frozen=True, eq=False)
class MappedVolume:
    """An image's geometry (the getters :class:`~lesionbench.benchmark.data.geometry.ImageGeometry` reads) and its
    voxels as a (z, y, x) memory map, or for a DICOM series a :class:`~lesionbench.benchmark.data.dicomslices.SeriesSlices`
    (which keeps the slices it decodes: two at first). Counts 0 bytes for the read-ahead budget."""

    path: str
    array: np.ndarray
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def GetDimension(self) -> int:  # noqa: N802 (SimpleITK's names)
        return 3

    def GetSize(self) -> tuple[int, int, int]:  # noqa: N802
        return self.size

    def GetSpacing(self) -> tuple[float, float, float]:  # noqa: N802
        return self.spacing

    def GetOrigin(self) -> tuple[float, float, float]:  # noqa: N802
        return self.origin

    def GetDirection(self) -> tuple[float, ...]:  # noqa: N802
        return self.direction


def _nifti_layout(path: Path) -> tuple[Path, int, str] | None:
    with path.open("rb") as f:
        head = f.read(348)
    if len(head) < 348:
        return None
    for order in "<>":
        if struct.unpack(order + "i", head[:4])[0] == 348:  # NIfTI-1 (NIfTI-2 is left to SimpleITK)
            break
    else:
        return None
    dim = struct.unpack(order + "8h", head[40:56])
    datatype = struct.unpack(order + "h", head[70:72])[0]
    vox_offset, slope, inter = struct.unpack(order + "3f", head[108:120])
    if head[344:348] not in (b"n+1\0", b"ni1\0") or dim[0] != 3 or datatype not in _NIFTI_TYPES:
        return None
    if slope not in (0.0, 1.0) or inter != 0.0:  # ITK rescales these: its values are not the stored ones
        return None
    if head[344:348] == b"ni1\0":  # a .hdr/.img pair
        return None
    return path, int(vox_offset), order + _NIFTI_TYPES[datatype]


def _meta_header(path: Path) -> tuple[dict[str, str], re.Match[bytes]] | None:
    """A MetaImage header's fields (lower-case keys) and its ``ElementDataFile`` line (the data follow it);
    None without that line in the first 64 kB."""
    with path.open("rb") as f:
        head = f.read(1 << 16)  # the text header; the data follow the ElementDataFile line
    match = re.search(rb"^\s*ElementDataFile\s*=\s*([^\r\n]*?)\s*\r?\n", head, flags=re.MULTILINE)
    if match is None:
        return None
    fields = {}
    for line in head[: match.start()].decode("latin-1").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            fields[key.strip().lower()] = value.strip()
    return fields, match


def _meta_layout(path: Path) -> tuple[Path, int, str] | None:
    if (header := _meta_header(path)) is None:
        return None
    fields, match = header
    if fields.get("compresseddata", "False").lower() == "true" or fields.get("ndims") != "3":
        return None
    if fields.get("elementnumberofchannels", "1") != "1" or fields.get("elementtype") not in _META_TYPES:
        return None
    if fields.get("headersize", "0") != "0":  # a skipped or computed (-1) header before the data
        return None
    msb = fields.get("elementbyteordermsb", fields.get("binarydatabyteordermsb", "False")).lower() == "true"
    order = ">" if msb else "<"
    name = match.group(1).decode("latin-1")
    if name.upper() == "LOCAL":
        return path, match.end(), order + _META_TYPES[fields["elementtype"]]
    if name.upper() == "LIST" or "%" in name or " " in name or path.suffix.lower() != ".mhd":
        return None
    data = Path(name) if Path(name).is_absolute() else path.parent / name
    return data, 0, order + _META_TYPES[fields["elementtype"]]


def _nrrd_layout(path: Path) -> tuple[Path, int, str] | None:
    with path.open("rb") as f:
        head = f.read(1 << 16)  # the text header; attached data follow its first empty line
    end = head.find(b"\n\n")
    text = head if end < 0 else head[:end]
    if not head.startswith(b"NRRD000") or b"\r" in text:
        return None
    fields: dict[str, str] = {}
    for line in text.decode("latin-1").split("\n")[1:]:
        if not line or line.startswith("#") or ":=" in line:  # (a detached header's last newline) comments, key/value pairs
            continue
        key, colon, value = line.partition(": ")
        if not colon or key.lower() in fields:
            return None
        fields[key.lower()] = value.strip()
    dtype = _NRRD_TYPES.get(fields.get("type", "").lower())
    if fields.get("dimension") != "3" or fields.get("encoding", "").lower() != "raw" or dtype is None:
        return None
    if fields.get("line skip", fields.get("lineskip", "0")) != "0":
        return None
    skip = fields.get("byte skip", fields.get("byteskip", "0"))
    if not skip.isdigit():  # -1: the data are the file's last bytes
        return None
    endian = fields.get("endian", "").lower()
    if endian not in ("little", "big") and np.dtype(dtype).itemsize > 1:
        return None
    order = ">" if endian == "big" else "<"
    name = fields.get("data file", fields.get("datafile"))
    if name is None:
        if end < 0 or int(skip) != 0 or path.suffix.lower() != ".nrrd":
            return None
        return path, end + 2, order + dtype
    if path.suffix.lower() != ".nhdr" or not name or name.upper().startswith("LIST") or "%" in name or " " in name:
        return None
    data = Path(name) if Path(name).is_absolute() else path.parent / name
    return data, int(skip), order + dtype


def map_image(path: str | Path) -> MappedVolume | None:
    """A :class:`MappedVolume` of an uncompressed ``.nii``, ``.mha``, ``.mhd``, ``.nrrd`` or ``.nhdr`` image,
    or of a folder holding one DICOM series (:func:`~lesionbench.benchmark.data.dicomslices.map_series`); None
    for every other file, and for any that cannot be mapped with certainty (it is then read whole, and
    checked, as usual)."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import header_problem

    p = Path(path)
    if p.is_dir():
        slices = map_series(p)
        if slices is None:
            return None
        g = slices.geometry
        return MappedVolume(path=str(p), array=slices, size=g.size, spacing=g.spacing, origin=g.origin, direction=g.direction)  # type: ignore[arg-type]
    suffix = p.suffix.lower()
    if suffix not in _LAYOUTS or not p.is_file():
        return None
    try:
        layout = _LAYOUTS[suffix](p)
        if layout is None:
            return None
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
    except (OSError, RuntimeError, struct.error, UnicodeError):  # read whole instead, where errors are reported
        return None
    data, offset, dtype = layout
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1 or offset < 0:
        return None
    if header_problem(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()) is not None:
        return None
    # the type SimpleITK decodes to must be the stored one (no rescaling, no conversion)
    sitk_type = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype
    if sitk_type != np.dtype(dtype).newbyteorder("="):
        return None
    nbytes = int(np.prod(size)) * np.dtype(dtype).itemsize
    try:
        if not data.is_file() or data.stat().st_size < offset + nbytes:
            return None  # truncated: read_image says so
        array: Any = np.memmap(data, dtype=dtype, mode="r", offset=offset, shape=size[::-1])
    except (OSError, ValueError):
        return None
    return MappedVolume(
        path=str(p),
        array=array,
        size=size,  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in reader.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(s) for s in reader.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(s) for s in reader.GetDirection()),
    )


def data_size_problem(path: str | Path) -> str | None:
    """Why an uncompressed ``.nii``/``.hdr``, ``.mha``/``.mhd`` or raw ``.nrrd``/``.nhdr`` image is shorter than its
    header says (its data file holds fewer bytes than offset + voxels x bytes per voxel), or None (whole, or
    not such a file: compressed data are checked by their own readers). ITK's NIfTI reader fills a truncated
    file's missing voxels with zeros without a word, so this is checked before any read."""
    p = Path(path)
    try:
        need = _data_extent(p)
        if need is None:
            return None
        data, offset, nbytes = need
        have = data.stat().st_size
    except (OSError, struct.error, UnicodeError, ValueError, OverflowError):
        return None  # the reader reports what is wrong with the header or the data file
    if have >= offset + nbytes:
        return None
    where = f"its data file {data}" if data != p else str(p)
    return (
        f"{where} is truncated: {have} bytes, where the header of {p.name} needs {offset + nbytes} ({offset} before the voxels + "
        f"{nbytes} of voxel data); {offset + nbytes - have} bytes are missing. Re-download or re-convert it (it must be a "
        "complete NIfTI, MetaImage, NRRD or DICOM file)."
    )


def _data_extent(p: Path) -> tuple[Path, int, int] | None:
    """(data file, offset of the voxels, bytes of voxel data) from an uncompressed image's header, or None."""
    suffix = p.suffix.lower()
    if suffix in (".nii", ".hdr"):
        with p.open("rb") as f:
            head = f.read(348)
        if len(head) < 348:
            return None
        order = next((o for o in "<>" if struct.unpack(o + "i", head[:4])[0] == 348), None)
        if order is None or head[344:348] not in (b"n+1\0", b"ni1\0"):
            return None
        dim = struct.unpack(order + "8h", head[40:56])
        bitpix = struct.unpack(order + "h", head[72:74])[0]
        vox_offset = struct.unpack(order + "f", head[108:112])[0]
        if not 1 <= dim[0] <= 7 or any(d < 0 for d in dim[1 : dim[0] + 1]) or bitpix <= 0 or bitpix % 8:
            return None
        data = p if head[344:348] == b"n+1\0" else p.with_suffix(".img")
        return data, int(vox_offset), int(np.prod([int(d) for d in dim[1 : dim[0] + 1]], dtype=object)) * (bitpix // 8)
    if suffix in (".mha", ".mhd"):
        return _meta_extent(p)
    if suffix in (".nrrd", ".nhdr"):
        return _nrrd_extent(p)
    return None


def _meta_extent(p: Path) -> tuple[Path, int, int] | None:
    if (header := _meta_header(p)) is None:
        return None
    fields, match = header
    if fields.get("compresseddata", "False").lower() == "true" or fields.get("elementtype") not in _META_TYPES:
        return None
    dims = [int(v) for v in fields.get("dimsize", "").split()]
    if not dims or any(d < 0 for d in dims) or not fields.get("headersize", "0").lstrip("-").isdigit():
        return None
    nbytes = int(np.prod(dims, dtype=object)) * int(fields.get("elementnumberofchannels", "1")) * np.dtype(_META_TYPES[fields["elementtype"]]).itemsize
    name = match.group(1).decode("latin-1")
    header_size = int(fields.get("headersize", "0"))
    if name.upper() == "LOCAL":
        return p, match.end() + max(header_size, 0), nbytes
    if name.upper() == "LIST" or "%" in name or " " in name:
        return None
    data = Path(name) if Path(name).is_absolute() else p.parent / name
    return data, max(header_size, 0), nbytes


def _nrrd_extent(p: Path) -> tuple[Path, int, int] | None:
    with p.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"\n\n")
    if not head.startswith(b"NRRD000"):
        return None
    fields: dict[str, str] = {}
    for line in (head if end < 0 else head[:end]).decode("latin-1").replace("\r", "").split("\n")[1:]:
        key, colon, value = line.partition(": ")
        if colon and not line.startswith("#"):
            fields.setdefault(key.strip().lower(), value.strip())
    dtype = _NRRD_TYPES.get(fields.get("type", "").lower())
    if fields.get("encoding", "").lower() != "raw" or dtype is None or fields.get("line skip", fields.get("lineskip", "0")) != "0":
        return None
    sizes = [int(v) for v in fields.get("sizes", "").split()]
    skip = fields.get("byte skip", fields.get("byteskip", "0"))
    if not sizes or any(v < 0 for v in sizes) or not skip.isdigit():
        return None
    nbytes = int(np.prod(sizes, dtype=object)) * np.dtype(dtype).itemsize
    name = fields.get("data file", fields.get("datafile"))
    if name is None:
        return (p, end + 2 + int(skip), nbytes) if end >= 0 else None
    if not name or name.upper().startswith("LIST") or "%" in name or " " in name:
        return None
    data = Path(name) if Path(name).is_absolute() else p.parent / name
    return data, int(skip), nbytes


_LAYOUTS = {".nii": _nifti_layout, ".mha": _meta_layout, ".mhd": _meta_layout, ".nrrd": _nrrd_layout, ".nhdr": _nrrd_layout}
