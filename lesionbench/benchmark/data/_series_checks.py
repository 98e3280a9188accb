"""Checks of a DICOM series' slice positions before its slices are stacked into one volume.

ITK's series reader stacks the slices it is given at one spacing (first to last over n - 1) and only prints a
warning when they are not evenly spaced; GDCM leaves a truncated or empty slice file out of the series without
a word. :func:`slice_gap_problem` turns what would be a stretched, squeezed or mixed volume into a reason
naming the files (used by :func:`lesionbench.benchmark.data.dicomslices.read_series`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: A step between two neighbouring slices this many times the series' typical step (or this many times
#: smaller) is a missing or duplicate slice: the whole read refuses the series (:func:`read_series`).
GAP_RATIO = 1.5


def slice_gap_problem(folder: Path, files: list[str], reader: Any, image: Any) -> str | None:
    """:func:`slice_position_problem` for a whole read: the positions and orientations from ``reader``'s
    per-slice metadata (``ImageSeriesReader`` with ``MetaDataDictionaryArrayUpdateOn``), the normal from ``image``."""
    if len(files) < 3 or image.GetDimension() != 3:  # not a 3D volume: read_image says so
        return None
    n = len(files)
    positions = [_numbers(reader.GetMetaData(k, "0020|0032")) if reader.HasMetaDataKey(k, "0020|0032") else None for k in range(n)]
    orientations = [_numbers(reader.GetMetaData(k, "0020|0037")) if reader.HasMetaDataKey(k, "0020|0037") else None for k in range(n)]
    normal = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    return slice_position_problem(folder, files, positions, orientations, normal)


def slice_position_problem(
    folder: Path, files: list[str], positions: list[tuple[float, ...] | None], orientations: list[tuple[float, ...] | None], normal: np.ndarray
) -> str | None:
    """Why slices at ``positions`` (ImagePositionPatient, LPS mm; None where a file has none) with
    ``orientations`` (direction cosines, compared to 1e-4) cannot make one evenly spaced volume along
    ``normal``, or None. ITK stacks the slices it is given at one spacing (first to last over n - 1) and only
    prints a warning: a missing slice (GDCM leaves a truncated or empty file out of the series) stretches the
    volume over the gap, and a duplicate squeezes it, so every lesion beyond that point lands on the wrong
    voxels. Steps within a factor :data:`GAP_RATIO` of each other are left to ITK, as before."""
    if len(files) < 3:
        return None
    names = [Path(f).name for f in files]
    if all(p is None for p in positions):  # nothing to check against (GDCM then orders the files by name)
        return None
    lacking = [n for n, p in zip(names, positions, strict=True) if p is None]
    if lacking:
        return (f"the DICOM series in {folder} has slices without a usable position (ImagePositionPatient): {_listed(lacking)}. "
                "Re-export the series, or remove those files (a derived or secondary image?) from the folder.")  # fmt: skip
    pos = np.array(positions, dtype=float) if all(len(p) == 3 for p in positions) else np.empty((0, 3))  # type: ignore[arg-type]
    if pos.shape != (len(files), 3) or not np.isfinite(pos).all():
        return f"the DICOM series in {folder} has a slice position (ImagePositionPatient) that is not three numbers. Re-export the series."
    odd = [n for n, o in zip(names, orientations, strict=True) if not _same_orientation(o, orientations[0])]
    if odd:
        return (f"the DICOM series in {folder} mixes slice orientations: {_listed(odd)} differ from {names[0]} "
                "(a localizer or scout image in the series?). Remove them from the folder.")  # fmt: skip
    steps = np.diff(pos @ np.asarray(normal, dtype=float))
    size = np.abs(steps)
    scale = float(size.max())
    if scale <= 1e-6:
        return None  # every slice at one position: ITK's zero spacing is refused by read_image
    dup = np.flatnonzero(size <= 1e-3 * scale)
    if dup.size:
        k = int(dup[0])
        return (f"the DICOM series in {folder} has slices {names[k]} and {names[k + 1]} at the same position "
                f"({len(dup)} such pair(s)): a duplicate slice file, or the series twice. Remove the extra files "
                "(or keep each series in a folder of its own); read as it is, the volume would be squeezed.")  # fmt: skip
    if (np.sign(steps) != np.sign(steps[0])).any():
        k = int(np.flatnonzero(np.sign(steps) != np.sign(steps[0]))[0])
        return (f"the DICOM series in {folder} is not in position order: {names[k + 1]} lies back towards {names[k]}. "
                "Its files may hold two series or an extra image; keep one series per folder.")  # fmt: skip
    typical = float(np.sort(size)[(len(size) - 1) // 2])  # the lower median: of two steps, the short one is the rule
    k = int(np.argmax(np.abs(np.log(size / typical))))
    ratio = float(size[k] / typical)
    if size.max() / size.min() <= GAP_RATIO and 1 / GAP_RATIO <= ratio <= GAP_RATIO:
        return None
    if ratio < 1:  # the step that stands out is the short one
        return (f"the DICOM series in {folder} has slices {names[k]} and {names[k + 1]} only {size[k]:.4g} mm apart, where most are "
                f"{typical:.4g} mm apart: an extra slice file, or uneven spacing. Remove the extra file (or keep each series in a "
                "folder of its own); read as it is, the volume would be squeezed.")  # fmt: skip
    left = _files_left_out(folder, files)
    hint = f" DICOM files in the folder that are not in the series: {_listed(left)}." if left else ""
    return (
        f"the DICOM series in {folder} has a gap of {size[k]:.4g} mm between slices {names[k]} and {names[k + 1]}, where most are "
        f"{typical:.4g} mm apart: about {max(1, round(ratio) - 1)} slice file(s) missing or unreadable (truncated or empty), or uneven "
        f"spacing.{hint} Restore the missing slices (re-download or re-export the series); read as it is, the volume would be "
        "stretched over the gap."
    )


def _numbers(text: str) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None


def _same_orientation(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> bool:
    """Equal direction cosines (to 1e-4: writers round them differently), or both unreadable alike."""
    if a is None or b is None or len(a) != len(b):
        return a == b
    return bool(np.allclose(a, b, atol=1e-4, rtol=0))


def _listed(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _files_left_out(folder: Path, files: list[str]) -> list[str]:
    """Names of files in ``folder`` that carry the DICOM preamble (or are empty) but are not among ``files``
    (non-image objects such as RT structure sets are among them too: GDCM lists images only)."""
    listed = {Path(f).name for f in files}
    out = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for f in entries:
        if f.name in listed or f.name.upper() == "DICOMDIR" or not f.is_file():
            continue
        try:
            with open(f, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM" or (len(head) < 132 and f.suffix.lower() in (".dcm", ".dicom", "")):
            out.append(f.name)
    return out
