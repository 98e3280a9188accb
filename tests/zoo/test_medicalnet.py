"""MedicalNet (Med3D): the released layout loads audited, the trunk is the release's (not MONAI's), recipe,
batch invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from _layouts import audit_roundtrip, shrink

from lesionbench.baselines.zoo._nets.medicalnet import MedicalNetResNet
from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError
from lesionbench.benchmark.encoders.features import load_patches
from lesionbench.benchmark.encoders.plugins import ENCODERS, get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder


def _release(sd, path):
    """MedicalNet's train.py checkpoint: {'ecpoch', 'batch_id', 'state_dict': DataParallel keys, 'optimizer'}."""
    torch.save({"ecpoch": 200, "batch_id": 7, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"state": {}, "param_groups": []}}, path)


@pytest.mark.parametrize("depth", [10, 18])
def test_released_layout_loads_audited(tmp_path, depth):
    audit_roundtrip(f"medicalnet-r{depth}", tmp_path, _release, filename=f"resnet_{depth}_23dataset.pth")


@pytest.mark.slow
@pytest.mark.parametrize("depth", [34, 50])
def test_released_layout_loads_audited_deep(tmp_path, depth):
    audit_roundtrip(f"medicalnet-r{depth}", tmp_path, _release, filename=f"resnet_{depth}_23dataset.pth")


def test_segmentation_head_is_ignored_but_nothing_else(tmp_path):
    sd = get_encoder("medicalnet-r10-random-init", device="cpu").network.state_dict()
    ckpt = {f"module.{k}": v for k, v in sd.items()}
    ckpt["module.conv_seg.0.weight"] = torch.zeros(512, 32, 2, 2, 2)  # the training network's decoder
    torch.save({"state_dict": ckpt}, tmp_path / "with_head.pth")
    enc = get_encoder("medicalnet-r10", weights=tmp_path / "with_head.pth", device="cpu")
    assert dict(enc.meta.card)["tensors_loaded"] == str(len(sd))


def test_trunk_is_the_releases_not_monais():
    """Same 72 tensors as MONAI's resnet10 (which MONAI strict-loads from the release), but the release's
    stride-2 stem and dilated stride-1 layer3/layer4: a 50^3 patch ends as a 7^3 map, not 2^3."""
    from monai.networks.nets import resnet10

    ours = MedicalNetResNet(10)
    monai_net = resnet10(n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in monai_net.state_dict().items()}
    assert ours.conv1.stride == (2, 2, 2)
    for layer, dilation in ((ours.layer3, 2), (ours.layer4, 4)):
        assert layer[0].conv1.stride == (1, 1, 1) and layer[0].conv1.dilation == (dilation,) * 3
        assert layer[0].conv2.dilation == (dilation,) * 3
    x = torch.zeros(1, 1, 50, 50, 50)
    stem = ours.maxpool(ours.relu(ours.bn1(ours.conv1(x))))
    assert ours.layer4(ours.layer3(ours.layer2(ours.layer1(stem)))).shape[2:] == (7, 7, 7)


def test_shortcut_types_follow_the_release():
    assert not any("downsample" in k for k in MedicalNetResNet(18).state_dict())  # type A: no weights
    r50 = MedicalNetResNet(50).state_dict()
    assert "layer1.0.downsample.0.weight" in r50 and "layer1.0.downsample.0.bias" not in r50  # type B, no bias


def test_recipe_card_and_no_tib_variant():
    enc = get_encoder("medicalnet-r10-random-init", device="cpu")
    p = enc.meta.patch
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((50, 50, 50), (1.0, 1.0, 1.0), "RAS", "nearest")
    assert (p.intensity.kind, p.intensity.ddof) == ("zscore-positive", 0)
    assert not p.diagonal  # ndimage.zoom of the stored array keeps the scanner's rotation
    card = dict(enc.meta.card)
    assert card["embedding"].startswith("512-d") and card["non_commercial"] == "no"
    assert card["parameters"] == f"{sum(t.numel() for t in enc.network.parameters()):,}"
    assert get_encoder("medicalnet-r50-random-init", device="cpu").meta.feature_dim == 2048
    assert "medicalnet-r10:tib" not in ENCODERS.names()  # TIB wraps no MedicalNet model
    with pytest.raises((ConfigurationError, UnknownNameError), match="tib"):
        get_encoder("medicalnet-r10-random-init", recipe="tib", device="cpu")


@pytest.mark.parametrize("name", ["medicalnet-r10-random-init", "medicalnet-r18-random-init"])
def test_conformance_and_batch_invariance(name):
    check_encoder(shrink(get_encoder(name, device="cpu", batch_size=2), 32), n=2)


def test_official_size_features_are_finite_and_seeded():
    a = get_encoder("medicalnet-r10-random-init", seed=1, device="cpu")
    b = get_encoder("medicalnet-r10-random-init", seed=1, device="cpu")
    x = np.random.default_rng(0).normal(0, 1, (2, 1, 50, 50, 50)).astype(np.float32)
    fa = a.encode(x)
    assert fa.shape == (2, 512) and np.isfinite(fa).all()
    np.testing.assert_array_equal(fa, b.encode(x))


def _medicalnet_zscore(volume: np.ndarray) -> np.ndarray:
    """MedicalNet's __itensity_normalize_one_volume__ without its N(0, 1) fill of zero voxels: mean and
    (numpy, ddof 0) std over the voxels > 0, applied to every voxel."""
    pixels = volume[volume > 0]
    return (volume - pixels.mean()) / pixels.std()


def test_official_patch_is_medicalnets_preprocessing_written_out_by_hand(tmp_path):
    """An axis-aligned 1 mm image needs no resampling (nearest, on the same grid), so the patch is a 50^3
    crop of the array in RAS order (ITK's x and y flipped) around int() of the seed's RAS index, z-scored
    over its voxels > 0; next to the image border the voxels beyond it are 0 after normalisation."""
    rng = np.random.default_rng(3)
    vol = rng.integers(-1300, 1400, (60, 64, 70)).astype(np.int16)  # (z, y, x)
    image = sitk.GetImageFromArray(vol)
    image.SetOrigin((-20.0, 35.5, -410.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    rows = []
    for index in ((30.3, 33.8, 28.6), (66.2, 2.4, 28.6)):  # inside; near the x and y borders
        x, y, z = image.TransformContinuousIndexToPhysicalPoint(index)
        rows.append({"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z})
    got = load_patches(pd.DataFrame(rows), get_encoder("medicalnet-r10-random-init", device="cpu").meta.patch, progress=False)[:, 0]
    ras = vol.transpose(2, 1, 0)[::-1, ::-1, :].astype(np.float64)  # (R, A, S): R index = 69 - x, A = 63 - y
    # seed 1: RAS index (int(69 - 30.3), int(63 - 33.8), int(28.6)) = (38, 29, 28) -> crop [13, 63) x [4, 54) x [3, 53)
    np.testing.assert_allclose(got[0], _medicalnet_zscore(ras[13:63, 4:54, 3:53]), rtol=0, atol=2e-6)
    # seed 2: (int(2.8), int(60.6), 28) = (2, 60, 28) -> R [-23, 27) clamped to [0, 27), A [35, 85) -> [35, 64);
    # the 27 x 29 voxels are normalised, then centred in 50^3 with zeros: R offset (50 - 27) // 2 = 11, A 10
    want = np.zeros((50, 50, 50))
    want[11:38, 10:39, :] = _medicalnet_zscore(ras[0:27, 35:64, 3:53])
    np.testing.assert_allclose(got[1], want, rtol=0, atol=2e-6)
