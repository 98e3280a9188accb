"""Models Genesis: the released layout loads audited, ContBatchNorm per sample, both recipes, TIB parity (slow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from _layouts import audit_roundtrip, shrink, small_patches
from _tib import compare, require_tib, tib_features, write_volumes
from _unet_release import unet3d_unused

from lesionbench.baselines.zoo._nets import unet3d as _unet3d
from lesionbench.benchmark.encoders.features import extract_features, load_patches
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder


def _released(sd: dict, path, *, num_batches_tracked: bool = True) -> None:
    """``Genesis_Chest_CT.pt``: {"state_dict": {"module.<key>"}}: ``sd`` (the encoder's parameters) plus the
    keys the audit ignores, the U-Net decoder and the batch norms' running statistics."""
    unused = {k: v for k, v in unet3d_unused().items() if num_batches_tracked or not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**sd, **unused}.items()}}, path)


def test_released_layout_loads_audited(tmp_path):
    audit_roundtrip("models-genesis", tmp_path, _released, filename="Genesis_Chest_CT.pt")


def test_a_file_without_the_dataparallel_prefix_loads_too(tmp_path):
    sd = get_encoder("models-genesis-random-init", seed=2, device="cpu").network.state_dict()
    torch.save({"state_dict": {**unet3d_unused(), **sd}}, tmp_path / "bare.pt")  # decoder keys unprefixed
    enc = get_encoder("models-genesis", weights=tmp_path / "bare.pt", device="cpu")
    assert dict(enc.meta.card)["tensors_loaded"] == str(len(sd))


def test_running_statistics_are_unused_and_may_be_absent(tmp_path):
    # ContBatchNorm3d never reads them; files saved before PyTorch 0.4.1 have no num_batches_tracked
    sd = get_encoder("models-genesis-random-init", seed=2, device="cpu").network.state_dict()
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in sd)
    _released(sd, tmp_path / "old.pt", num_batches_tracked=False)
    x = small_patches()
    a = shrink(get_encoder("models-genesis", weights=tmp_path / "old.pt", device="cpu")).encode(x)
    ckpt = torch.load(tmp_path / "old.pt", weights_only=True)
    for k in ckpt["state_dict"]:
        if k.endswith(("running_mean", "running_var")):
            ckpt["state_dict"][k] = ckpt["state_dict"][k] * 3.0 + 1.0
    torch.save(ckpt, tmp_path / "other-stats.pt")
    b = shrink(get_encoder("models-genesis", weights=tmp_path / "other-stats.pt", device="cpu")).encode(x)
    np.testing.assert_array_equal(a, b)


