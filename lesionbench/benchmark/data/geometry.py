"""World <-> voxel helpers and the FMCIB reference patch geometry, computed per seed.

FMCIB's reference ``get_features`` (``fmcib.run``, with MONAI 1.4.0) resamples the *whole* CT to 1 mm
before cutting a 50^3 patch around each seed; it reloads and resamples the volume for every seed. This
module computes, from the image header alone, the exact grid that chain produces and the exact point of
the source image each grid voxel is interpolated from, so that only the voxels of one patch are ever
resampled. The reference chain, step by step, and what each step means for the grid:

1. ``LoadImaged(reader="ITKReader")`` + ``EnsureChannelFirstd``: the array axes are ITK's (x, y, z) and
   the affine is RAS: ``diag(-1, -1, 1, 1) @ [direction @ diag(spacing) | origin]``. Voxels are cast to
   float32.
2. ``NormalizeIntensityd(subtrahend=-1024, divisor=3072)``: ``(HU + 1024) / 3072`` in float32, no clipping.
3. ``Spacingd(pixdim=1, mode="linear", padding_mode="zeros", align_corners=True, diagonal=True)``:

   - target spacing per axis is 1 mm, except that an axis whose spacing is already within 1e-3 mm of it
     keeps its own spacing;
   - the new affine is ``diag(spacing)``: rotation, axis permutations and flips of the direction matrix
     are dropped (the result is RAS);
   - output shape ``round(ptp(corners) + 1)`` of the voxel-centre corners mapped into the new grid; the
     origin is the corner that is smallest on every axis if there is one (axis-aligned images, flipped
     or permuted alike), otherwise (oblique images) the grid is centred with MONAI's
     ``A @ (shape / 2)`` formula (half a voxel off the geometric centre, faithfully reproduced);
   - when the new affine equals the old one within 1e-3 and the shape is unchanged, nothing is resampled;
   - otherwise the grid is filled by trilinear ``grid_sample`` (float64, zero padding, align_corners=True)
     **but** MONAI 1.4's ``AffineTransform`` normalises the voxel transform with ``align_corners=False``
     while sampling with ``align_corners=True``. The net effect is that output voxel ``j`` of an axis
     with ``m`` output and ``n`` input voxels samples input index
     ``((p + 0.5) * (n - 1) / n)`` with ``p = xform(j * m / (m - 1) - 0.5)``: a small stretch of the
     grid (up to half a voxel at the far edge). Any "correct" 1 mm resampling differs from the reference
     by that much, which moves features by far more than 1e-4, so it is reproduced here exactly.
     (MONAI >= 1.5 fixed this; the reference pins 1.4.0.)
4. ``Orientationd(axcodes="LPS")``: flips the first two axes of the (RAS) grid.
5. ``SeedBasedPatchCropd``: ``c = int(inv(affine) @ (-x, -y, z, 1))`` (truncation toward zero), then
   the crop ``[c - P // 2, c + P // 2)`` clamped to the grid.
6. ``Transposed((0, 3, 2, 1))`` to (z, y, x), then ``SpatialPadd`` centred with zeros to the patch size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lesionbench.benchmark.errors import ImageError

logger = logging.getLogger(__name__)

#: ``(HU - HU_SUBTRAHEND) / HU_DIVISOR``: FMCIB's intensity normalisation (no clipping).
HU_SUBTRAHEND = -1024.0
HU_DIVISOR = 3072.0
#: MONAI's tolerance for "this affine is unchanged" and "this spacing is already the target".
AFFINE_TOL = 1e-3
#: Lesion diameter used for the mask channel when a lesion has neither ``mask_path`` nor ``diameter_mm``.
DEFAULT_LESION_DIAMETER_MM = 20.0

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ------------------------------------------------------------------------------ world <-> index
@dataclass(frozen=True)
class ImageGeometry:
    """The header of a 3D image: ``size``/``spacing``/``origin`` in ITK (x, y, z) order, ``direction`` 3x3
    row-major as ITK gives it. Physical points are LPS millimetres, as in ITK and DICOM."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> ImageGeometry:
        """The geometry of a ``SimpleITK.Image`` (or anything with the same four getters); an unusable header
        (zero, infinite or NaN spacing, NaN origin, singular direction) is an :class:`ImageError` with the fix."""
        from lesionbench.benchmark.data._image_checks import HEADER_FIX, header_problem

        if image.GetDimension() != 3:
            raise ImageError(f"expected a 3D image, got {image.GetDimension()}D (size {image.GetSize()}).")
        if (problem := header_problem(image.GetSpacing(), image.GetOrigin(), image.GetDirection())) is not None:
            raise ImageError(f"{problem}. {HEADER_FIX}")
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(s) for s in image.GetOrigin()),
            direction=tuple(float(s) for s in image.GetDirection()),
        )

    @property
    def index_to_lps(self) -> np.ndarray:
        """4x4 affine from continuous (x, y, z) voxel index to LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = np.asarray(self.direction, dtype=float).reshape(3, 3) @ np.diag(self.spacing)
        a[:3, 3] = self.origin
        return a

    @property
    def ras_affine(self) -> np.ndarray:
        """The RAS affine MONAI's ITKReader builds for this image (same float operations)."""
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = direction @ np.diag(np.asarray(self.spacing, dtype=float))
        affine[:3, -1] = np.asarray(self.origin, dtype=float)
        return np.diag([-1, -1, 1, 1]).astype(affine.dtype) @ affine

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) voxel indices of LPS points, shape (..., 3)."""
        pts = np.asarray(points, dtype=float)
        inv = np.linalg.inv(self.index_to_lps)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """LPS points of continuous (x, y, z) voxel indices, shape (..., 3)."""
        idx = np.asarray(index, dtype=float)
        a = self.index_to_lps
        return idx @ a[:3, :3].T + a[:3, 3]

    def contains(self, point_lps: Sequence[float]) -> bool:
        """Whether an LPS point lies within the image's physical extent (voxel edges included)."""
        idx = self.lps_to_index(np.asarray(point_lps, dtype=float))
        return bool(np.all(idx >= -0.5) and np.all(idx <= np.asarray(self.size) - 0.5))


