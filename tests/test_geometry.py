"""Patch geometry: lesions land where they should, and the per-seed patches equal the whole-volume chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from lesionbench.benchmark.errors import ImageError
from lesionbench.benchmark.encoders.features import load_patches
from lesionbench.benchmark.data.geometry import (
    DEFAULT_LESION_DIAMETER_MM,
    ImageGeometry,
    fmcib_patch,
    place_patch,
    reference_grid,
)
from lesionbench.benchmark.types import PatchSpec

from geometry_fixtures import rotation


GEOMETRIES = {
    # every axis spans > 55 mm so that a central lesion's 50 mm crop is never clamped
    "anisotropic": dict(size=(80, 76, 26), spacing=(0.7, 0.8, 2.5), direction=np.eye(3)),
    "flipped": dict(size=(64, 66, 46), spacing=(0.9, 0.9, 1.25), direction=np.diag([-1.0, 1.0, -1.0])),
    "permuted": dict(size=(46, 64, 52), spacing=(1.3, 0.9, 1.1), direction=np.array([[0.0, 1, 0], [0, 0, -1], [-1, 0, 0]])),
    "oblique": dict(size=(84, 84, 42), spacing=(0.75, 0.75, 1.5), direction=rotation(12, -8, 25)),
    "ras-1mm": dict(size=(58, 58, 58), spacing=(1.0, 1.0, 1.0), direction=np.diag([-1.0, -1.0, 1.0])),
}


def _volume(kind: str, *, seed: int = 0, lesion_index=None, radius_mm: float = 6.0):
    """A noisy CT-like volume (HU beyond [-1024, 3072] included) with a bright ball at a known point."""
    g = GEOMETRIES[kind]
    rng = np.random.default_rng(seed)
    size = g["size"]
    arr = rng.normal(-600, 300, size[::-1])
    arr[0, :4, :] = -3000  # below the HU window, never clipped
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(g["spacing"])
    img.SetOrigin((-37.5, 81.25, -412.0))
    img.SetDirection(tuple(np.asarray(g["direction"], dtype=float).ravel()))
    centre = np.asarray(lesion_index if lesion_index is not None else (np.asarray(size) - 1) * [0.45, 0.55, 0.5])
    geo = ImageGeometry.of(img)
    pts = geo.index_to_world(np.moveaxis(np.indices(size[::-1])[::-1], 0, -1))  # (z, y, x, 3) LPS
    seed_pt = geo.index_to_world(centre)
    ball = np.sum((pts - seed_pt) ** 2, axis=-1) <= radius_mm**2
    arr[ball] = 3500  # above the window too
    out = sitk.GetImageFromArray(arr.astype(np.int16))
    out.CopyInformation(img)
    return out, tuple(float(v) for v in seed_pt)


# --------------------------------------------------------------- an independent whole-volume chain
def _whole_volume_reference(image: sitk.Image, point, size: int = 50) -> np.ndarray:
    """FMCIB's get_features chain on the whole volume, written against MONAI's own helpers and torch's
    grid_sample as MONAI 1.4.0 calls them (independent of lesionbench.geometry's per-seed shortcut)."""
    from monai.data.utils import compute_shape_offset, orientation_ras_lps, zoom_affine
    from monai.networks.utils import to_norm_affine

    arr = sitk.GetArrayFromImage(image).astype(np.float32).T  # (x, y, z) as ITKReader gives it
    arr = (torch.from_numpy(arr) - (-1024)) / 3072
    d = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = d @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    src = orientation_ras_lps(affine)
    spacing = np.sqrt((src[:3, :3] ** 2).sum(0))
    pix = np.where(np.abs(spacing - 1.0) <= 1e-3, spacing, 1.0)
    new = zoom_affine(src, pix, diagonal=True)
    shape, offset = compute_shape_offset(arr.shape, src, new)
    new[:3, 3] = offset
    xform = np.linalg.solve(src, new)
    if np.allclose(xform, np.eye(4), atol=1e-3) and tuple(shape) == arr.shape:
        out, aff = arr.double(), torch.as_tensor(src)
    else:
        # MONAI 1.4 AffineTransform: normalised with align_corners=False, sampled with align_corners=True
        theta = to_norm_affine(torch.as_tensor(xform)[None], arr.shape, [int(s) for s in shape], align_corners=False)
        theta = theta[:, [2, 1, 0, 3]][:, :, [2, 1, 0, 3]]
        grid = torch.nn.functional.affine_grid(theta[:, :3], [1, 1, *[int(s) for s in shape]], align_corners=True)
        out = torch.nn.functional.grid_sample(arr.double()[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
        aff = torch.as_tensor(src) @ torch.as_tensor(xform)
    out = out.float().numpy()[::-1, ::-1, :]  # Orientation LPS flips the first two axes of the RAS grid
    m = out.shape
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = m[0] - 1, m[1] - 1
    aff = aff.numpy() @ flip
    c = np.linalg.inv(aff) @ np.array((-point[0], -point[1], point[2], 1.0))
    c = [int(v) for v in c[:3]]
    sl = tuple(slice(max(c[a] - size // 2, 0), min(c[a] + size // 2, m[a])) for a in range(3))
    crop = out[sl].transpose(2, 1, 0)
    pad = [((size - s) // 2, size - s - (size - s) // 2) for s in crop.shape]
    return np.pad(crop, pad)


@pytest.mark.parametrize("kind", sorted(GEOMETRIES))
def test_patch_equals_whole_volume_chain(kind):
    image, seed = _volume(kind)
    grid = reference_grid(ImageGeometry.of(image))
    vol = sitk.GetArrayViewFromImage(image)
    size = np.asarray(image.GetSize())
    geo = ImageGeometry.of(image)
    # the lesion, a random point, and two points at the borders (clamped crops)
    points = [seed, geo.index_to_world(size * [0.3, 0.7, 0.2]), geo.index_to_world([0.2, size[1] - 1.1, size[2] / 2]), geo.index_to_world([size[0] - 1, 0, 0])]
    for p in points:
        ours = fmcib_patch(vol, grid, p)
        ref = _whole_volume_reference(image, p)
        assert ours.shape == (50, 50, 50) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6, err_msg=f"{kind} seed {p}")


@pytest.mark.parametrize("kind", sorted(GEOMETRIES))
def test_lesion_at_patch_centre(kind):
    image, seed = _volume(kind, seed=1)
    patch = fmcib_patch(sitk.GetArrayViewFromImage(image), reference_grid(ImageGeometry.of(image)), seed)
    bright = patch > (3000 + 1024) / 3072
    assert bright[25, 25, 25], "the lesion centre is not at the patch centre"
    centroid = np.argwhere(bright).mean(axis=0)
    # int() truncation and the 1 mm grid move the centre by at most ~1 voxel
    np.testing.assert_allclose(centroid, [25, 25, 25], atol=1.5)
    # the ball is 12 mm across on every axis of the 1 mm grid (fewer above threshold where slices are 2.5 mm)
    assert all(7 <= bright[tuple(line)].sum() <= 14 for line in ((slice(None), 25, 25), (25, slice(None), 25), (25, 25, slice(None))))
    # no clipping: values above 3072 HU and below -1024 HU survive
    assert patch.max() > 1.1


def test_border_seed_is_clamped_then_centred():
    image, _ = _volume("anisotropic")
    geo = ImageGeometry.of(image)
    grid = reference_grid(geo)
    corner = geo.index_to_world([0.0, 0.0, 0.0])  # LPS minimum corner: the crop is cut on the low side
    place = place_patch(grid, corner, (50, 50, 50))
    # identity direction: LPS grid index 0 is the image's first voxel on every axis
    assert place.seed_index == (0, 0, 0) and place.lo == (0, 0, 0)
    assert place.crop_shape == (25, 25, 25) and place.pad_before == (12, 12, 12)  # 12 zeros in front, 13 behind
    patch = fmcib_patch(sitk.GetArrayViewFromImage(image), grid, corner)
    inner = (slice(12, 37),) * 3
    assert (patch[inner] != 0).mean() > 0.99
    padded = np.ones(patch.shape, dtype=bool)
    padded[inner] = False
    assert np.all(patch[padded] == 0)


def test_seed_outside_image_is_refused():
    image, _ = _volume("oblique")
    geo = ImageGeometry.of(image)
    outside = geo.index_to_world([-3.0, 10.0, 10.0])
    with pytest.raises(ImageError, match="outside the image"):
        fmcib_patch(sitk.GetArrayViewFromImage(image), reference_grid(geo), outside)


def test_no_resampling_when_grid_is_already_1mm_ras():
    image, seed = _volume("ras-1mm")
    grid = reference_grid(ImageGeometry.of(image))
    assert not grid.resampled and grid.shape == image.GetSize()


def test_load_patches_with_mask_channel(tmp_path):
    image, seed = _volume("oblique", radius_mm=6.0)
    img_path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(img_path))
    arr = (sitk.GetArrayFromImage(image) > 3000).astype(np.uint8) * 2  # label 2
    m = sitk.GetImageFromArray(arr)
    m.CopyInformation(image)
    mask_path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(m, str(mask_path))
    df = pd.DataFrame(
        [
            {"image_path": str(img_path), "coordX": seed[0], "coordY": seed[1], "coordZ": seed[2], "mask_path": str(mask_path), "diameter_mm": np.nan},
            {"image_path": str(img_path), "coordX": seed[0], "coordY": seed[1], "coordZ": seed[2], "mask_path": np.nan, "diameter_mm": 12.0},
            {"image_path": str(img_path), "coordX": seed[0], "coordY": seed[1], "coordZ": seed[2], "mask_path": np.nan, "diameter_mm": np.nan},
        ]
    )
    p = load_patches(df, PatchSpec(with_mask=True), progress=False)
    assert p.shape == (3, 2, 50, 50, 50) and p.dtype == np.float32
    np.testing.assert_array_equal(p[0, 0], p[1, 0])
    bright = p[0, 0] > (3000 + 1024) / 3072
    for k in range(2):  # mask file and a 12 mm ball both cover the bright lesion
        agree = (p[k, 1] > 0) == bright
        assert p[k, 1][25, 25, 25] == 1 and agree.mean() > 0.99
    vol_default = p[2, 1].sum()
    assert abs(vol_default - 4 / 3 * np.pi * (DEFAULT_LESION_DIAMETER_MM / 2) ** 3) < 0.05 * vol_default


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_real_ct_seed_at_mask_centroid_is_inside_tumour(shared_dir, case):
    folder = shared_dir / "data" / "real-ct"
    image_path, mask_path = folder / f"{case}_image.nrrd", folder / f"{case}_label.nrrd"
    if not image_path.is_file():
        pytest.skip(f"{image_path} not present")
    mask = sitk.ReadImage(str(mask_path))
    idx = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1].mean(axis=0)
    seed = mask.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx))
    df = pd.DataFrame([{"image_path": str(image_path), "coordX": seed[0], "coordY": seed[1], "coordZ": seed[2], "mask_path": str(mask_path)}])
    p = load_patches(df, PatchSpec(with_mask=True), progress=False)[0]
    assert p[1, 25, 25, 25] == 1, "the patch centre is not inside the tumour mask"
    assert p[0, 25, 25, 25] * 3072 - 1024 > -300, "the patch centre is not soft tissue"
    # the tumour channel sits around the centre of the 1 mm patch
    np.testing.assert_allclose(np.argwhere(p[1] > 0).mean(axis=0), [25, 25, 25], atol=3.0)


def test_synthetic_cohort_lesions_at_patch_centre(tmp_path):
    synthetic = pytest.importorskip("lesionbench.tasks.synthetic")
    from lesionbench.benchmark.data.manifest import read_manifest

    out = synthetic.generate_cohort(tmp_path / "synth", patients=2, seed=0)
    df = read_manifest(next(Path(out).rglob("manifest.csv")))
    p = load_patches(df, PatchSpec(with_mask=True), progress=False)
    assert np.all(p[:, 1, 25, 25, 25] == 1), "a lesion mask does not cover its patch centre"
    # the mask channel's volume matches the lesion diameter (roughly spherical lesions)
    ball = 4 / 3 * np.pi * (df["diameter_mm"].to_numpy() / 2) ** 3
    np.testing.assert_allclose(p[:, 1].sum(axis=(1, 2, 3)), ball, rtol=0.5)


def test_image_geometry_refuses_unusable_headers_with_the_fix():
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    ImageGeometry.of(image)  # a sane header passes
    image.SetOrigin((float("nan"), 0.0, 0.0))  # SimpleITK accepts it; every world <-> voxel map would be NaN
    with pytest.raises(ImageError, match=r"origin \(nan, 0.0, 0.0\) \(must be finite\).*Fix the header or re-convert"):
        ImageGeometry.of(image)

    class Header:  # a header reader with what ITK refuses to build an image from
        def __init__(self, spacing, direction):
            self.spacing, self.direction = spacing, direction

        def GetDimension(self):
            return 3

        def GetSize(self):
            return (4, 5, 6)

        def GetSpacing(self):
            return self.spacing

        def GetOrigin(self):
            return (0.0, 0.0, 0.0)

        def GetDirection(self):
            return self.direction

    eye = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for spacing in ((0.0, 1.0, 1.0), (float("inf"), 1.0, 1.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ImageError, match=r"spacing .* \(must be finite and non-zero\)"):
            ImageGeometry.of(Header(spacing, eye))
    with pytest.raises(ImageError, match=r"a singular matrix"):
        ImageGeometry.of(Header((1.0, 1.0, 1.0), (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)))
    assert ImageGeometry.of(Header((-1.0, 1.0, 1.0), eye)).spacing == (-1.0, 1.0, 1.0)  # a flipped axis, as ITK's header read reports it


def test_grid_mismatch_compares_the_voxel_to_world_map():
    from lesionbench.benchmark.data._image_checks import grid_mismatch

    eye = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    image = ImageGeometry(size=(10, 10, 10), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=eye)
    assert grid_mismatch(image, image) is None
    # the same grid written with a negative spacing and a flipped direction: the same map, no mismatch
    flipped = ImageGeometry(size=(10, 10, 10), spacing=(-1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert grid_mismatch(flipped, image) is None
    assert grid_mismatch(ImageGeometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), eye), image) == "spacing (1.0, 1.0, 1.0) vs (1.0, 1.0, 2.0) mm"
    assert grid_mismatch(ImageGeometry((10, 10, 10), (1.0, 1.0, 2.0), (0.0, 0.5, 0.0), eye), image) == "origin (0.0, 0.5, 0.0) vs (0.0, 0.0, 0.0) mm"
    assert "size (10, 10, 9) vs (10, 10, 10)" in grid_mismatch(ImageGeometry((10, 10, 9), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), eye), image)
    turned = ImageGeometry((10, 10, 10), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    assert grid_mismatch(turned, image).startswith("direction (0.0, 1.0, 0.0")
