"""Checks that turn SimpleITK's silent or cryptic image-reading failures into clear reasons.

SimpleITK (ITK's NIfTI reader through zlib) reads a truncated ``.nii.gz`` without complaint and fills
the missing voxels with zeros, so a half-downloaded scan would give wrong features with no error.
Its read errors, when it does raise, start with the C++ source location and hide the reason on a
later line. These helpers are used by :func:`lesionbench.benchmark.features.read_image`.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

#: Slack allowed between a ``.gz`` file's recorded uncompressed size and the voxel data (NIfTI header
#: and extensions); anything else means the file is checked by decompressing it to the end.
_HEADER_SLACK = 1 << 20

_FIX = "Re-download or re-convert it (it must be a complete NIfTI, MetaImage, NRRD or DICOM file)."


def sitk_reason(exc: BaseException) -> str:
    """The useful part of a SimpleITK exception: its error lines without the C++ source locations."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [
        re.sub(r"^(sitk::ERROR|ITK ERROR)\s*:\s*(\w+\(0x[0-9a-f]+\)\s*:\s*)?", "", ln)
        for ln in lines
        if not ln.startswith("Exception thrown in SimpleITK") and not re.match(r"^/\S+:\d+:?$", ln)
    ]
    return " ".join(keep) or (lines[0] if lines else type(exc).__name__)


def metaimage_data_file_problem(path: Path) -> str | None:
    """For a MetaImage header (``.mhd``), why its voxel data file cannot be used; None when it can."""
    if path.suffix.lower() != ".mhd":
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror or exc})"
    match = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", text, flags=re.MULTILINE)
    if match is None:
        return f"{path} is not a MetaImage header: it has no ElementDataFile line. {_FIX}"
    name = match.group(1)
    if name.upper() in ("LOCAL", "LIST") or "%" in name or " " in name:
        return None  # data inline, or a list/pattern of slice files that ITK resolves itself
    data = Path(name) if Path(name).is_absolute() else path.parent / name
    if not data.is_file():
        return f"the voxel data file {data} named by {path.name} (ElementDataFile) is missing. Put the .raw/.zraw file next to the .mhd, or use the single-file .mha format."
    return None


def gzip_truncation_problem(path: Path, data_bytes: int) -> str | None:
    """Why a gzip-compressed image is incomplete, or None when it is whole.

    ``data_bytes`` is the size of the voxel data the header promises. The gzip trailer records the
    uncompressed size (mod 2**32); when it is consistent with the header the file is accepted at the
    cost of reading 4 bytes. Otherwise (a truncated file ends in arbitrary bytes, or an unusual
    multi-member file) the file is decompressed to the end, which is what decides.
    """
    if not path.name.lower().endswith(".gz"):
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            isize = int.from_bytes(fh.read(4), "little")
    except OSError:
        return f"{path} is too short to be a gzip file. {_FIX}"
    if (isize - data_bytes) % (1 << 32) < _HEADER_SLACK:
        return None
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        return f"{path} is truncated or corrupt ({exc}); the reader would fill the missing voxels with zeros. {_FIX}"
    return None