# ---------------------------------------------------------------------- the FMCIB reference grid
@dataclass(frozen=True)
class ReferenceGrid:
    """The grid FMCIB's reference chain resamples an image onto, after reorientation to LPS.

    ``shape`` is in (x, y, z) order; ``affine`` is the RAS affine MONAI attaches to it (used by the
    reference to place seeds); ``to_source`` maps a grid index (x, y, z, 1) to the continuous source
    voxel index that the reference interpolates at that grid voxel.
    """

    source: ImageGeometry
    shape: tuple[int, int, int]
    affine: np.ndarray
    to_source: np.ndarray
    resampled: bool

    def seed_index(self, point_lps: Sequence[float]) -> tuple[int, int, int]:
        """The reference's voxel of a seed: ``int()`` of ``inv(affine) @ (-x, -y, z, 1)``."""
        x, y, z = (float(v) for v in point_lps)
        c = np.linalg.inv(np.array(self.affine)) @ np.array((-x, -y, z) + (1,))
        return tuple(int(v) for v in c[:3])  # type: ignore[return-value]


def _shape_offset(shape: np.ndarray, in_affine: np.ndarray, out_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MONAI 1.4 ``compute_shape_offset`` (scale_extent=False), in the same float operations."""
    corners = np.asarray(np.meshgrid(*[(0.0, d - 1.0) for d in shape], indexing="ij")).reshape((3, -1))
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    corners_out = np.linalg.solve(out_affine, in_affine) @ corners
    corners = in_affine @ corners
    all_dist = corners_out[:-1].copy()
    corners_out = corners_out[:-1] / corners_out[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    for i in range(corners.shape[1]):
        min_corner = np.min(all_dist - all_dist[:, i : i + 1], 1)
        # np.allclose(min_corner, 0, rtol=1e-3) with the default atol: an exact test in practice
        if np.allclose(min_corner, 0.0, rtol=AFFINE_TOL):
            return out_shape.astype(int), corners[:-1, i]
    offset = in_affine[:-1, :-1] @ (shape / 2.0) + in_affine[:-1, -1] - out_affine[:-1, :-1] @ (out_shape / 2.0)
    return out_shape.astype(int), offset


def _monai14_sampling(n: np.ndarray, m: np.ndarray, xform: np.ndarray) -> np.ndarray:
    """Output index -> input index of MONAI 1.4 ``spatial_resample`` with align_corners=True.

    ``AffineTransform(normalized=False, align_corners=True)`` normalises ``xform`` with the
    align_corners=False convention (``monai.networks.utils.to_norm_affine(..., align_corners=False)``)
    but builds and samples the grid with align_corners=True; composing the four maps gives this affine.
    """
    out_to_k = np.eye(4)
    for a in range(3):
        if m[a] > 1:
            out_to_k[a, a] = m[a] / (m[a] - 1.0)
        else:  # torch's affine_grid puts a single voxel at the normalised centre
            out_to_k[a, a] = 0.0
        out_to_k[a, 3] = -0.5 if m[a] > 1 else 0.0
    p_to_in = np.eye(4)
    for a in range(3):
        p_to_in[a, a] = (n[a] - 1.0) / n[a]
        p_to_in[a, 3] = 0.5 * (n[a] - 1.0) / n[a]
    return p_to_in @ xform @ out_to_k


def spacing_grid(
    src: np.ndarray, size: Sequence[int], spacing_mm: Sequence[float], *, align_corners: bool = True, diagonal: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """MONAI 1.4 ``Spacing(pixdim=spacing_mm, diagonal=True, align_corners=align_corners)`` of an array of
    shape ``size`` with RAS affine ``src``: the output (shape, RAS affine, grid index -> input index,
    resampled). With ``align_corners=False`` output voxel centres map to input voxel centres by the
    affine alone (no half-voxel stretch). ``diagonal=False`` keeps the input's rotation (MONAI's default;
    ``zoom_affine``: the rotation of the Cholesky factorisation, rescaled to ``spacing_mm``)."""
    import torch

    n = np.asarray(size, dtype=float)
    out_d = np.asarray(spacing_mm, dtype=np.float64).copy()
    orig_d = np.sqrt(np.sum(src[:3, :3] * src[:3, :3], axis=0))
    orig_d[orig_d == 0] = 1.0
    for a in range(3):
        # Spacing keeps an axis's own spacing when it is within AFFINE_TOL of the target
        if out_d[a] - AFFINE_TOL <= orig_d[a] <= out_d[a] + AFFINE_TOL:
            out_d[a] = orig_d[a]
    if diagonal:
        new_affine = np.diag(np.append(out_d, [1.0]))
    else:
        rzs = np.asarray(src, dtype=float)[:3, :3]
        zs = np.linalg.cholesky(rzs.T @ rzs).T
        new_affine = np.eye(4)
        new_affine[:3, :3] = (rzs @ np.linalg.inv(zs)) @ np.diag(np.sign(np.diag(zs)) * np.abs(out_d))
    out_shape, offset = _shape_offset(n, src, new_affine)
    new_affine[:3, -1] = offset[:3]
    xform = np.linalg.solve(src, new_affine)
    same_shape = bool(np.all(out_shape == n.astype(int)))
    unchanged = same_shape and (
        torch.allclose(torch.as_tensor(src), torch.as_tensor(new_affine), atol=AFFINE_TOL)
        or torch.allclose(torch.as_tensor(xform), torch.eye(4, dtype=torch.float64), atol=AFFINE_TOL)
    )
    if unchanged:
        # MONAI returns the input untouched and keeps its affine
        return n.astype(int), src, np.eye(4), False
    # the MetaTensor's affine becomes src @ xform (torch, float64), not new_affine itself
    affine = (torch.as_tensor(src, dtype=torch.float64) @ torch.as_tensor(xform, dtype=torch.float64)).numpy()
    to_source = _monai14_sampling(n, out_shape.astype(float), xform) if align_corners else xform
    return out_shape, affine, to_source, True


def reference_grid(geometry: ImageGeometry, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> ReferenceGrid:
    """The grid of FMCIB's reference chain for an image: MONAI 1.4 ``Spacing(diagonal=True,
    align_corners=True)`` to ``spacing_mm`` (x, y, z), then ``Orientation("LPS")``."""
    shape, affine, to_source, resampled = spacing_grid(geometry.ras_affine, geometry.size, spacing_mm)
    # Orientation("LPS"): the grid is RAS by construction (diagonal=True), so axes 0 and 1 flip
    codes = _axcodes(affine)
    if codes != "RAS":
        raise ImageError(f"internal: expected a RAS grid after diagonal resampling, got {codes} for {geometry}")
    flip = np.eye(4)
    for a in (0, 1):
        flip[a, a] = -1.0
        flip[a, 3] = float(shape[a] - 1)
    affine_lps = np.asarray(affine) @ flip
    return ReferenceGrid(
        source=geometry,
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        affine=affine_lps,
        to_source=to_source @ flip,
        resampled=resampled,
    )


def _axcodes(affine: np.ndarray) -> str:
    rzs = affine[:3, :3] / np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    out = []
    for col in range(3):
        row = int(np.argmax(np.abs(rzs[:, col])))
        out.append(("LR", "PA", "IS")[row][1 if rzs[row, col] > 0 else 0])
    return "".join(out)


# --------------------------------------------------------------------------------- patches
@dataclass(frozen=True)
class PatchPlacement:
    """Where one patch sits on the reference grid: the seed voxel, the clamped crop (x, y, z) and the
    centred padding of the (z, y, x) result."""

    seed_index: tuple[int, int, int]
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    pad_before: tuple[int, int, int]  # (z, y, x)

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        return tuple(h - l for l, h in zip(self.lo, self.hi, strict=True))  # type: ignore[return-value]

    @property
    def clamped(self) -> bool:
        return self.pad_before != (0, 0, 0) or any(s == 0 for s in self.crop_shape)


def place_patch(grid: ReferenceGrid, point_lps: Sequence[float], size_zyx: Sequence[int]) -> PatchPlacement:
    """The reference crop around a seed. Raises :class:`ImageError` for a seed outside the image.

    A seed outside the image's physical extent is refused (the reference would silently return an
    off-centre patch of the border, or crash on an empty crop).
    """
    if not grid.source.contains(point_lps):
        idx = grid.source.lps_to_index(np.asarray(point_lps, dtype=float))
        raise ImageError(
            f"seed point {tuple(round(float(v), 3) for v in point_lps)} (LPS mm) lies outside the image "
            f"(voxel index {tuple(round(float(v), 1) for v in idx)}, image size {grid.source.size}). "
            "Check that coordX/Y/Z are LPS millimetres (RAS coordinates have X and Y negated)."
        )
    c = grid.seed_index(point_lps)
    roi = tuple(int(s) for s in size_zyx)[::-1]  # crop sizes per (x, y, z) axis
    lo = tuple(max(c[a] - roi[a] // 2, 0) for a in range(3))
    hi = tuple(min(c[a] + roi[a] // 2, grid.shape[a]) for a in range(3))
    if any(h <= l for l, h in zip(lo, hi, strict=True)):
        raise ImageError(
            f"seed point {tuple(point_lps)} (LPS mm) gives an empty crop on the 1 mm grid (seed voxel {c}, "
            f"grid {grid.shape}); the seed is outside the image."
        )
    crop_zyx = tuple(hi[a] - lo[a] for a in (2, 1, 0))
    pad_before = tuple(max(int(s) - k, 0) // 2 for s, k in zip(size_zyx, crop_zyx, strict=True))
    return PatchPlacement(seed_index=c, lo=lo, hi=hi, pad_before=pad_before)  # type: ignore[arg-type]


def _crop_source_coords(grid: ReferenceGrid, place: PatchPlacement) -> np.ndarray:
    """Continuous source indices (3, X, Y, Z) the reference samples for the crop's voxels."""
    axes = [np.arange(place.lo[a], place.hi[a], dtype=float) for a in range(3)]
    lx, ly, lz = np.meshgrid(*axes, indexing="ij")
    r = grid.to_source
    return np.stack([r[a, 0] * lx + r[a, 1] * ly + r[a, 2] * lz + r[a, 3] for a in range(3)])


