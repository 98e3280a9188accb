"""SuPreM (UNet): the released Universal-Model layout loads audited, recipes, batch invariance, TIB parity (slow)."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from _layouts import audit_roundtrip, shrink
from _tib import TIB_PYTHON, compare, require_tib, tib_features, write_volumes
from _unet_release import suprem_checkpoint

from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.encoders.features import extract_features, load_patches
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder


def _released(sd: dict, path) -> None:
    """``supervised_suprem_unet_2100.pth``: {"net": {"module.backbone.<key>", "module.<head>"}, "epoch"}, with
    the backbone's decoder and the Universal Model's heads; ``sd`` replaces the encoder's tensors."""
    ckpt = suprem_checkpoint(seed=1)
    encoder = {f"module.backbone.{k}" for k in get_encoder("suprem-random-init", device="cpu").network.state_dict()}
    ckpt["net"] = {k: v for k, v in ckpt["net"].items() if k not in encoder}  # keeps the bn1 running statistics
    ckpt["net"].update({f"module.backbone.{k}": v for k, v in sd.items()})
    torch.save(ckpt, path)


def test_released_layout_loads_audited(tmp_path):
    audit_roundtrip("suprem", tmp_path, _released, filename="supervised_suprem_unet_2100.pth")


def test_only_the_listed_heads_are_ignored(tmp_path):
    # a key outside the backbone that is not one of the Universal Model's heads is an error, not skipped
    sd = get_encoder("suprem-random-init", device="cpu").network.state_dict()
    path = tmp_path / "supervised_suprem_unet_2100.pth"
    _released(sd, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["net"]["module.text_decoder.weight"] = torch.zeros(3)
    torch.save(ckpt, path)
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): <no prefix 'module\.backbone\.'> module\.text_decoder\.weight"):
        get_encoder("suprem", weights=path, device="cpu")


def test_recipes_names_and_fingerprints():
    official = get_encoder("suprem-random-init", device="cpu")
    tib = get_encoder("suprem-random-init", recipe="tib", device="cpu")
    assert (official.meta.name, tib.meta.name) == ("suprem-random-init", "suprem-random-init:tib")
    assert official.meta.feature_dim == tib.meta.feature_dim == 512
    p = official.meta.patch
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((96, 96, 96), (1.5, 1.5, 1.5), "RAS", "linear")
    assert (p.intensity.a_min, p.intensity.a_max, p.intensity.clip) == (-175.0, 250.0, True)
    assert (tib.meta.patch.size, tib.meta.patch.intensity.a_min) == ((48, 48, 48), -1024.0)
    assert official.meta.fingerprint() != tib.meta.fingerprint()
    assert dict(official.meta.card)["non_commercial"] == "yes"


def test_conformance_and_batch_invariance():
    check_encoder(shrink(get_encoder("suprem-random-init", recipe="tib", device="cpu", batch_size=2)), n=2)


@pytest.mark.slow
def test_official_size_forward():
    check_encoder(get_encoder("suprem-random-init", device="cpu", batch_size=2), n=2)


@pytest.mark.slow
def test_tib_recipe_matches_tumorimagingbench(tmp_path):
    require_tib()
    seeds = write_volumes(tmp_path)
    enc = get_encoder("suprem-random-init", recipe="tib", seed=3, device="cpu", batch_size=2)
    # TIB's SUPREMExtractor.load: torch.load(...)["net"], two key levels stripped, decoder keys skipped,
    # copied into UNet3D's state dict; its Encoder wrapper pools out512
    ckpt = tmp_path / "supervised_suprem_unet_2100.pth"
    _released(enc.network.state_dict(), ckpt)
    ref = tib_features("SUPREMExtractor", seeds, ckpt, tmp_path)
    ours = extract_features(seeds, enc, cache=False, progress=False)
    assert np.abs(ref).max() > 0
    compare(ours, ref, "suprem:tib")


#: SuPreM's pre-training transforms (dataloader_bdmap.py with train.py's defaults) on the whole volume, then the
#: 96^3 crop around int() of the seed's index in that grid: run with MONAI 1.4 and ITK in the reference venv.
_SUPREM_MONAI = """
import sys, numpy as np
from monai.transforms import LoadImage, Orientation, ScaleIntensityRange, Spacing
path, x, y, z, out = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5]
img = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(path)
img = Spacing(pixdim=(1.5, 1.5, 1.5), mode="bilinear")(Orientation(axcodes="RAS")(img))
img = ScaleIntensityRange(a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True)(img)
c = np.linalg.solve(np.asarray(img.affine, dtype=float), np.array([-x, -y, z, 1.0]))[:3].astype(int)
np.save(out, np.asarray(img[0])[c[0] - 48 : c[0] + 48, c[1] - 48 : c[1] + 48, c[2] - 48 : c[2] + 48])
"""


@pytest.mark.slow
def test_official_patch_matches_suprems_monai_transforms(tmp_path):
    """Axis-aligned anisotropic scan: the crop-first patch is SuPreM's whole-volume MONAI chain, cropped.
    (The official recipe keeps an oblique scan's grid as MONAI's Spacingd does, diagonal=False; the
    chain itself is pinned against MONAI on oblique volumes in tests/zoo/test_zoo_infra.py.)"""
    require_tib()  # its venv has MONAI 1.4 with ITK
    vol = np.random.default_rng(1).normal(0, 150, (120, 190, 200)).astype(np.int16)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.8, 0.85, 1.25))
    image.SetOrigin((-80.0, 40.0, -200.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    x, y, z = image.TransformContinuousIndexToPhysicalPoint((101.3, 92.6, 60.4))
    spec = get_encoder("suprem-random-init", device="cpu").meta.patch
    got = load_patches(pd.DataFrame([{"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z}]), spec, progress=False)[0, 0]
    out = tmp_path / "monai.npy"
    proc = subprocess.run([str(TIB_PYTHON), "-c", _SUPREM_MONAI, str(path), str(x), str(y), str(z), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = np.load(out)
    assert want.shape == (96, 96, 96) and 0 < want.mean() < 1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
