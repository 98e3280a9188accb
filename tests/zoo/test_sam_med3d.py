"""SAM-Med3D: the released training-checkpoint layout loads audited (argparse.Namespace allowed, nothing else),
the image encoder equals MedIM's tensor for tensor, the recipe, batch invariance.

The MedIM comparisons need MedIM's module (``pip install --no-deps --target /tmp/medim-ref medim==0.1.2
appdirs``, or ``LESIONBENCH_MEDIM_REF``); they skip without it. MedIM is imported from that folder only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from _layouts import audit_roundtrip

from lesionbench.baselines.zoo._nets.sam_med3d import ImageEncoderViT3D, ViT3DConfig
from lesionbench.benchmark.errors import ConfigurationError, WeightsError
from lesionbench.benchmark.encoders.features import load_patches
from lesionbench.benchmark.encoders.plugins import ENCODERS, get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder

MEDIM_REF = Path(os.environ.get("LESIONBENCH_MEDIM_REF", "/tmp/medim-ref"))
#: The released architecture in miniature: two blocks (one windowed with padding, one global).
TINY = ViT3DConfig(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, out_chans=12, window_size=3, global_attn_indexes=(1,))


def _release(sd, path):
    """SAM-Med3D train.py's checkpoint: the whole promptable model under model_state_dict, plus training state."""
    model = {f"image_encoder.{k}": v for k, v in sd.items()}
    model["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.zeros(3, 192)
    model["mask_decoder.iou_token.weight"] = torch.zeros(1, 384)
    torch.save(
        {
            "epoch": 200,
            "model_state_dict": model,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 8e-5, "params": [0, 1]}]},
            "lr_scheduler_state_dict": {"last_epoch": 200},
            "losses": [0.61, 0.42],
            "dices": [0.71, 0.83],
            "best_loss": 0.42,
            "best_dice": 0.83,
            "args": argparse.Namespace(model_type="vit_b_ori", img_size=128, lr=8e-5),
            "used_datas": ["AMOS", "TotalSegmentator"],
        },
        path,
    )


def test_released_layout_loads_audited(tmp_path):
    audit_roundtrip("sam-med3d", tmp_path, _release, filename="sam_med3d_turbo.pth", patch_size=None)


def test_only_the_allowed_classes_are_unpickled(tmp_path):
    torch.save({"model_state_dict": {}, "when": datetime.date(2024, 1, 1)}, tmp_path / "sam_med3d_turbo.pth")
    with pytest.raises(WeightsError, match=r"sam_med3d_turbo\.pth holds Python objects of \['datetime\.date'\].*argparse\.Namespace"):
        get_encoder("sam-med3d", weights=tmp_path / "sam_med3d_turbo.pth", device="cpu")


def test_recipe_card_and_no_tib_variant():
    enc = get_encoder("sam-med3d-random-init", device="cpu")
    p = enc.meta.patch
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((128, 128, 128), (1.5, 1.5, 1.5), "RAS", "linear")
    assert (p.intensity.kind, p.intensity.ddof, p.pad_before_intensity, p.pad_value) == ("zscore-positive", 1, True, 0.0)
    assert not p.diagonal  # tio.Resample keeps the scanner's rotation
    card = dict(enc.meta.card)
    assert card["embedding"].startswith("384-d") and card["parameters"] == f"{sum(t.numel() for t in enc.network.parameters()):,}"
    assert "sam-med3d:tib" not in ENCODERS.names()  # TIB wraps no SAM-Med3D model
    with pytest.raises(ConfigurationError, match="tib"):
        get_encoder("sam-med3d-random-init", recipe="tib", device="cpu")


def _torchio_znorm(volume: np.ndarray) -> np.ndarray:
    """torchio ZNormalization(masking_method=lambda x: x > 0): mean and unbiased std (torch.std) over the
    voxels > 0, applied to every voxel."""
    values = volume[volume > 0]
    return (volume - values.mean()) / values.std(ddof=1)