def _pad_to(crop_xyz: np.ndarray, place: PatchPlacement, size_zyx: Sequence[int], dtype=np.float32) -> np.ndarray:
    out = np.zeros(tuple(int(s) for s in size_zyx), dtype=dtype)
    zyx = np.transpose(crop_xyz, (2, 1, 0))
    b = place.pad_before
    out[b[0] : b[0] + zyx.shape[0], b[1] : b[1] + zyx.shape[1], b[2] : b[2] + zyx.shape[2]] = zyx
    return out


def sample_linear(volume_zyx: np.ndarray, coords_xyz: np.ndarray, *, transform=None) -> np.ndarray:
    """Trilinear samples (float64) of a (z, y, x) array at continuous (x, y, z) indices, zero outside.

    Reads only the bounding block of the points. Neighbours outside the volume count as zero, as in
    ``torch.nn.functional.grid_sample(padding_mode="zeros")``. ``transform`` (float32 -> float32) is applied
    to the block before interpolation (the intensity normalisation).
    """
    from scipy.ndimage import map_coordinates

    size_xyz = np.asarray(volume_zyx.shape[::-1])
    flat = coords_xyz.reshape(3, -1)
    lo = np.clip(np.floor(flat.min(axis=1)).astype(np.int64), 0, size_xyz - 1)
    hi = np.clip(np.floor(flat.max(axis=1)).astype(np.int64) + 1, 0, size_xyz - 1)
    block = np.asarray(volume_zyx[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1], dtype=np.float32)
    if transform is not None:
        block = transform(block)
    block_xyz = np.ascontiguousarray(np.transpose(block, (2, 1, 0)))
    local = flat - lo[:, None].astype(float)
    out = map_coordinates(block_xyz, local, order=1, mode="grid-constant", cval=0.0, output=np.float64, prefilter=False)
    return out.reshape(coords_xyz.shape[1:])


