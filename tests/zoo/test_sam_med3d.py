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
import pytest
import torch
from _layouts import audit_roundtrip

from lesionbench.baselines._sam_med3d_net import ImageEncoderViT3D, ViT3DConfig
from lesionbench.benchmark.errors import ConfigurationError, WeightsError
from lesionbench.benchmark.plugins import get_encoder
from lesionbench.benchmark.testing import check_encoder

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
    with pytest.raises(WeightsError, match="sam_med3d_turbo.pth"):
        get_encoder("sam-med3d", weights=tmp_path / "sam_med3d_turbo.pth", device="cpu")


def test_recipe_card_and_no_tib_variant():
    enc = get_encoder("sam-med3d-random-init", device="cpu")
    p = enc.meta.patch
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((128, 128, 128), (1.5, 1.5, 1.5), "RAS", "linear")
    assert (p.intensity.kind, p.intensity.ddof, p.pad_before_intensity, p.pad_value) == ("zscore-positive", 1, True, 0.0)
    card = dict(enc.meta.card)
    assert card["embedding"].startswith("384-d") and card["parameters"] == f"{sum(t.numel() for t in enc.network.parameters()):,}"
    with pytest.raises(ConfigurationError, match="tib"):
        get_encoder("sam-med3d-random-init", recipe="tib", device="cpu")


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
