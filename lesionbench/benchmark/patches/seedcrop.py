"""The ``seed-crop`` patch method: TumorImagingBench's MONAI 1.4 chain, computed crop-first.

TumorImagingBench (``tumorimagingbench.models.utils.get_transforms``) prepares every model's input with

1. ``LoadImaged(reader="ITKReader", ensure_channel_first=True)``: float32, RAS affine of the ITK header;
2. ``Orientationd(axcodes="LPS")``: flips and permutes the voxel axes to the nearest LPS order;
3. ``Spacingd(pixdim, mode="linear", padding_mode="zeros", align_corners=True, diagonal=True)``: the
   MONAI 1.4 resampling described in :mod:`lesionbench.benchmark.data.geometry` (diagonal, hence RAS, output;
   the half-voxel stretch of its align_corners handling; voxels outside the image are 0 HU);
4. ``SeedBasedPatchCropd(roi_size, coord_orientation="LPS")``: seed voxel ``int()`` of
   ``inv(affine) @ (-x, -y, z, 1)``, crop ``[c - roi // 2, c + roi // 2)`` clamped to the grid;
5. ``Orientationd(axcodes=orientation)``: the crop reoriented for the network (e.g. "SPL", "RAS");
6. ``ScaleIntensityRanged(a_min, a_max, 0, 1, clip=True)`` (or the recipe's other mapping);
7. ``SpatialPadd(roi_size)``: centred (``before = (roi - k) // 2``) constant padding.

Here steps 2-4 are computed from the image header alone (:func:`seed_crop_grid`) and only the crop's
voxels are interpolated; steps 5-7 act on the crop. The same chain, with each model's own spacing,
orientation, window and input size, serves the ``official`` recipes of the model zoo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lesionbench.benchmark.errors import ConfigurationError, ImageError
from lesionbench.benchmark.data.geometry import ImageGeometry, ReferenceGrid, _crop_source_coords, place_patch, sample_linear, spacing_grid
from lesionbench.benchmark.types import INTENSITY_KINDS, INTERPOLATIONS, Intensity, PatchSpec

#: Axis-code letters per world axis, (negative, positive) in MONAI/nibabel's RAS convention.
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def parse_axcodes(codes: str) -> tuple[tuple[int, int], ...]:
    """``"SPL"`` -> ((world axis, sign), ...) per array axis: ((2, +1), (1, -1), (0, -1))."""
    out = []
    for ch in str(codes).upper():
        hit = [(a, -1 if ch == neg else 1) for a, (neg, pos) in enumerate(_LABELS) if ch in (neg, pos)]
        if not hit:
            raise ConfigurationError(f"Unknown axis code {ch!r} in orientation {codes!r}; use three of L/R, P/A, I/S (e.g. 'RAS', 'SPL').")
        out.append(hit[0])
    if len(out) != 3 or len({a for a, _ in out}) != 3:
        raise ConfigurationError(f"Orientation {codes!r} must name each of the three world axes once (e.g. 'RAS', 'LPS', 'SPL').")
    return tuple(out)


def _nearest_axes(affine: np.ndarray) -> list[tuple[int, int]]:
    """(world axis, sign) nearest to each voxel axis of a RAS affine (nibabel's ``io_orientation`` for
    the rotations met in CT: each voxel axis within 45 degrees of a distinct world axis)."""
    rzs = np.asarray(affine, dtype=float)[:3, :3]
    cols = rzs / np.where(np.linalg.norm(rzs, axis=0) == 0, 1.0, np.linalg.norm(rzs, axis=0))
    axes = [(int(np.argmax(np.abs(cols[:, j]))), 1 if cols[int(np.argmax(np.abs(cols[:, j]))), j] > 0 else -1) for j in range(3)]
    if len({a for a, _ in axes}) != 3:
        raise ImageError(f"the image's direction matrix has no unambiguous nearest orientation (affine {np.round(affine, 4).tolist()}).")
    return axes


def orientation_transform(affine: np.ndarray, shape: Sequence[int], codes: str) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """MONAI ``Orientation(axcodes=codes)`` of an array with RAS ``affine`` and ``shape``: the new affine,
    the new shape, and ``O`` (4x4) mapping a new voxel index to the old one (a signed axis permutation)."""
    have = _nearest_axes(affine)
    want = parse_axcodes(codes)
    o = np.zeros((4, 4))
    o[3, 3] = 1.0
    new_shape = []
    for k, (world, sign) in enumerate(want):
        j = next(j for j, (w, _) in enumerate(have) if w == world)
        new_shape.append(int(shape[j]))
        if have[j][1] == sign:
            o[j, k] = 1.0
        else:  # flipped: new index i is old index n - 1 - i
            o[j, k] = -1.0
            o[j, 3] = float(shape[j] - 1)
    return np.asarray(affine, dtype=float) @ o, tuple(new_shape), o


def seed_crop_grid(geometry: ImageGeometry, spec: PatchSpec) -> ReferenceGrid:
    """Steps 2-3 for an image: ``Orientation("LPS")`` then MONAI 1.4 ``Spacing`` to the spec's spacing.

    The returned grid's ``affine`` is RAS (as the chain leaves it) and its ``to_source`` maps grid indices
    to the original image's (x, y, z) voxel indices. ``interpolation="none"``: the image's own grid.
    """
    mode = spec.interpolation or "linear-align-corners"
    if mode == "none":
        return ReferenceGrid(source=geometry, shape=geometry.size, affine=geometry.ras_affine, to_source=np.eye(4), resampled=False)
    if spec.diagonal:  # TIB: LPS first, then a world-aligned (RAS) grid
        first_affine, first_shape, o = orientation_transform(geometry.ras_affine, geometry.size, "LPS")
        spacing = [0.0, 0.0, 0.0]
        for k, (world, _) in enumerate(parse_axcodes(spec.orientation)):
            spacing[world] = float(spec.spacing_mm[k])
    else:  # MONAI's default: the model's orientation first, then a grid that keeps the scanner's rotation
        first_affine, first_shape, o = orientation_transform(geometry.ras_affine, geometry.size, spec.orientation)
        spacing = [float(v) for v in spec.spacing_mm]
    shape, affine, to_oriented, resampled = spacing_grid(
        first_affine, first_shape, spacing, align_corners=mode == "linear-align-corners", diagonal=spec.diagonal
    )
    return ReferenceGrid(
        source=geometry,
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        affine=np.asarray(affine),
        to_source=o @ to_oriented,
        resampled=resampled or not np.allclose(o, np.eye(4)),
    )


def _grid_axes(grid: ReferenceGrid) -> list[tuple[int, int]]:
    """(world axis, sign) of each grid axis: RAS for resampled grids, the nearest axes of the image's own."""
    return _nearest_axes(grid.affine)