def normalize_hu(block: np.ndarray) -> np.ndarray:
    """FMCIB's ``(HU + 1024) / 3072`` in float32, no clipping (as MONAI ``NormalizeIntensity``)."""
    return (block.astype(np.float32) - np.float32(HU_SUBTRAHEND)) / np.float32(HU_DIVISOR)


def fmcib_patch(volume_zyx: np.ndarray, grid: ReferenceGrid, point_lps: Sequence[float], *, size_zyx: Sequence[int] = (50, 50, 50)) -> np.ndarray:
    """The patch FMCIB's reference ``get_features`` feeds its encoder for one seed: (D, H, W) float32.

    ``volume_zyx`` is the raw image array in SimpleITK order (``GetArrayViewFromImage``); ``grid`` is
    :func:`reference_grid` of its geometry. Only the region around the seed is read and resampled.
    """
    place = place_patch(grid, point_lps, size_zyx)
    coords = _crop_source_coords(grid, place)
    values = sample_linear(volume_zyx, coords, transform=normalize_hu).astype(np.float32)
    return _pad_to(values, place, size_zyx)


def patch_sample_points(grid: ReferenceGrid, point_lps: Sequence[float], *, size_zyx: Sequence[int] = (50, 50, 50)) -> tuple[PatchPlacement, np.ndarray]:
    """The placement of a seed's patch and the LPS points (3, X, Y, Z) its crop voxels sample."""
    place = place_patch(grid, point_lps, size_zyx)
    coords = _crop_source_coords(grid, place)
    pts = grid.source.index_to_world(np.moveaxis(coords, 0, -1))
    return place, np.moveaxis(pts, -1, 0)