def _released_batch_norm(self, x):
    """The released ContBatchNorm3d.forward: batch statistics of the whole batch, even in eval mode."""
    return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def test_cont_batch_norm_is_the_released_computation_per_sample(monkeypatch):
    net = get_encoder("models-genesis-random-init", seed=4, device="cpu").network
    with torch.no_grad():
        for m in net.modules():  # non-trivial affine parameters
            if isinstance(m, _unet3d.PerSampleBatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    x = torch.rand(3, 1, 16, 16, 16) * torch.tensor([1.0, 0.5, 2.0]).view(3, 1, 1, 1, 1)
    with torch.no_grad():
        ours = net(x)
        with monkeypatch.context() as mp:
            mp.setattr(_unet3d.PerSampleBatchNorm3d, "forward", _released_batch_norm)
            alone = torch.cat([net(x[i : i + 1]) for i in range(3)])
            together = net(x)
    torch.testing.assert_close(ours, alone, rtol=1e-5, atol=1e-6)  # the release, one lesion at a time
    assert (together - alone).abs().max() > 1e-3  # the release's hazard: features depend on the batch


def test_recipes_names_dims_and_fingerprints():
    official = get_encoder("models-genesis-random-init", device="cpu")
    tib = get_encoder("models-genesis-random-init", recipe="tib", device="cpu")
    assert (official.meta.name, tib.meta.name) == ("models-genesis-random-init", "models-genesis-random-init:tib")
    assert (official.meta.feature_dim, tib.meta.feature_dim) == (512, 4096)
    p = official.meta.patch
    assert (p.size, p.orientation, p.interpolation) == ((64, 64, 32), "index", "none")
    assert (p.intensity.a_min, p.intensity.a_max, p.intensity.clip) == (-1000.0, 1000.0, True)
    assert tib.meta.patch.size == (48, 48, 48) and tib.meta.patch.orientation == "RAS"
    assert official.meta.fingerprint() != tib.meta.fingerprint()
    card = dict(official.meta.card)
    assert card["non_commercial"] == "yes" and card["parameters"] == f"{sum(t.numel() for t in official.network.parameters()):,}"
    assert _unet3d.feature_dim("fmcib", (48, 48, 48)) == 4096
    assert "global average pool" in card["embedding"] and "flatten" in dict(tib.meta.card)["embedding"]


def test_official_patch_is_the_pretraining_cube_written_out_by_hand(tmp_path):
    """infinite_generator_3D.py: sitk.GetArrayFromImage(...).transpose(2, 1, 0) (ITK x, y, z; no resampling,
    whatever the direction), HU clipped to [-1000, 1000] and scaled to [0, 1]; a 64x64x32 cube, here the one
    around int() of the seed's continuous index."""
    rng = np.random.default_rng(3)
    vol = rng.integers(-1400, 1600, (44, 80, 76)).astype(np.int16)  # (z, y, x)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetDirection((0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0))  # permuted, flipped axes: still index order
    image.SetOrigin((10.0, -20.0, 30.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    index = (37.6, 40.2, 21.9)
    x, y, z = image.TransformContinuousIndexToPhysicalPoint(index)
    seeds = pd.DataFrame([{"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z}])
    got = load_patches(seeds, get_encoder("models-genesis-random-init", device="cpu").meta.patch, progress=False)[0, 0]
    cube = vol.transpose(2, 1, 0)[37 - 32 : 37 + 32, 40 - 32 : 40 + 32, 21 - 16 : 21 + 16].astype(np.float64)
    cube = np.clip(cube, -1000.0, 1000.0)
    np.testing.assert_allclose(got, (cube + 1000.0) / 2000.0, rtol=0, atol=1e-7)


def test_conformance_and_batch_invariance_official():
    check_encoder(shrink(get_encoder("models-genesis-random-init", device="cpu", batch_size=2)), n=2)


def test_conformance_and_batch_invariance_tib_flattened():
    # the flattened variant keeps its 2x2x2 x 512 = 4096 output from 40^3 up to 55^3 inputs
    check_encoder(shrink(get_encoder("models-genesis-random-init", recipe="tib", device="cpu", batch_size=2), 40), n=2)


@pytest.mark.slow
def test_official_size_forward():
    check_encoder(get_encoder("models-genesis-random-init", device="cpu", batch_size=2), n=2)


@pytest.mark.slow
def test_tib_recipe_matches_tumorimagingbench(tmp_path):
    require_tib()
    seeds = write_volumes(tmp_path)
    enc = get_encoder("models-genesis-random-init", recipe="tib", seed=3, device="cpu", batch_size=2)
    # TIB's ModelsGenExtractor.load: torch.load(...)["state_dict"], "module." removed, strict=False into
    # fmcib's ModelsGenesisUNet3D(decoder=False) (the decoder keys are only logged)
    ckpt = tmp_path / "Genesis_Chest_CT.pt"
    _released(enc.network.state_dict(), ckpt)
    ref = tib_features("ModelsGenExtractor", seeds, ckpt, tmp_path)
    ours = extract_features(seeds, enc, cache=False, progress=False)
    assert np.abs(ref).max() > 0
    compare(ours, ref, "models-genesis:tib")
