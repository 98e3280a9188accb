"""Parity with the reference implementation itself (fmcib 1.0.1a8 + MONAI 1.4.0 in its own venv).

Slow: it runs the reference's transform chain and ``get_features`` in a subprocess. Needs the venv made
by ``../shared/tools/fmcib-reference/setup.sh /tmp/fmcib-ref`` (or ``$FMCIB_REFERENCE_PYTHON``);
skipped when it is absent. The fast, always-on parity check of the geometry is in test_geometry.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.encoders.features import extract_features, load_patches
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.types import PatchSpec

from geometry_fixtures import rotation

REF_PYTHON = Path(os.environ.get("FMCIB_REFERENCE_PYTHON", "/tmp/fmcib-ref/bin/python"))
DUMP = Path(__file__).resolve().parent / "reference" / "dump_fmcib_patches.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REF_PYTHON.exists(), reason=f"reference venv not found at {REF_PYTHON} (see ../shared/tools/fmcib-reference)"),
]


CASES = [
    ((60, 52, 34), (0.8, 0.75, 1.5), np.eye(3), "mha"),
    ((40, 44, 36), (1.0, 1.0, 1.0), np.diag([-1.0, -1.0, 1.0]), "nii.gz"),  # already 1 mm RAS: not resampled
    ((44, 40, 30), (0.9, 1.3, 2.0), np.array([[0.0, 1, 0], [0, 0, -1], [-1, 0, 0]]), "nrrd"),  # permuted + flipped
    ((50, 54, 30), (0.7, 0.7, 1.25), rotation(10, -7, 25), "nii.gz"),  # oblique
    ((46, 42, 32), (1.2, 0.6, 1.0), rotation(0, 90, 33) @ np.diag([1.0, -1, 1]), "mha"),  # oblique + flip
    ((40, 40, 24), (1.0005, 0.9995, 1.0), np.diag([-1.0, -1.0, 1.0]), "mha"),  # within MONAI's 1e-3 tolerance
]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(7)
    rows = []
    for ci, (size, spacing, direction, ext) in enumerate(CASES):
        arr = rng.normal(0, 900, size[::-1])  # HU far outside [-1024, 3072] included
        arr[2:6, 3:9, :] = 4500
        arr[-5:, :, :8] = -3000
        img = sitk.GetImageFromArray(arr.astype(np.int16))
        img.SetSpacing(spacing)
        img.SetOrigin(tuple(rng.uniform(-200, 200, 3)))
        img.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
        path = out / f"vol{ci}.{ext}"
        sitk.WriteImage(img, str(path))
        back = sitk.ReadImage(str(path))
        n = np.asarray(size, dtype=float)
        for idx in (rng.uniform(0, n - 1), rng.uniform(0, n - 1), [0.2, n[1] - 1.1, n[2] / 2], [n[0] - 1, 0, 0], np.round(rng.uniform(0, n - 1))):
            pt = back.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx))
            rows.append({"image_path": str(path), "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2]})
    csv = out / "seeds.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_patches_equal_the_reference_chain(seeds, tmp_path):
    ref_file = tmp_path / "ref.npy"
    subprocess.run([str(REF_PYTHON), str(DUMP), str(seeds), str(ref_file)], check=True, capture_output=True, timeout=600)
    ref = np.load(ref_file)
    assert not np.isnan(ref).any(), "the reference failed on a seed"
    ours = load_patches(pd.read_csv(seeds), PatchSpec(), progress=False)[:, 0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_features_match_reference_get_features(seeds, tmp_path):
    # $FMCIB_REFERENCE_TOOLS, else ../shared (or $LESIONBENCH_SHARED, as the shared_dir fixture)/tools/fmcib-reference
    shared = Path(os.environ.get("LESIONBENCH_SHARED") or Path(__file__).resolve().parents[2] / "shared")
    tools = Path(os.environ.get("FMCIB_REFERENCE_TOOLS") or shared / "tools" / "fmcib-reference")
    if not (tools / "run_reference.py").is_file():
        pytest.skip(f"reference tools not found in {tools}")
    ckpt = tmp_path / "bnrand.torch"  # 704 MiB in the test's temporary folder, never in the repository
    subprocess.run([str(REF_PYTHON), str(tools / "make_checkpoint.py"), str(ckpt), "bnrand"], check=True, capture_output=True, timeout=600)
    df = pd.read_csv(seeds).iloc[::3].reset_index(drop=True)  # one seed in three: the reference is slow
    sub = tmp_path / "seeds.csv"
    df.to_csv(sub, index=False)
    subprocess.run(
        [str(REF_PYTHON), str(tools / "run_reference.py"), str(sub), str(ckpt), str(tmp_path / "ref"), "--num-workers", "0"],
        check=True, capture_output=True, timeout=1200,
    )
    ref = np.load(tmp_path / "ref.npy")
    ours = extract_features(df, get_encoder("fmcib", weights=ckpt), cache=False, progress=False)
    assert np.abs(ours - ref).max() <= 1e-4
