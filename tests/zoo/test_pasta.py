"""PASTA: the released layouts load audited, the two embedding layers, recipes, batch invariance, TIB parity (slow)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from _layouts import audit_roundtrip, shrink
from _tib import compare, require_tib, tib_features, write_volumes
from _unet_release import pasta_decoder

from lesionbench.baselines.zoo._zoo import load_audited
from lesionbench.baselines.zoo.pasta import MODEL, build
from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.encoders.features import extract_features, load_patches
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder


def _mirror(sd: dict, path=None) -> dict | None:
    """TIB's mirror ``PASTA final.pth``: a flat state dict, DataParallel ``module.`` prefix, nnU-Net decoder
    included (zero-stride placeholders: exact keys and shapes, no memory). Saved to ``path`` when given."""
    ckpt = {f"module.{k}": v for k, v in {**sd, **pasta_decoder()}.items()}
    return torch.save(ckpt, path) if path is not None else ckpt


def _nnunet(sd: dict, path=None) -> dict | None:
    """An nnU-Net v2 checkpoint: {"network_weights": <bare Generic_UNet state dict>, ...} (PASTA's classification loader)."""
    ckpt = {"network_weights": {**sd, **pasta_decoder()}, "current_epoch": 1000, "trainer_name": "nnUNetTrainer"}
    return torch.save(ckpt, path) if path is not None else ckpt


@pytest.fixture(scope="module")
def source_weights():
    """One seeded PASTA encoder state dict (113M parameters: built once for the module's tests)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return build("official").state_dict()


@pytest.mark.parametrize("layout", [_mirror, _nnunet], ids=["tib-mirror", "nnunet-container"])
def test_released_layouts_load_audited_in_memory(layout, source_weights):
    # the on-disk round trip of _layouts.audit_roundtrip writes ~0.5 GB per file for PASTA: it runs as a slow
    # test below; here the same checks on the checkpoint objects (load_audited accepts them)
    sd = source_weights
    target = build("official")
    assert load_audited(target, layout(sd), MODEL, source="mem") == len(sd)
    assert all(torch.equal(v, sd[k]) for k, v in target.state_dict().items())
    removed = sorted(sd)[len(sd) // 2]
    reshaped = "conv_blocks_context.3.blocks.1.conv.weight"
    cases = {
        r"1 missing key\(s\): " + re.escape(removed): {k: v for k, v in sd.items() if k != removed},
        r"1 unexpected key\(s\): conv_blocks_context\.6\.weight": {**sd, "conv_blocks_context.6.weight": sd[removed]},
        r"1 mis-shaped key\(s\): " + re.escape(reshaped): {**sd, reshaped: sd[reshaped][:, :1]},
        r"NaN or infinite values: " + re.escape(reshaped): {**sd, reshaped: torch.full_like(sd[reshaped], float("nan"))},
    }
    for message, bad in cases.items():
        with pytest.raises(WeightsError, match=message):
            load_audited(target, layout(bad), MODEL, source="mem")


@pytest.mark.slow
@pytest.mark.parametrize("layout", [(_mirror, "PASTA final.pth"), (_nnunet, "PASTA_final.pth")], ids=["tib-mirror", "nnunet-container"])
def test_released_layouts_load_audited_from_disk(tmp_path, layout):
    # 32^3: at 16^3 the stage-4 map is one voxel, which instance norm cannot normalise
    audit_roundtrip("pasta", tmp_path, layout[0], filename=layout[1], patch_size=32)


def test_official_pools_stage_4_and_tib_the_bottleneck(source_weights):
    official, tib = build("official"), build("tib")
    assert list(official.state_dict()) == list(tib.state_dict())  # one set of weights, two layers
    official.load_state_dict(source_weights)
    tib.load_state_dict(source_weights)
    x = torch.rand(1, 1, 48, 48, 48)
    with torch.no_grad():
        stage4 = x
        for block in official.conv_blocks_context[:5]:
            stage4 = block(stage4)
        bottleneck = official.conv_blocks_context[5](stage4)
        assert stage4.shape[1:] == (1024, 3, 3, 3) and bottleneck.shape[1:] == (1024, 2, 2, 2)
        torch.testing.assert_close(official(x), stage4.mean(dim=(2, 3, 4)))
        torch.testing.assert_close(tib(x), bottleneck.mean(dim=(2, 3, 4)))


def test_recipes_names_and_fingerprints():
    official = get_encoder("pasta-random-init", device="cpu")
    tib = get_encoder("pasta-random-init", recipe="tib", device="cpu")
    assert (official.meta.name, tib.meta.name) == ("pasta-random-init", "pasta-random-init:tib")
    assert official.meta.feature_dim == tib.meta.feature_dim == 1024
    p = official.meta.patch
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((96, 96, 96), (1.0, 1.0, 1.0), "LPS", "linear")
    assert p.intensity.kind == "piecewise" and p.intensity.points == ((-1000.0, 0.0), (-200.0, 0.2), (200.0, 0.9), (1000.0, 1.0))
    assert tib.meta.patch.size == (48, 48, 48) and tib.meta.patch.orientation == "LPS"
    assert official.meta.fingerprint() != tib.meta.fingerprint()
    card = dict(official.meta.card)
    assert "stage 4" in card["embedding"] and "bottleneck" in dict(tib.meta.card)["embedding"]
    assert card["non_commercial"] == "no" and card["parameters"] == f"{sum(t.numel() for t in official.network.parameters()):,}"


def _pasta_slf(hu: torch.Tensor) -> torch.Tensor:
    """PASTA's img_multi_thresh_normalized_torch with get_loader.py's knots, written out: float32 segments
    [t_i, t_i+1) linear, below the first knot its value, from the last knot on its value."""
    t = torch.tensor([-1000.0, -200.0, 200.0, 1000.0])
    v = torch.tensor([0.0, 0.2, 0.9, 1.0])
    out = torch.zeros_like(hu) + v[0]
    for i in reversed(range(3)):
        seg = (hu >= t[i]) & (hu < t[i + 1])
        out = torch.where(seg, (v[i + 1] - v[i]) / (t[i + 1] - t[i]) * (hu - t[i]) + v[i], out)
    out[hu >= t[-1]] = v[-1]
    return out


def test_official_patch_is_pastas_preprocessing_written_out_by_hand(tmp_path):
    """An axis-aligned 1 mm LPS image needs no resampling, and the patch's LPS axes (PASTA's NifitiStandard
    target) are its ITK index axes: the patch is a 96^3 crop through PASTA's map. The harness crops as TIB
    does, around int() of the seed's index in the 1 mm RAS grid (x and y flipped), clamped, zero-padded."""
    rng = np.random.default_rng(5)
    vol = rng.integers(-1300, 1400, (100, 104, 108)).astype(np.float32)  # (z, y, x)
    vol[47, 48, 50:54] = [-1000, -200, 200, 1000]  # the knots themselves, inside the crop
    image = sitk.GetImageFromArray(vol.astype(np.int16))
    image.SetOrigin((-40.0, 12.0, -300.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    x, y, z = image.TransformContinuousIndexToPhysicalPoint((50.3, 48.8, 47.6))
    seeds = pd.DataFrame([{"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z}])
    got = load_patches(seeds, get_encoder("pasta-random-init", device="cpu").meta.patch, progress=False)[0, 0]
    # RAS grid seed (int(107 - 50.3), int(103 - 48.8), int(47.6)) = (56, 54, 47); crops [8, 104), [6, 102),
    # [-1, 95) -> clamped [0, 95); back in LPS index x [4, 100), y [2, 98); z's 95 voxels then one zero pad
    want = np.zeros((96, 96, 96), dtype=np.float32)
    want[:, :, :95] = _pasta_slf(torch.from_numpy(np.ascontiguousarray(vol.transpose(2, 1, 0)[4:100, 2:98, 0:95]))).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
    np.testing.assert_allclose(got[46:50, 46, 47], [0.0, 0.2, 0.9, 1.0], atol=1e-7)  # x 50..53, y 48, z 47
    assert np.isclose(_pasta_slf(torch.tensor([-1000.0, -200.0, 200.0, 1000.0])), [0.0, 0.2, 0.9, 1.0]).all()


def test_conformance_and_batch_invariance_official():
    # 32^3 is the smallest input whose stage-4 map (2^3) instance norm does not flatten to its bias
    check_encoder(shrink(get_encoder("pasta-random-init", device="cpu", batch_size=2), 32), n=2)


@pytest.mark.slow
def test_official_size_forward():
    check_encoder(get_encoder("pasta-random-init", device="cpu", batch_size=2), n=2)


@pytest.mark.slow
def test_tib_recipe_matches_tumorimagingbench(tmp_path):
    require_tib()
    seeds = write_volumes(tmp_path)
    enc = get_encoder("pasta-random-init", recipe="tib", seed=3, device="cpu", batch_size=2)
    # TIB's PASTAExtractor.load: torch.load, "module." removed, strict=False into its Generic_UNet
    # (encoder + transposed convs); forward runs through the bottleneck, then a global average pool
    ckpt = tmp_path / "PASTA final.pth"
    _mirror(enc.network.state_dict(), ckpt)
    ref = tib_features("PASTAExtractor", seeds, ckpt, tmp_path)
    ours = extract_features(seeds, enc, cache=False, progress=False)
    assert np.abs(ref).max() > 0
    compare(ours, ref, "pasta:tib")