def _layout(spec: PatchSpec, have: list[tuple[int, int]]) -> tuple[list[int], list[bool], list[int]]:
    """For the crop's grid axes ``have``: the transpose order and flips that give the network's array, and
    the crop size per grid axis. ``orientation="index"`` keeps the grid's own axes (native grids)."""
    if spec.orientation.lower() == "index":
        return [0, 1, 2], [False, False, False], [int(s) for s in spec.size]
    want = parse_axcodes(spec.orientation)
    order, flips, roi = [], [], [0, 0, 0]
    for k, (world, sign) in enumerate(want):
        j = next(j for j, (w, _) in enumerate(have) if w == world)
        order.append(j)
        flips.append(have[j][1] != sign)
        roi[j] = int(spec.size[k])
    return order, flips, roi


def sample_nearest(volume_zyx: np.ndarray, coords_xyz: np.ndarray) -> np.ndarray:
    """Nearest-voxel samples (float64) of a (z, y, x) array at continuous (x, y, z) indices (round half to
    even, as torch's ``grid_sample(mode="nearest")``), zero outside. Points exactly half-way between voxels
    are rounded from the exact affine position; torch rounds its own float result there, so a few voxels
    can differ from MONAI's nearest Spacing (seen on a permuted volume whose spacings put grid points on
    half-voxels)."""
    idx = np.rint(coords_xyz).astype(np.int64)
    size = np.asarray(volume_zyx.shape[::-1]).reshape(3, *([1] * (idx.ndim - 1)))
    inside = np.all((idx >= 0) & (idx < size), axis=0)
    out = np.zeros(idx.shape[1:], dtype=np.float64)
    if not inside.any():
        return out
    x, y, z = (idx[k][inside] for k in range(3))
    # only the bounding block is read: a memory-mapped image or a DICOM series decodes just the slices it holds
    block = np.asarray(volume_zyx[z.min() : z.max() + 1, y.min() : y.max() + 1, x.min() : x.max() + 1])
    out[inside] = block[z - z.min(), y - y.min(), x - x.min()]
    return out