def mask_patch_from_image(
    mask_zyx: np.ndarray,
    mask_geometry: ImageGeometry,
    grid: ReferenceGrid,
    point_lps: Sequence[float],
    *,
    size_zyx: Sequence[int] = (50, 50, 50),
    label: int | None = None,
) -> np.ndarray:
    """The lesion-mask channel aligned with :func:`fmcib_patch`: nearest-neighbour samples of a label
    mask at the exact points the image patch samples (the mask may have its own geometry).

    With ``label`` only that label counts; otherwise the label under the seed if it is non-zero (one
    lesion of a multi-lesion label map), else every non-zero voxel.
    """
    place, pts = patch_sample_points(grid, point_lps, size_zyx=size_zyx)
    midx = mask_geometry.lps_to_index(np.moveaxis(pts, 0, -1))
    near = np.floor(midx + 0.5).astype(np.int64)
    size = np.asarray(mask_geometry.size)
    inside = np.all((near >= 0) & (near < size), axis=-1)
    vals = np.zeros(near.shape[:-1], dtype=mask_zyx.dtype)
    nz = near[inside]
    vals[inside] = np.asarray(mask_zyx)[nz[:, 2], nz[:, 1], nz[:, 0]]
    if label is None:
        seed = np.floor(mask_geometry.lps_to_index(np.asarray(point_lps, dtype=float)) + 0.5).astype(np.int64)
        if np.all((seed >= 0) & (seed < size)):
            under = np.asarray(mask_zyx)[seed[2], seed[1], seed[0]]
            label = int(under) if under != 0 else None
    binary = (vals == label) if label is not None else (vals != 0)
    return _pad_to(binary.astype(np.float32), place, size_zyx)


def mask_patch_sphere(grid: ReferenceGrid, point_lps: Sequence[float], diameter_mm: float, *, size_zyx: Sequence[int] = (50, 50, 50)) -> np.ndarray:
    """A ball of ``diameter_mm`` around the seed, on the points :func:`fmcib_patch` samples."""
    if not (math.isfinite(diameter_mm) and diameter_mm > 0):
        raise ImageError(f"lesion diameter must be a positive number of mm, got {diameter_mm!r}.")
    place, pts = patch_sample_points(grid, point_lps, size_zyx=size_zyx)
    d2 = np.sum((pts - np.asarray(point_lps, dtype=float).reshape(3, 1, 1, 1)) ** 2, axis=0)
    return _pad_to((d2 <= (diameter_mm / 2.0) ** 2).astype(np.float32), place, size_zyx)
