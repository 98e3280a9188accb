"""The TumorImagingBench (TIB) parity harness the zoo's ``tib`` recipe tests share.

TIB's wrappers run unmodified in their own virtual environment (``../shared/tools/tib-reference``, built into
/tmp/tib-ref by its setup.sh); tests that need it skip with the reason when it is missing. Usage::

    from tests.zoo._tib import require_tib, write_volumes, tib_features, tib_patches, compare

    def test_parity(tmp_path):
        require_tib()
        seeds = write_volumes(tmp_path)               # oblique, permuted and anisotropic CTs, 2 seeds each
        ckpt = ...                                    # random weights in the layout TIB's load() expects
        ref = tib_features("CTFMExtractor", seeds, ckpt, tmp_path)
        ours = extract_features(seeds, encoder, cache=False, progress=False)
        compare(ours, ref, "ct-fm:tib")
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for the shared geometry fixtures
from geometry_fixtures import rotation  # noqa: E402

TIB_VENV = Path(os.environ.get("LESIONBENCH_TIB_VENV", "/tmp/tib-ref"))
TIB_PYTHON = TIB_VENV / "bin" / "python"
_SHARED = Path(os.environ.get("LESIONBENCH_SHARED") or Path(__file__).resolve().parents[2].parent / "shared")
RUN_REFERENCE = _SHARED / "tools" / "tib-reference" / "run_reference.py"

#: (name, direction, spacing, size) of the test volumes: an oblique scan, a scan with permuted and flipped
#: axes, and a strongly anisotropic one (thick slices).
VOLUMES = (
    ("oblique", rotation(9.0, -6.0, 14.0), (0.8, 0.9, 1.5), (64, 60, 40)),
    ("permuted", np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (0.7, 1.2, 2.0), (56, 50, 44)),
    ("anisotropic", np.eye(3), (0.6, 0.65, 3.0), (90, 84, 20)),
)


def require_tib() -> None:
    """Skip (with the reason) unless TIB's reference environment and runner are present."""
    if not TIB_PYTHON.is_file():
        pytest.skip(f"TIB reference venv {TIB_VENV} is missing: bash {_SHARED}/tools/tib-reference/setup.sh {TIB_VENV}")
    if not RUN_REFERENCE.is_file():
        pytest.skip(f"{RUN_REFERENCE} is not present")


def write_volumes(folder: Path, *, seed: int = 0) -> pd.DataFrame:
    """Write the :data:`VOLUMES` as NIfTI (int16 HU: air, soft tissue, dense blobs, noise) and return a
    seeds table: per volume one seed near the centre and one near a corner (the crop is clamped and padded)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    rows = []
    for name, direction, spacing, size in VOLUMES:
        nx, ny, nz = size
        zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        hu = -900.0 + 950.0 * (((xx - nx / 2) / nx) ** 2 + ((yy - ny / 2) / ny) ** 2 < 0.16)
        for _ in range(6):  # dense blobs of various sizes
            c = rng.uniform(0.2, 0.8, 3) * (nx, ny, nz)
            r = rng.uniform(2, 7)
            hu += rng.uniform(200, 1200) * (((xx - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((zz - c[2]) * spacing[2]) ** 2 < r * r)
        hu += rng.normal(0, 25, hu.shape) + 40 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
        image = sitk.GetImageFromArray(np.clip(hu, -1024, 3000).astype(np.int16))
        image.SetSpacing(spacing)
        image.SetDirection(tuple(float(v) for v in np.asarray(direction).ravel()))
        image.SetOrigin((-31.5, 12.25, -80.0))
        path = Path(folder) / f"{name}.nii.gz"
        sitk.WriteImage(image, str(path))
        for tag, frac in (("centre", (0.52, 0.47, 0.55)), ("corner", (0.1, 0.88, 0.12))):
            idx = np.asarray(frac) * (np.asarray(size) - 1) + rng.uniform(-0.4, 0.4, 3)
            x, y, z = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx))
            rows.append({"lesion_id": f"{name}-{tag}", "patient_id": name, "image_path": str(path), "coordX": x, "coordY": y, "coordZ": z})
    return pd.DataFrame(rows)


def _run(args: list[str], what: str) -> None:
    proc = subprocess.run([str(TIB_PYTHON), *args], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"TIB reference ({what}) failed with code {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def tib_features(extractor: str, seeds: pd.DataFrame, checkpoint: Path, folder: Path) -> np.ndarray:
    """TIB's ``extractor`` (e.g. ``CTFMExtractor``) run by run_reference.py on ``seeds`` with ``checkpoint``."""
    csv, out = Path(folder) / f"tib-seeds-{extractor}.csv", Path(folder) / f"tib-{extractor}.npy"
    seeds[["image_path", "coordX", "coordY", "coordZ"]].to_csv(csv, index=False)
    _run([str(RUN_REFERENCE), extractor, str(csv), str(checkpoint), str(out)], extractor)
    return np.load(out)


_PATCH_SCRIPT = """
import sys, runpy
import numpy as np, pandas as pd
ref = runpy.run_path(sys.argv[1])
ref["_torchvision_standin"]()
from tumorimagingbench import models
m = models.get_extractor(sys.argv[2])()
rows = pd.read_csv(sys.argv[3]).to_dict("records")
np.save(sys.argv[4], np.stack([np.asarray(m.preprocess(r), dtype=np.float32) for r in rows]))
"""


def tib_patches(extractor: str, seeds: pd.DataFrame, folder: Path) -> np.ndarray:
    """The inputs (n, 1, D, H, W) TIB's ``extractor.preprocess`` gives its network for ``seeds`` (no weights)."""
    csv, out = Path(folder) / f"tib-seeds-{extractor}.csv", Path(folder) / f"tib-patches-{extractor}.npy"
    seeds[["image_path", "coordX", "coordY", "coordZ"]].to_csv(csv, index=False)
    _run(["-c", _PATCH_SCRIPT, str(RUN_REFERENCE), extractor, str(csv), str(out)], f"{extractor} preprocess")
    return np.load(out)


def compare(ours: np.ndarray, ref: np.ndarray, name: str, *, rtol: float = 1e-4, atol_scale: float = 1e-4) -> float:
    """Assert ``ours`` allclose ``ref`` (rtol, and atol = ``atol_scale`` times the largest |ref|), return
    the max abs difference (tests print it)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs TIB {ref.shape}"
    assert np.isfinite(ours).all() and np.isfinite(ref).all(), f"{name}: non-finite values"
    atol = atol_scale * max(float(np.abs(ref).max()), 1e-12)
    diff = float(np.abs(ours - ref).max())
    bad = ~np.isclose(ours, ref, rtol=rtol, atol=atol)
    assert not bad.any(), f"{name}: {int(bad.sum())} of {bad.size} values differ from TIB (max abs diff {diff:.3g}, atol {atol:.3g})"
    print(f"{name}: max abs diff vs TIB {diff:.3g} (max |ref| {float(np.abs(ref).max()):.3g})")
    return diff