def apply_intensity(x: np.ndarray, intensity: Intensity) -> np.ndarray:
    """Map HU (float32) to network inputs as :class:`Intensity` describes, in float32."""
    x = np.asarray(x, dtype=np.float32)
    if intensity.kind == "window":
        y = (x - np.float32(intensity.a_min)) / np.float32(intensity.a_max - intensity.a_min)
        y = y * np.float32(intensity.b_max - intensity.b_min) + np.float32(intensity.b_min)
        return np.clip(y, np.float32(intensity.b_min), np.float32(intensity.b_max)) if intensity.clip else y
    if intensity.kind == "zscore-positive":
        vals = x[x > 0].astype(np.float64)
        if vals.size <= intensity.ddof:  # nothing to normalise by: the patch is only cast
            return x
        std = float(vals.std(ddof=intensity.ddof))
        return ((x - np.float32(vals.mean())) / np.float32(std if std > 0 else 1.0)).astype(np.float32)
    if intensity.kind == "piecewise":
        if len(intensity.points) < 2:
            raise ConfigurationError("A piecewise intensity map needs at least two (HU, value) points.")
        hu, val = zip(*intensity.points, strict=True)
        return np.interp(x, np.asarray(hu, dtype=float), np.asarray(val, dtype=float)).astype(np.float32)
    raise ConfigurationError(f"Unknown intensity mapping {intensity.kind!r}; use one of {', '.join(INTENSITY_KINDS)}.")


#: Intensity mappings of one voxel at a time (they commute with choosing voxels, not with interpolating them).
POINTWISE_INTENSITIES = ("window", "piecewise")


def check_seed_crop_spec(spec: PatchSpec) -> None:
    """Refuse a ``seed-crop`` spec that cannot be cut (with the reason)."""
    mode = spec.interpolation or "linear-align-corners"
    if mode not in INTERPOLATIONS:
        raise ConfigurationError(f"Unknown interpolation {spec.interpolation!r}; use one of {', '.join(INTERPOLATIONS)}.")
    if not spec.diagonal and (mode == "none" or spec.orientation.lower() == "index"):
        raise ConfigurationError("diagonal=False resamples in the model's orientation: it needs axis codes and an interpolation other than 'none'.")
    if spec.orientation.lower() == "index":
        if mode != "none":
            raise ConfigurationError("orientation 'index' (the image's own voxel axes) needs interpolation 'none'.")
    else:
        parse_axcodes(spec.orientation)
    if spec.intensity is None:
        raise ConfigurationError("A seed-crop PatchSpec needs an intensity mapping (PatchSpec.intensity).")
    if spec.intensity.kind not in INTENSITY_KINDS:
        raise ConfigurationError(f"Unknown intensity mapping {spec.intensity.kind!r}; use one of {', '.join(INTENSITY_KINDS)}.")
    if spec.intensity_before_resample and spec.intensity.kind not in POINTWISE_INTENSITIES:
        raise ConfigurationError(
            f"intensity_before_resample maps each voxel before interpolation: it needs a pointwise intensity "
            f"({' or '.join(POINTWISE_INTENSITIES)}), not {spec.intensity.kind!r}."
        )
    if spec.intensity_before_resample and spec.pad_before_intensity:
        raise ConfigurationError("intensity_before_resample and pad_before_intensity exclude each other: pad in the mapped values (pad_value) instead.")
    if spec.with_mask:
        raise ConfigurationError("The seed-crop patch method has no mask channel; use method 'fmcib' for with_mask.")
    if mode != "none" and any(not float(s) > 0 for s in spec.spacing_mm):
        raise ConfigurationError(f"Patch spacing must be positive millimetres, got {spec.spacing_mm}.")


def seed_crop_patch(volume_zyx: np.ndarray, grid: ReferenceGrid, point_lps: Sequence[float], spec: PatchSpec) -> np.ndarray:
    """The network input for one seed, shaped ``spec.size`` along ``spec.orientation``'s axes, float32.

    ``grid`` is :func:`seed_crop_grid` of the image for ``spec``. Only the crop's voxels are read.
    """
    order, flips, roi = _layout(spec, _grid_axes(grid))
    place = place_patch(grid, point_lps, roi[::-1])
    coords = _crop_source_coords(grid, place)
    mode = spec.interpolation or "linear-align-corners"
    intensity = spec.intensity or Intensity()
    first = spec.intensity_before_resample  # pointwise (checked): the voxels are mapped, then interpolated
    if mode == "nearest":
        raw = sample_nearest(volume_zyx, coords)
    else:
        raw = sample_linear(volume_zyx, coords, transform=(lambda block: apply_intensity(block, intensity)) if first else None)
    crop = np.transpose(raw.astype(np.float32), order)  # Orientation(spec.orientation) of the crop
    crop = np.ascontiguousarray(np.flip(crop, axis=tuple(k for k, f in enumerate(flips) if f)))
    if not spec.pad_before_intensity and not (first and mode != "nearest"):
        crop = apply_intensity(crop, intensity)
    out = np.full(tuple(int(s) for s in spec.size), np.float32(spec.pad_value), dtype=np.float32)
    before = [max(int(s) - k, 0) // 2 for s, k in zip(spec.size, crop.shape, strict=True)]
    out[tuple(slice(b, b + k) for b, k in zip(before, crop.shape, strict=True))] = crop
    return apply_intensity(out, intensity) if spec.pad_before_intensity else out
