"""VoCo: every layout the authors' loader accepts loads audited, a file that matches nothing fails, recipes,
batch invariance, and TIB parity of voco-h:tib (slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from _layouts import audit_roundtrip, shrink
from _tib import RUN_REFERENCE, _run, compare, require_tib, write_volumes

from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.encoders.features import extract_features
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder

#: A few tensors of what VoCo's SSL network (VoCoHead) holds besides swinViT; ignored keys are not
#: shape-checked, so small stand-ins keep the files small.
_SSL_EXTRA = {
    "backbone.encoder1.layer.conv1.conv.weight": torch.zeros(48, 1, 3, 3, 3),
    "backbone.encoder10.layer.conv1.conv.weight": torch.zeros(4, 4, 1, 1, 1),
    "student.layer1.0.weight": torch.zeros(8, 16),
    "teacher.layer3.0.bias": torch.zeros(8),
}


def _ssl_head_ddp(sd, path):
    """Large-Scale-Medical voco_train.py checkpoint of a DistributedDataParallel VoCoHead."""
    state = {f"module.backbone.{k}": v for k, v in sd.items()}
    state.update({f"module.{k}": v for k, v in _SSL_EXTRA.items()})
    torch.save({"global_step": 100_000, "state_dict": state}, path)


def _ssl_head_final(sd, path):
    """voco_train.py final_model.pt: the bare VoCoHead state dict (backbone.* and the heads)."""
    torch.save({**{f"backbone.{k}": v for k, v in sd.items()}, **_SSL_EXTRA}, path)


def _swinunetr(sd, path):
    """A whole SwinUNETR state dict (VoComni, TIB's expectation), decoder included."""
    extra = {"encoder1.layer.conv1.conv.weight": torch.zeros(48, 1, 3, 3, 3), "decoder1.layer.conv1.conv.weight": torch.zeros(2, 2, 1, 1, 1), "out.conv.conv.weight": torch.zeros(2, 48, 1, 1, 1)}
    torch.save({"state_dict": {**sd, **extra}}, path)


def _old_swin_vit(sd, path):
    """Earlier SSL checkpoints: 'module.' and 'swin_vit' instead of 'swinViT' (VoCo README's fix-ups)."""
    torch.save({"net": {f"module.{k.replace('swinViT', 'swin_vit')}": v for k, v in sd.items()}}, path)


@pytest.mark.parametrize("write", [_ssl_head_ddp, _ssl_head_final, _swinunetr, _old_swin_vit])
def test_author_loader_layouts_load_audited(tmp_path, write):
    audit_roundtrip("voco-b", tmp_path, write, filename="VoCo_B_SSL_head.pt", patch_size=32)


def test_a_file_that_matches_nothing_fails_naming_the_keys(tmp_path):
    """The authors' loader and TIB's copy a tensor only where name and shape match and then pass strict
    loading trivially; a checkpoint of another network (here every key under 'student.swinViT.', as in the
    CVPR version's VoCoHead) would load nothing without a word. Here it is an error."""
    sd = get_encoder("voco-b-random-init", device="cpu").network.state_dict()
    torch.save({"state_dict": {f"student.{k}": v for k, v in sd.items()}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=rf"{len(sd)} missing key\(s\): swinViT\..*; {len(sd)} unexpected key\(s\): student\.swinViT\."):
        get_encoder("voco-b", weights=tmp_path / "other.pt", device="cpu")


def test_wrong_size_is_named(tmp_path):
    sd = get_encoder("voco-b-random-init", device="cpu").network.state_dict()
    torch.save({"state_dict": sd}, tmp_path / "b.pt")
    with pytest.raises(WeightsError, match=r"mis-shaped key\(s\): swinViT\."):
        get_encoder("voco-h", weights=tmp_path / "b.pt", device="cpu")


def test_patch_merging_is_the_one_voco_was_trained_with():
    """MONAI <= 1.4's 3D PatchMerging (VoCo: MONAI 1.3.0) concatenates sub-grids (0,1,0) and (0,0,1) twice and
    never (1,1,0) or (0,1,1); MONAI >= 1.5 takes all eight. Every stage must use the former."""
    from lesionbench.baselines.zoo._nets.voco import LegacyPatchMerging, VoCoTrunk

    net = VoCoTrunk(12)
    assert all(type(getattr(net.swinViT, f"layers{i}")[0].downsample) is LegacyPatchMerging for i in range(1, 5))
    merge = LegacyPatchMerging(dim=1)
    merge.norm, merge.reduction = torch.nn.Identity(), torch.nn.Identity()
    d, h, w = np.meshgrid(*(np.arange(2),) * 3, indexing="ij")
    x = torch.from_numpy((4 * d + 2 * h + w).astype(np.float32)).reshape(1, 2, 2, 2, 1)
    assert merge(x).flatten().tolist() == [0, 4, 2, 1, 5, 2, 1, 7]


def test_recipes_names_and_cards():
    official = get_encoder("voco-b-random-init", device="cpu")
    tib = get_encoder("voco-b-random-init", recipe="tib", device="cpu")
    assert (official.meta.name, tib.meta.name) == ("voco-b-random-init", "voco-b-random-init:tib")
    p, t = official.meta.patch, tib.meta.patch
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((64, 64, 64), (1.5, 1.5, 1.5), "RAS", "linear")
    assert (p.intensity.a_min, p.intensity.a_max, p.intensity.clip) == (-175.0, 250.0, True)
    assert (t.size, t.spacing_mm, t.orientation, t.interpolation) == ((64, 64, 64), (1.0, 1.0, 1.0), "RAS", "linear-align-corners")
    assert (t.intensity.a_min, t.intensity.a_max) == (-1024.0, 2048.0)
    assert (p.diagonal, t.diagonal) == (False, True)  # VoCo's Spacingd keeps the scanner's rotation; TIB's does not
    assert official.meta.fingerprint() != tib.meta.fingerprint()
    assert official.meta.feature_dim == 768 and dict(official.meta.card)["embedding"].startswith("768-d")
    assert dict(official.meta.card)["parameters"] == f"{sum(t.numel() for t in official.network.parameters()):,}"


def test_sides_not_divisible_by_32_are_refused():
    enc = shrink(get_encoder("voco-b-random-init", device="cpu"), 48)
    with pytest.raises(ValueError, match="divisible by 32"):
        enc.encode(np.zeros((1, 1, 48, 48, 48), dtype=np.float32))


def test_conformance_and_batch_invariance():
    check_encoder(shrink(get_encoder("voco-b-random-init", device="cpu", batch_size=2), 32), n=2)


@pytest.mark.slow
def test_official_size_forward_h():
    enc = get_encoder("voco-h-random-init", device="cpu", batch_size=1)
    f = enc.encode(np.random.default_rng(0).uniform(0, 1, (1, 1, 64, 64, 64)).astype(np.float32))
    assert f.shape == (1, 3072) and np.isfinite(f).all()


#: TIB's VocoExtractor, unmodified, in TIB's environment (MONAI 1.4), which cannot run it as installed:
#: SwinUNETR there still requires the deprecated ``img_size`` (only validated: sides divisible by 32) that
#: TIB's wrapper omits, and MONAI's Swin transformer needs ``einops``, which the environment lacks. The crop
#: size is supplied and a folder holding only this environment's einops (pure Python) is appended to
#: sys.path; nothing else changes.
_TIB_VOCO = """
import functools, runpy, sys
sys.path.append(sys.argv.pop(1))
ref = runpy.run_path(sys.argv[1])
ref["_torchvision_standin"]()
import monai.networks.nets as nets
nets.SwinUNETR = functools.partial(nets.SwinUNETR, img_size=(64, 64, 64))
sys.argv = sys.argv[1:]
ref["main"]()
"""


@pytest.mark.slow
def test_tib_recipe_matches_tumorimagingbench(tmp_path):
    """voco-h:tib against TIB's VocoExtractor (SwinUNETR-H, swinViT, last stage pooled) with the same random
    checkpoint, in the layout TIB's load() reads (a 'state_dict' of SwinUNETR keys)."""
    require_tib()
    seeds = write_volumes(tmp_path)
    enc = get_encoder("voco-h-random-init", recipe="tib", seed=3, device="cpu", batch_size=1)
    ckpt = tmp_path / "VoCo_H_SSL_head.pt"
    torch.save({"state_dict": enc.network.state_dict()}, ckpt)
    csv, out = tmp_path / "seeds.csv", tmp_path / "tib-voco.npy"
    seeds[["image_path", "coordX", "coordY", "coordZ"]].to_csv(csv, index=False)
    einops_only = tmp_path / "einops-only"
    einops_only.mkdir()
    (einops_only / "einops").symlink_to(Path(importlib.util.find_spec("einops").origin).parent)
    _run(["-c", _TIB_VOCO, str(einops_only), str(RUN_REFERENCE), "VocoExtractor", str(csv), str(ckpt), str(out)], "VocoExtractor")
    ref = np.load(out)
    ours = extract_features(seeds, enc, cache=False, progress=False)
    assert np.abs(ref).max() > 0
    compare(ours, ref, "voco-h:tib")
