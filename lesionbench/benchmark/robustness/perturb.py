"""Controlled, seeded input perturbations of one lesion, and features of perturbed lesions for any encoder.

Each lesion is handled crop-first: a cube of physical half-width ``crop_radius_mm`` around its seed is
cut from the image (SimpleITK ``RegionOfInterest``, cast to float32), the perturbation is applied to that
crop only, and the crop is handed to the encoder exactly as a whole image would be (patch encoders
through :func:`lesionbench.benchmark.encoders.features.cut_patches`, image encoders through ``encode_lesions``).
The unperturbed reference goes through the same crop (the ``none`` perturbation), so every difference
measured is the perturbation's, not the crop's (FMCIB's resampling grid depends on the image extent).

Perturbations (SimpleITK transforms and resampling, linear interpolation, air (-1024 HU) outside):

* ``shift``: the seed point moves ``U(shift_mm)`` mm in a uniformly random 3-D direction; the image is untouched;
* ``rotate``: the crop turns by ``U(rotate_deg)`` degrees (random sign) about a uniformly random axis
  through the seed (``VersorRigid3DTransform``);
* ``spacing``: the crop is resampled to an in-plane spacing drawn from ``U(spacing_mm)`` (the axes that
  run along physical x and y; the slice axis keeps its spacing);
* ``noise``: additive Gaussian noise of standard deviation ``noise_hu`` HU.

A lesion mask (``mask_path``) is cut, turned and resampled with its image (nearest neighbour), so it is
always on the voxel grid of the image the encoder is given.

Draws depend only on ``(seed, perturbation, repeat, lesion_id)``, never on the order or the other lesions.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, ImageError

PERTURBATIONS: tuple[str, ...] = ("shift", "rotate", "spacing", "noise")
_KIND_STREAM = {"none": 0, "shift": 1, "rotate": 2, "spacing": 3, "noise": 4}
AIR_HU = -1024.0


@dataclass(frozen=True)
class PerturbationSettings:
    """The stated levels of every perturbation (see the module docstring) and how often each is drawn."""

    shift_mm: tuple[float, float] = (1.0, 5.0)
    rotate_deg: tuple[float, float] = (5.0, 10.0)
    spacing_mm: tuple[float, float] = (1.0, 1.5)
    noise_hu: float = 20.0
    repeats: int = 3
    seed: int = 0

    def check(self) -> None:
        for name in ("shift_mm", "rotate_deg", "spacing_mm"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi) or (name == "spacing_mm" and lo <= 0):
                raise ConfigurationError(f"Perturbation range {name}={(lo, hi)} must be 0 <= low <= high (spacing > 0).")
        if self.noise_hu < 0:
            raise ConfigurationError(f"noise_hu must be >= 0 HU, got {self.noise_hu}.")
        if self.repeats < 1:
            raise ConfigurationError(f"repeats must be >= 1, got {self.repeats}.")

    def to_dict(self) -> dict[str, Any]:
        return {"shift_mm": list(self.shift_mm), "rotate_deg": list(self.rotate_deg), "spacing_mm": list(self.spacing_mm),
                "noise_hu": self.noise_hu, "repeats": self.repeats, "seed": self.seed}  # fmt: skip


def check_perturbations(names: Sequence[str]) -> tuple[str, ...]:
    """The requested perturbation names, checked (an unknown one names the choices)."""
    out = tuple(str(n).strip() for n in names if str(n).strip())
    bad = [n for n in out if n not in PERTURBATIONS]
    if bad or not out:
        raise ConfigurationError(f"Unknown perturbation(s) {bad or list(names)}; choose from {', '.join(PERTURBATIONS)} (comma-separated).")
    return out


def lesion_rng(settings: PerturbationSettings, kind: str, repeat: int, lesion_id: str) -> np.random.Generator:
    return np.random.default_rng([settings.seed, _KIND_STREAM[kind], repeat, zlib.crc32(str(lesion_id).encode())])


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def crop_radius_mm(encoder: Any) -> float:
    """Half-width of the crop: the patch's half-diagonal (it may turn), the largest shift, and a margin."""
    spec = encoder.meta.patch
    half = 0.5 * np.asarray(spec.size, dtype=float) * np.asarray(spec.spacing_mm, dtype=float)
    return float(max(40.0, np.linalg.norm(half) + 5.0 + 5.0))


