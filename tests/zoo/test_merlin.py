"""Merlin: the released flat CLIP state dict loads audited, the trunk equals merlin-vlm's I3ResNet, the two
heads, recipes, batch invariance.

The comparison with merlin-vlm needs its source (``pip install --no-deps --target /tmp/merlin-ref
merlin-vlm==0.0.7``, or ``LESIONBENCH_MERLIN_REF``); it skips without it. Only ``merlin/models/i3res.py`` and
``inflate.py`` are imported from there (``merlin.models`` itself would import transformers and torchvision).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _layouts import audit_roundtrip, shrink
from torch import nn

from lesionbench.baselines.zoo._nets.merlin import LAYERS, MerlinI3ResNet
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder

MERLIN_REF = Path(os.environ.get("LESIONBENCH_MERLIN_REF", "/tmp/merlin-ref"))


def _release(sd, path):
    """Merlin's checkpoint: MerlinArchitecture.state_dict(), flat (image trunk, text encoder, logit scale)."""
    state = {f"encode_image.i3_resnet.{k}": v for k, v in sd.items()}
    state["encode_text.linear_layer.weight"] = torch.zeros(512, 768)
    state["encode_text.text_encoder.embeddings.word_embeddings.weight"] = torch.zeros(4, 768)
    state["logit_scale"] = torch.ones([])
    torch.save(state, path)


@pytest.mark.slow
def test_released_layout_loads_audited(tmp_path):
    audit_roundtrip("merlin", tmp_path, _release, filename="i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt", patch_size=32)


def test_released_layout_loads_every_trunk_and_head_tensor(tmp_path):
    control = get_encoder("merlin-random-init", seed=2, device="cpu")
    sd = control.network.state_dict()
    path = tmp_path / "merlin.pt"
    _release(sd, path)
    loaded = get_encoder("merlin:tib", weights=path, device="cpu")
    assert dict(loaded.meta.card)["tensors_loaded"] == str(len(sd))
    got = loaded.network.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_recipes_heads_and_cards():
    from lesionbench.baselines.zoo.merlin import MODEL

    p, t = MODEL.recipe("official").patch_spec(), MODEL.recipe("tib").patch_spec()
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation) == ((224, 224, 160), (1.5, 1.5, 3.0), "RAS", "linear")
    assert (p.intensity.a_min, p.intensity.a_max) == (-1000.0, 1000.0)
    assert (t.size, t.spacing_mm, t.orientation) == ((48, 48, 48), (1.0, 1.0, 1.0), "RAS") and (t.intensity.a_min, t.intensity.a_max) == (-1000.0, 1000.0)
    assert (MODEL.feature_dim("official"), MODEL.feature_dim("tib")) == (2048, 512)
    assert (p.diagonal, t.diagonal) == (False, True)  # Merlin's Spacingd keeps the scanner's rotation; TIB's does not
    tib = get_encoder("merlin-random-init", recipe="tib", device="cpu")
    assert tib.meta.name == "merlin-random-init:tib" and tib.meta.feature_dim == 512
    assert dict(tib.meta.card)["parameters"] == f"{sum(t.numel() for t in tib.network.parameters()):,}"
    z = shrink(tib, 16).encode(np.random.default_rng(0).uniform(0, 1, (2, 1, 16, 16, 16)).astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)  # TIB's output is L2-normalised


def test_conformance_and_batch_invariance():
    check_encoder(shrink(get_encoder("merlin-random-init", device="cpu", batch_size=2), 16), n=2)


def _reference_i3resnet(head: str):
    """merlin-vlm's I3ResNet, inflated from a stand-in for torchvision's resnet152 (same modules; no download)."""
    folder = MERLIN_REF / "merlin" / "models"
    if not (folder / "i3res.py").is_file():
        pytest.skip(f"merlin-vlm reference missing: pip install --no-deps --target {MERLIN_REF} merlin-vlm==0.0.7")
    saved = {k: sys.modules.get(k) for k in ("merlin", "merlin.models", "merlin.models.inflate")}
    try:
        sys.modules["merlin"] = types.ModuleType("merlin")
        sys.modules["merlin.models"] = pkg = types.ModuleType("merlin.models")
        mods = {}
        for name in ("inflate", "i3res"):
            spec = importlib.util.spec_from_file_location(f"merlin.models.{name}", folder / f"{name}.py")
            mods[name] = importlib.util.module_from_spec(spec)
            sys.modules[f"merlin.models.{name}"] = mods[name]
            setattr(pkg, name, mods[name])
            spec.loader.exec_module(mods[name])
        return mods["i3res"].I3ResNet(_resnet152_2d(), class_nb=1692, conv_class=True, ImageEmbedding=(head == "pool"))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _resnet152_2d():
    """torchvision's resnet152 module layout (v1.5 bottlenecks, no conv biases), randomly initialised."""

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or cin != planes * 4:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
            self.stride = stride

    net = types.SimpleNamespace(
        conv1=nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), bn1=nn.BatchNorm2d(64), maxpool=nn.MaxPool2d(3, 2, 1), avgpool=nn.AdaptiveAvgPool2d(1)
    )
    cin = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS)):
        layer = []
        for b in range(blocks):
            layer.append(Block(cin, planes, (1 if i == 0 else 2) if b == 0 else 1))
            cin = planes * 4
        setattr(net, f"layer{i + 1}", nn.Sequential(*layer))
    return net


@pytest.mark.slow  # ~40-90 s on 2 cores, and needs merlin-vlm's source outside the project
def test_trunk_equals_merlin_vlm_i3resnet():
    reference = _reference_i3resnet("pool").eval()
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v) for k, v in reference.state_dict().items()}
    sd = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in sd.items()}
    reference.load_state_dict(sd, strict=True)
    ours = MerlinI3ResNet(head="pool").eval()
    ours.load_state_dict(sd, strict=True)  # the release's module names and shapes
    x = torch.randn(2, 1, 20, 18, 16, generator=g)  # (n, 1, X, Y, Z), anisotropic to catch an axis mix-up
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x)[0], rtol=1e-5, atol=1e-6)  # ImageEmbedding: (1, n, 2048)
        reference.ImageEmbedding, ours.head = False, "contrastive"
        contrastive, _ = reference(x)  # MerlinArchitecture then L2-normalises the image features
        torch.testing.assert_close(ours(x), contrastive / contrastive.norm(dim=-1, keepdim=True), rtol=1e-5, atol=1e-6)
