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
#: Largest tolerated distance between where ITK puts a slice (first slice + k x one even step along the
#: normal) and where its header says it is, as a fraction of the smallest voxel size: beyond it the series
#: is tilted (gantry tilt) or unevenly stepped, and is refused (:func:`placement_problem`).
PLACEMENT_TOLERANCE = 0.1
#: Relative difference of two slices' PixelSpacing beyond which they are not one grid.
PIXEL_SPACING_TOLERANCE = 1e-4
#: DICOM image storage SOP classes (CT, enhanced CT, MR, enhanced MR, PET) named in a file that does not
#: decode: a slice, not another kind of object (an RT structure set has no pixels and is left alone).
_IMAGE_SOP_CLASSES = (b"1.2.840.10008.5.1.4.1.1.2\0", b"1.2.840.10008.5.1.4.1.1.2.1", b"1.2.840.10008.5.1.4.1.1.4\0",
                      b"1.2.840.10008.5.1.4.1.1.4.1", b"1.2.840.10008.5.1.4.1.1.128")  # fmt: skip


def slice_gap_problem(folder: Path, files: list[str], reader: Any, image: Any) -> str | None:
    """:func:`slice_position_problem` for a whole read: the positions and orientations from ``reader``'s
    per-slice metadata (``ImageSeriesReader`` with ``MetaDataDictionaryArrayUpdateOn``), the normal from ``image``."""
    if len(files) < 3 or image.GetDimension() != 3:  # not a 3D volume: read_image says so
        return None
    n = len(files)
    positions = [_numbers(reader.GetMetaData(k, "0020|0032")) if reader.HasMetaDataKey(k, "0020|0032") else None for k in range(n)]
    orientations = [_numbers(reader.GetMetaData(k, "0020|0037")) if reader.HasMetaDataKey(k, "0020|0037") else None for k in range(n)]
    normal = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    if (why := slice_position_problem(folder, files, positions, orientations, normal)) is not None:
        return why
    spacings = [_numbers(reader.GetMetaData(k, "0028|0030")) if reader.HasMetaDataKey(k, "0028|0030") else None for k in range(n)]
    if (why := pixel_spacing_problem(folder, files, spacings)) is not None:
        return why
    placed = [image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(n)]
    return placement_problem(folder, files, positions, placed, image.GetSpacing())


def pixel_spacing_problem(folder: Path, files: list[str], spacings: list[tuple[float, ...] | None]) -> str | None:
    """Why slices with these PixelSpacing values (row, column mm; None where absent) are not one grid, or
    None: ITK takes the first slice's and would stretch the others' pixels to it."""
    first = spacings[0]
    if first is None:
        return None
    names = [Path(f).name for f in files]
    odd = [k for k, sp in enumerate(spacings) if sp is None or len(sp) != len(first)
           or not np.allclose(sp, first, rtol=PIXEL_SPACING_TOLERANCE, atol=0)]  # fmt: skip
    if not odd:
        return None
    k = odd[0]
    theirs = "none" if spacings[k] is None else " x ".join(f"{v:g}" for v in spacings[k]) + " mm"
    return (f"the DICOM series in {folder} mixes pixel sizes: {_listed([names[i] for i in odd])} ({len(odd)} slice(s)) have PixelSpacing "
            f"{theirs} where {names[0]} has {' x '.join(f'{v:g}' for v in first)} mm. Read as one volume their pixels would be "
            "stretched to the first slice's; keep each reconstruction in a folder of its own, or resample the odd slices.")  # fmt: skip


def placement_problem(
    folder: Path, files: list[str], positions: list[tuple[float, ...] | None], placed: list[tuple[float, ...]], spacing: tuple[float, ...]
) -> str | None:
    """Why the volume ITK builds puts slices away from their header positions, or None. ITK places slice k at
    the first slice's position plus k even steps along the slice normal: a gantry-tilted series (slices that
    step sideways) or an uneven step (within :data:`GAP_RATIO`, so no missing slice) puts lesions on the wrong
    voxels. Beyond :data:`PLACEMENT_TOLERANCE` of the smallest voxel size the series is refused."""
    if len(files) < 3 or any(p is None or len(p) != 3 for p in positions):
        return None
    pos = np.asarray(positions, dtype=float)
    at = np.asarray(placed, dtype=float)
    off = np.linalg.norm(pos - at, axis=1)
    voxel = float(np.min(np.abs(np.asarray(spacing, dtype=float))))
    k = int(np.argmax(off))
    if not np.isfinite(off[k]) or off[k] <= PLACEMENT_TOLERANCE * voxel:
        return None
    names = [Path(f).name for f in files]
    step = pos[-1] - pos[0]
    along = step / (np.linalg.norm(step) or 1.0)
    normal = (at[-1] - at[0]) / (np.linalg.norm(at[-1] - at[0]) or 1.0)
    tilt = float(np.degrees(np.arccos(np.clip(abs(along @ normal), -1.0, 1.0))))
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    if tilt > 0.01:
        cause = (f"the slices step {tilt:.2f} degrees off their normal (gantry tilt): ITK stacks them straight, so {names[k]} lies "
                 f"{off[k]:.3g} mm from its header position")  # fmt: skip
        fix = "Resample the series onto a grid along its normal first (e.g. dcm2niix corrects gantry tilt), or export it untilted."
    else:
        cause = (f"the slice steps are uneven ({steps.min():.4g} to {steps.max():.4g} mm): ITK stacks the slices at one step, so "
                 f"{names[k]} lies {off[k]:.3g} mm from its header position")  # fmt: skip
        fix = "Resample the series onto an even grid first (or re-export it); check for slices of another reconstruction."
    return f"the DICOM series in {folder} cannot be read as one evenly spaced volume: {cause} (more than {PLACEMENT_TOLERANCE:g} voxel). {fix}"


def undecoded_slices_problem(folder: Path, files: list[str]) -> str | None:
    """Why the folder holds slice files GDCM left out of the series because they do not decode (empty, or a
    CT/MR/PET image whose header cannot be read: a truncated download), or None. Left out silently, a last
    or first slice would leave a shorter volume with no gap to see."""
    import SimpleITK as sitk

    bad = []
    for name in _files_left_out(folder, files):
        f = folder / name
        try:
            with open(f, "rb") as fh:
                head = fh.read(4096)
        except OSError:
            continue
        if not head:
            bad.append(f"{name} (empty)")
            continue
        if not any(uid in head for uid in _IMAGE_SOP_CLASSES) and b"\xe0\x7f\x10\x00" not in head:
            continue  # not an image slice (e.g. an RT structure set): not part of the series
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            bad.append(f"{name} ({f.stat().st_size} bytes, does not decode)")
    if not bad:
        return None
    return (f"the DICOM series in {folder} has slice file(s) that do not decode: {_listed(bad)}. A truncated or empty slice would be "
            "left out of the volume without a word; re-download or re-export those files (or remove them if they are not part of the series).")  # fmt: skip


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