def crop_around(image: Any, point: Sequence[float], radius_mm: float) -> Any:
    """The float32 region of ``image`` within ``radius_mm`` of ``point`` along every physical axis (clamped)."""
    import SimpleITK as sitk

    corners = np.array([[point[0] + sx * radius_mm, point[1] + sy * radius_mm, point[2] + sz * radius_mm]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])  # fmt: skip
    idx = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in c)) for c in corners])
    size = np.asarray(image.GetSize())
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, size - 1)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int), 0, size - 1)
    centre = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point)))
    if np.any(centre < -0.5) or np.any(centre > size - 0.5):
        raise ImageError(f"seed {tuple(point)} mm is outside the image")
    crop = sitk.RegionOfInterest(image, [int(v) for v in hi - lo + 1], [int(v) for v in lo])
    return sitk.Cast(crop, sitk.sitkFloat32)


def perturb_lesion(crop: Any, record: dict[str, Any], kind: str, rng: np.random.Generator, settings: PerturbationSettings,
                   mask_dir: Path, masks: dict[Any, Any]) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """``(image, record)`` of one perturbed lesion: the perturbed crop and the lesion row it is read with.

    A lesion mask (``mask_path``) goes with the image: it is put on the returned image's voxel grid (cut
    like the crop, turned like a rotated one, resampled like a respaced one; nearest neighbour) and the
    record points at that copy in ``mask_dir``, so an encoder that needs the mask on its image's grid
    (radiomics) reads the pair it would read from a whole image.
    """
    import SimpleITK as sitk

    rec = dict(record)
    seed = np.array([float(rec["coordX"]), float(rec["coordY"]), float(rec["coordZ"])])
    out, transform = crop, None  # no transform: the mask is only cut to the crop (or resampled onto its new grid)
    if kind == "none":
        pass
    elif kind == "shift":
        moved = seed + rng.uniform(*settings.shift_mm) * _unit_vector(rng)
        rec["coordX"], rec["coordY"], rec["coordZ"] = (float(v) for v in moved)
    elif kind == "rotate":
        angle = np.deg2rad(rng.uniform(*settings.rotate_deg)) * rng.choice([-1.0, 1.0])
        transform = sitk.VersorRigid3DTransform()
        transform.SetCenter(tuple(float(v) for v in seed))
        transform.SetRotation(tuple(float(v) for v in _unit_vector(rng)), float(angle))
        out = sitk.Resample(crop, crop, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    elif kind == "spacing":
        new = rng.uniform(*settings.spacing_mm)
        direction = np.asarray(crop.GetDirection()).reshape(3, 3)
        old = np.asarray(crop.GetSpacing(), dtype=float)
        spacing = np.array([new if int(np.argmax(np.abs(direction[:, c]))) in (0, 1) else old[c] for c in range(3)])
        size = np.maximum(1, np.round(np.asarray(crop.GetSize()) * old / spacing)).astype(int)
        out = sitk.Resample(crop, [int(v) for v in size], sitk.Transform(), sitk.sitkLinear, crop.GetOrigin(),
                            tuple(float(v) for v in spacing), crop.GetDirection(), AIR_HU, sitk.sitkFloat32)  # fmt: skip
    elif kind == "noise":
        arr = sitk.GetArrayFromImage(crop)
        arr = arr + rng.standard_normal(arr.shape).astype(np.float32) * np.float32(settings.noise_hu)
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(crop)
    else:
        raise ConfigurationError(f"Unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}.")
    mpath = rec.get("mask_path")
    if isinstance(mpath, str) and mpath.strip():
        rec["mask_path"] = _mask_on_grid(mpath, out, transform, mask_dir, masks)
    return out, rec


def _mask_on_grid(mpath: str, grid: Any, transform: Any | None, mask_dir: Path, masks: dict[Any, Any]) -> str:
    """Write the lesion mask on ``grid``'s voxel grid, moved by ``transform`` if any (nearest neighbour); its path.

    ``masks`` caches the masks read, and the written copies of unmoved ones by grid (the ``none``,
    ``shift`` and ``noise`` draws of a lesion share one crop).
    """
    import SimpleITK as sitk

    from lesionbench.benchmark.encoders.features import read_image

    if mpath not in masks:
        masks[mpath] = read_image(mpath)
    moved = transform is not None
    key = (mpath, grid.GetSize(), grid.GetOrigin(), grid.GetSpacing(), grid.GetDirection())
    if not moved and key in masks:
        return masks[key]
    on_grid = sitk.Resample(masks[mpath], grid, transform or sitk.Transform(), sitk.sitkNearestNeighbor, 0, masks[mpath].GetPixelID())
    fd, name = tempfile.mkstemp(prefix="mask_", suffix=".nii", dir=mask_dir)
    os.close(fd)
    out = Path(name)
    sitk.WriteImage(on_grid, str(out))
    if not moved:
        masks[key] = str(out)
    return str(out)


class _OneImage:
    """Stands in for the image prefetcher: every path gives the one (perturbed) crop."""

    def __init__(self, image: Any):
        self.image = image

    def get(self, path: str | Path) -> Any:
        return self.image


def perturbed_features(test: pd.DataFrame, encoder: Any, kind: str, repeat: int, settings: PerturbationSettings, *,
                       batch_size: int = 16, progress: Any = None) -> np.ndarray:  # fmt: skip
    """Features (n, feature_dim) float32 of every lesion of ``test`` (absolute paths) under one draw of ``kind``.

    ``kind="none"`` is the unperturbed reference through the same crop. A lesion that fails raises
    :class:`ImageError` naming it: robustness is measured on complete test sets only.
    """
    from lesionbench.benchmark.encoders.features import cut_patches, read_image

    d = int(encoder.meta.feature_dim)
    out = np.full((len(test), d), np.nan, dtype=np.float32)
    radius = crop_radius_mm(encoder)
    image_style = hasattr(encoder, "encode_lesions")
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            feats = np.asarray(encoder.encode(np.stack([p for _, p in pending])), dtype=np.float32)
            out[[r for r, _ in pending]] = feats
            pending.clear()

    masks: dict[Any, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lesionbench-perturb-") as tmp:
        for path, rows in test.groupby("image_path", sort=False).indices.items():
            image = read_image(path)
            for r in rows:
                rec = test.iloc[int(r)].to_dict()
                where = f"lesion {rec.get('lesion_id')!r} ({path})"
                try:
                    crop = crop_around(image, (float(rec["coordX"]), float(rec["coordY"]), float(rec["coordZ"])), radius)
                    img, prec = perturb_lesion(crop, rec, kind, lesion_rng(settings, kind, repeat, str(rec["lesion_id"])), settings, Path(tmp), masks)
                    if image_style:
                        out[r] = np.asarray(encoder.encode_lesions(img, pd.DataFrame.from_records([prec])), dtype=np.float32)[0]
                    else:
                        (res,) = cut_patches(path, [prec], encoder.meta.patch, images=_OneImage(img))
                        if isinstance(res, str):
                            raise ImageError(res)
                        pending.append((int(r), res))
                except ImageError as exc:
                    raise ImageError(f"{where} under the {kind!r} perturbation: {exc} Fix or drop this lesion; robustness needs every test lesion.") from None
                if len(pending) >= batch_size:
                    flush()
                if progress is not None:
                    progress.update(1)
        flush()
    return out
