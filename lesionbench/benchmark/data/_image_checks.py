"""Checks that turn SimpleITK's silent or cryptic image-reading failures into clear reasons.

SimpleITK (ITK's NIfTI reader through zlib) reads a truncated ``.nii.gz`` without complaint and fills
the missing voxels with zeros, so a half-downloaded scan would give wrong features with no error.
Its read errors, when it does raise, start with the C++ source location and hide the reason on a
later line. Header geometry that ITK accepts but no world <-> voxel map survives (NaN origin, zero
spacing, singular direction) and masks off their image's grid are named with the fix. These helpers are
used by :func:`lesionbench.benchmark.encoders.features.read_image`, :class:`~lesionbench.benchmark.data.geometry.ImageGeometry`
and ``lesionbench validate``.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

from lesionbench.benchmark.errors import ConfigurationError

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


# ------------------------------------------------------------------------------------ headers
#: How to repair an image whose header geometry is unusable.
HEADER_FIX = (
    "Fix the header or re-convert the image from its DICOM series (SimpleITK: image.SetSpacing / SetOrigin / "
    "SetDirection, then sitk.WriteImage); a voxel spacing is a finite, non-zero number of mm, the origin finite "
    "LPS mm, the direction an invertible (rotation) matrix."
)
#: Words of SimpleITK read errors that are about the header's geometry rather than a damaged file.
_HEADER_WORDS = ("spacing", "direction", "orthonormal", "determinant")


def read_fix(reason: str) -> str:
    """The fix to suggest for a SimpleITK read failure: the header fix when ITK refused the header's
    spacing or direction (e.g. "Zero-valued spacing is not supported"), else re-download/re-convert."""
    return HEADER_FIX if any(w in reason.lower() for w in _HEADER_WORDS) else _FIX


def header_problem(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> str | None:
    """What is wrong with an image header's geometry, or None: zero, infinite or NaN spacing, a NaN or
    infinite origin, a singular or non-finite direction matrix (each would make world <-> voxel maps
    meaningless: seeds land nowhere, or the matrix has no inverse). A negative spacing is allowed: ITK's
    header-only read reports a flipped axis that way (a full read flips the direction instead)."""
    import numpy as np

    problems = []
    sp = np.asarray(spacing, dtype=float)
    if not (np.all(np.isfinite(sp)) and np.all(sp != 0)):
        problems.append(f"spacing {tuple(float(v) for v in sp)} (must be finite and non-zero)")
    org = np.asarray(origin, dtype=float)
    if not np.all(np.isfinite(org)):
        problems.append(f"origin {tuple(float(v) for v in org)} (must be finite)")
    d = np.asarray(direction, dtype=float)
    n = int(round(len(d) ** 0.5))
    if n * n != len(d) or not np.all(np.isfinite(d)) or abs(np.linalg.det(d.reshape(n, n))) < 1e-6:
        problems.append(f"direction {tuple(float(v) for v in d)} (a singular matrix, not a rotation)")
    return "unusable header geometry: " + "; ".join(problems) if problems else None


def grid_mismatch(mask, image) -> str | None:
    """How a mask's voxel grid differs from its image's (both :class:`~lesionbench.benchmark.data.geometry.ImageGeometry`),
    or None when they share it: same size and the same voxel -> LPS map (to 1e-3 mm)."""
    import numpy as np

    diffs = []
    if tuple(mask.size) != tuple(image.size):
        diffs.append(f"size {tuple(mask.size)} vs {tuple(image.size)}")
    a, b = mask.index_to_lps, image.index_to_lps
    if not np.allclose(a[:3, :3], b[:3, :3], atol=1e-3):
        if not np.allclose(np.abs(mask.spacing), np.abs(image.spacing), atol=1e-4):
            diffs.append(f"spacing {_r(mask.spacing)} vs {_r(image.spacing)} mm")
        else:  # same voxel size, other orientation (a sign of the spacing is a flipped axis)
            diffs.append(f"direction {_r(mask.direction)} vs {_r(image.direction)}")
    if not np.allclose(a[:3, 3], b[:3, 3], atol=1e-3):
        diffs.append(f"origin {_r(mask.origin)} vs {_r(image.origin)} mm")
    return "; ".join(diffs) or None


def _r(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


MASK_GRID_FIX = (
    "A mask must share its image's voxel grid: check that mask_path belongs to this image, or resample the mask "
    "onto it with nearest neighbour (SimpleITK: sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor))."
)


#: The environment variable that sets the largest image (decoded voxel bytes) :func:`read_image` reads.
MAX_IMAGE_BYTES_ENV = "LESIONBENCH_MAX_IMAGE_BYTES"
#: Default of that bound: 8 GiB, twice a 1024 x 1024 x 2000 int16 photon-counting CT.
MAX_IMAGE_BYTES = 8 * 2**30


def max_image_bytes() -> int:
    """The largest decoded image :func:`read_image` accepts (``$LESIONBENCH_MAX_IMAGE_BYTES``, else 8 GiB)."""
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_BYTES
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigurationError(f"{MAX_IMAGE_BYTES_ENV}={raw!r} is not a number of bytes; e.g. {MAX_IMAGE_BYTES_ENV}={16 * 2**30}.") from None
    if value <= 0:
        raise ConfigurationError(f"{MAX_IMAGE_BYTES_ENV}={raw!r} must be a positive number of bytes.")
    return value