def test_official_patch_is_sam_med3ds_preprocessing_written_out_by_hand(tmp_path):
    """An axis-aligned 1.5 mm image: tio.Resample(1.5) is the identity and tio.ToCanonical flips ITK's x and
    y into RAS. The 128^3 crop around int() of the seed's RAS index is padded with 0 HU where it leaves the
    image (tio.CropOrPad), and only then z-normalised over the voxels > 0 (the padding excluded from the
    statistics but normalised like every voxel)."""
    rng = np.random.default_rng(4)
    vol = rng.integers(-1100, 1300, (90, 136, 140)).astype(np.int16)  # (z, y, x)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((1.5, 1.5, 1.5))
    image.SetOrigin((-101.0, 7.25, -600.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    x, y, z = image.TransformContinuousIndexToPhysicalPoint((70.4, 60.7, 44.2))
    seeds = pd.DataFrame([{"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z}])
    got = load_patches(seeds, get_encoder("sam-med3d-random-init", device="cpu").meta.patch, progress=False)[0, 0]
    ras = vol.transpose(2, 1, 0)[::-1, ::-1, :].astype(np.float64)  # R index = 139 - x, A = 135 - y
    # RAS seed (int(68.6), int(74.3), int(44.2)) = (68, 74, 44): R [4, 132), A [10, 138) -> [10, 136) (126 voxels),
    # S [-20, 108) -> [0, 90); centred in 128^3 with 0 HU: A offset (128 - 126) // 2 = 1, S (128 - 90) // 2 = 19
    hu = np.zeros((128, 128, 128))
    hu[:, 1:127, 19:109] = ras[4:132, 10:136, 0:90]
    np.testing.assert_allclose(got, _torchio_znorm(hu), rtol=0, atol=5e-6)


def test_other_input_sizes_are_refused():
    net = ImageEncoderViT3D(TINY)
    with pytest.raises(ValueError, match=r"\(n, 1, 32, 32, 32\)"):
        net(torch.zeros(1, 1, 48, 48, 48))


def test_conformance_and_batch_invariance():
    """The encoder wrapper around the released architecture in miniature (the full size takes ~20 s a patch)."""
    enc = get_encoder("sam-med3d-random-init", device="cpu", batch_size=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        enc.network = _randomised(ImageEncoderViT3D(TINY)).eval()
    enc.meta = dataclasses.replace(enc.meta, feature_dim=TINY.out_chans, patch=dataclasses.replace(enc.meta.patch, size=(32, 32, 32)))
    check_encoder(enc, n=2)


@pytest.mark.slow
def test_official_size_conformance():
    check_encoder(get_encoder("sam-med3d-random-init", device="cpu", batch_size=2), n=2)


def _randomised(net):
    """Non-zero position tables too (the release initialises them to zero, which would hide their use)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "pos" in name:
                p.normal_(0, 0.3)
    return net


def _medim():
    if not (MEDIM_REF / "medim" / "models" / "sam_med3d.py").is_file():
        pytest.skip(f"MedIM reference missing: pip install --no-deps --target {MEDIM_REF} medim==0.1.2 appdirs")
    sys.path.insert(0, str(MEDIM_REF))
    try:
        from medim.models.sam_med3d import ImageEncoderViT3D as Reference
    finally:
        sys.path.remove(str(MEDIM_REF))
    return Reference


def _compare_with_medim(cfg: ViT3DConfig, n: int) -> float:
    reference = _medim()(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, out_chans=cfg.out_chans, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True, window_size=cfg.window_size, global_attn_indexes=list(cfg.global_attn_indexes),
    )
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in reference.state_dict().items()}
    reference.load_state_dict(sd, strict=True)
    ours = ImageEncoderViT3D(cfg)
    ours.load_state_dict(sd, strict=True)  # the same names and shapes as MedIM's module
    x = torch.randn(n, 1, cfg.img_size, cfg.img_size, cfg.img_size, generator=g)
    with torch.no_grad():
        want = reference.eval()(x)
        got = ours.eval().feature_map(x)
    diff = float((want - got).abs().max())
    assert diff <= 1e-5 * float(want.abs().max()), diff
    return diff


def test_encoder_equals_medim_in_miniature():
    _compare_with_medim(TINY, n=2)


@pytest.mark.slow
def test_released_encoder_equals_medim():
    diff = _compare_with_medim(ViT3DConfig(), n=1)
    print(f"sam-med3d image encoder vs MedIM: max abs diff {diff:.3g}")
