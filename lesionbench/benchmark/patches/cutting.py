"""Patches cut around lesion seeds: every lesion of one image from one read of it
(:func:`cut_patches`), in the reference FMCIB recipe or a zoo model's seed-crop recipe
(:mod:`~lesionbench.benchmark.patches.seedcrop`), and the check of a patch recipe (:func:`check_spec`).
:mod:`~lesionbench.benchmark.encoders.features` re-exports both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionbench.benchmark.errors import ConfigurationError, ImageError
from lesionbench.benchmark.data.rawmap import MappedVolume, map_image
from lesionbench.benchmark.data.reading import ImagePrefetcher, read_image
from lesionbench.benchmark.types import COORDS, PatchSpec
from lesionbench.benchmark.types import is_missing as _is_missing


def check_spec(spec: PatchSpec) -> None:
    from lesionbench.benchmark.types import PATCH_METHODS

    if spec.method not in PATCH_METHODS:
        raise ConfigurationError(f"Unknown patch method {spec.method!r}; lesionbench cuts patches with method {' or '.join(map(repr, PATCH_METHODS))}.")
    if len(spec.size) != 3 or any(int(s) < 1 for s in spec.size):
        raise ConfigurationError(f"Patch size must be three positive sizes (D, H, W), got {spec.size}.")
    if spec.method == "seed-crop":
        from lesionbench.benchmark.patches.seedcrop import check_seed_crop_spec

        check_seed_crop_spec(spec)


def cut_patches(path: str, lesions: Sequence[dict[str, Any]], spec: PatchSpec, *, images: ImagePrefetcher | None = None) -> list[np.ndarray | str]:
    """Patches (C, D, H, W) of all lesions of one image, reading it once (from ``images`` if given);
    a failed lesion gives its reason.

    ``spec.size`` is (D, H, W) = (z, y, x) and ``spec.spacing_mm`` in the same order.
    """
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import MASK_GRID_FIX, grid_mismatch
    from lesionbench.benchmark.data.geometry import (
        DEFAULT_LESION_DIAMETER_MM,
        ImageGeometry,
        fmcib_patch,
        mask_patch_from_image,
        mask_patch_sphere,
        reference_grid,
    )

    try:
        # an uncompressed file is mapped: only the blocks around the seeds are read
        if images is None:
            image = map_image(path) or read_image(path)
        elif isinstance(images, ImagePrefetcher):
            image = images.get_pixels(path)
        else:  # a stand-in with get() alone (the robustness runs' one perturbed crop)
            image = images.get(path)
        geometry = ImageGeometry.of(image)
        if spec.method == "seed-crop":
            from lesionbench.benchmark.patches.seedcrop import seed_crop_grid, seed_crop_patch

            grid = seed_crop_grid(geometry, spec)
        else:
            grid = reference_grid(geometry, tuple(float(s) for s in spec.spacing_mm)[::-1])
    except ImageError as exc:
        return [str(exc)] * len(lesions)
    volume = image.array if isinstance(image, MappedVolume) else sitk.GetArrayViewFromImage(image)
    if spec.method == "seed-crop":  # one channel, no mask (check_spec refuses with_mask)
        out_sc: list[np.ndarray | str] = []
        for les in lesions:
            try:
                out_sc.append(seed_crop_patch(volume, grid, tuple(float(les[c]) for c in COORDS), spec)[None])
            except ImageError as exc:
                out_sc.append(str(exc))
        return out_sc
    masks: dict[str, tuple[np.ndarray, ImageGeometry] | str] = {}
    out: list[np.ndarray | str] = []
    for les in lesions:
        seed = tuple(float(les[c]) for c in COORDS)
        try:
            chans = [fmcib_patch(volume, grid, seed, size_zyx=spec.size)]
            if spec.with_mask:
                mpath = les.get("mask_path")
                if not _is_missing(mpath):
                    if mpath not in masks:
                        try:
                            m = read_image(mpath)
                            mgeo = ImageGeometry.of(m)
                            if (diff := grid_mismatch(mgeo, geometry)) is not None:
                                raise ImageError(f"{mpath} is not on the grid of its image ({diff}). {MASK_GRID_FIX}")
                            masks[mpath] = (sitk.GetArrayFromImage(m), mgeo)
                        except ImageError as exc:
                            masks[mpath] = f"mask: {exc}"
                    entry = masks[mpath]
                    if isinstance(entry, str):
                        raise ImageError(entry)
                    label = les.get("mask_label")
                    label = None if _is_missing(label) else int(label)
                    chans.append(mask_patch_from_image(entry[0], entry[1], grid, seed, size_zyx=spec.size, label=label))
                else:
                    d = les.get("diameter_mm")
                    d = DEFAULT_LESION_DIAMETER_MM if _is_missing(d) else float(d)
                    chans.append(mask_patch_sphere(grid, seed, d, size_zyx=spec.size))
            out.append(np.stack(chans))
        except ImageError as exc:
            out.append(str(exc))
    return out
