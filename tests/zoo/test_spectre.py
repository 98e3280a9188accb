"""SPECTRE: the released flat backbone state dict loads audited, our ViT equals spectre-fm's on the same weights,
the official patch equals SPECTRE's own windowing, recipe and card, conformance.

The comparisons with spectre-fm need its source (``pip install --no-deps --target /tmp/spectre-ref
spectre-fm==0.2.1 timm``, or ``LESIONBENCH_SPECTRE_REF``); they skip without it. Upstream's network runs in a
subprocess (``_spectre_reference.py``) behind a stub of torchvision and loralib (imported by timm and
spectre.utils, unused by the backbone, not installed here): the stub never enters this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _layouts import audit_roundtrip, shrink

from lesionbench.baselines.zoo._nets.spectre import SpectreViT
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder

SPECTRE_REF = Path(os.environ.get("LESIONBENCH_SPECTRE_REF", "/tmp/spectre-ref"))
HERE = Path(__file__).parent


def _release(sd, path):
    """spectre_backbone_vit_large_patch16_128.pt: the bare VisionTransformer's state dict, as saved."""
    torch.save(sd, path)


@pytest.mark.slow  # 22 s here: five 1.35 GB checkpoints written and read in turn (one on disk at a time)
def test_released_layout_loads_audited(tmp_path):
    audit_roundtrip("spectre", tmp_path, _release, filename="spectre_backbone_vit_large_patch16_128.pt", patch_size=16)


def test_recipe_card_and_no_tib_variant():
    from lesionbench.baselines.zoo.spectre import MODEL
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    p = MODEL.recipe("official").patch_spec()
    assert (p.size, p.spacing_mm, p.orientation, p.interpolation, p.diagonal) == ((128, 128, 64), (0.5, 0.5, 1.0), "RAS", "linear", False)
    assert (p.intensity.kind, p.intensity.a_min, p.intensity.a_max, p.intensity.b_min, p.intensity.b_max, p.intensity.clip) == ("window", -1000.0, 1000.0, 0.0, 1.0, True)
    assert p.pad_value == 0.0 and not p.pad_before_intensity
    assert [r.name for r in MODEL.recipes] == ["official"] and "spectre:tib" not in ENCODERS.names()
    assert MODEL.feature_dim() == 2160 and MODEL.non_commercial
    w = MODEL.weights
    assert (w.repo_id, w.filename, w.containers, w.prefix, w.ignored) == ("cclaess/SPECTRE", "spectre_backbone_vit_large_patch16_128.pt", (), "", ())
    with torch.device("meta"):
        net = SpectreViT()
    assert MODEL.parameters == sum(t.numel() for t in net.parameters())


def test_embedding_is_class_token_and_mean_patch_token():
    torch.manual_seed(0)
    net = SpectreViT(depth=1).eval()
    x = torch.rand(2, 1, 32, 16, 16)  # a 2 x 1 x 2 token grid
    with torch.no_grad():
        t = net.tokens(x)
        assert t.shape == (2, 1 + 4, 1080)
        torch.testing.assert_close(net(x), torch.cat([t[:, 0], t[:, 1:].mean(1)], -1), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"multiples of \(16, 16, 8\)"):
        net(torch.rand(1, 1, 16, 16, 12))


def test_conformance_and_batch_invariance():
    check_encoder(shrink(get_encoder("spectre-random-init", device="cpu", batch_size=2), 16), n=2)


# ------------------------------------------------------------------------------- parity with spectre-fm
def _require_reference() -> None:
    if not (SPECTRE_REF / "spectre" / "models" / "vision_transformer.py").is_file() or not (SPECTRE_REF / "timm").is_dir():
        pytest.skip(f"spectre-fm reference missing: pip install --no-deps --target {SPECTRE_REF} spectre-fm==0.2.1 timm")


def _random_weights(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor random (norms, biases and layer scales too, so none of them is the identity), periods kept.
    The patch embedding and class token are small, so the first LayerNorm sees a variance near its eps: an eps of
    1e-6 instead of torch's 1e-5 (timm's ViT default, which upstream overrides) moves the embedding by ~1e-2."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if k == "rope.periods":
            sd[k] = v.clone()
        elif k in ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token"):
            sd[k] = 1e-4 * torch.randn(v.shape, generator=g)
        elif k.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
            sd[k] = 1.0 + 0.2 * torch.randn(v.shape, generator=g)
        else:
            sd[k] = 0.03 * torch.randn(v.shape, generator=g)
    return sd


def _reference(tmp_path: Path, sd: dict, x: np.ndarray, depth: int, repeats: int = 0) -> tuple[np.ndarray, list[float]]:
    torch.save(sd, tmp_path / "w.pt")
    np.save(tmp_path / "x.npy", x)
    cmd = [sys.executable, str(HERE / "_spectre_reference.py"), str(SPECTRE_REF), str(tmp_path / "w.pt"), str(tmp_path / "x.npy"), str(tmp_path / "z.npy"), str(depth), str(repeats)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    return np.load(tmp_path / "z.npy"), (json.loads(lines[-1])["seconds"] if lines else [])


def _parity(tmp_path: Path, depth: int) -> float:
    _require_reference()
    ours = SpectreViT(depth=depth).eval()
    sd = _random_weights(ours, seed=depth)
    ours.load_state_dict(sd, strict=True)  # the same names and shapes upstream's loader takes
    x = np.random.default_rng(depth).uniform(0, 1, (2, 1, 128, 128, 64)).astype(np.float32)
    x[1, :, :, :40] = 0.0  # a half-empty crop as well (air after windowing)
    ref, _ = _reference(tmp_path, sd, x, depth)
    with torch.no_grad():
        got = ours(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (2, 2160)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    return float(np.abs(got - ref).max())


@pytest.mark.slow  # 7 s here: timm's import in the subprocess and a 1025-token forward pass, two blocks
def test_vit_equals_spectre_fm_in_two_blocks(tmp_path):
    _parity(tmp_path, 2)


@pytest.mark.slow  # 23-28 s on 2 cores: two 338 M-parameter ViT-Ls on two 128x128x64 crops; max abs diff 0.0 here
def test_vit_large_equals_spectre_fm(tmp_path):
    _parity(tmp_path, 24)


# (name, ITK direction, spacing, size (i, j, k), seed (continuous ITK index)) of scans already on SPECTRE's
# (0.5, 0.5, 1.0) mm RAS grid once reoriented, so the recipe's resampling is the identity and spectre-fm's
# native-spacing path applies (its --spacing path calls MONAI's Spacing with an `affine=` keyword that MONAI
# 1.6.1, installed here, does not take: TypeError). Index i runs anterior (A), j superior (S),
# k left (R flipped).
_PERMUTED = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
_SCANS = (
    # RAS (160, 150, 80): upstream's one crop is RAS [16:144, 11:139, 8:72]; our crop starts at int(seed) - size // 2
    ("permuted", _PERMUTED, (0.5, 1.0, 0.5), (150, 80, 160), (75.3, 40.2, 159 - 80.3)),
    # RAS (130, 140, 50): S shorter than 64, padded with 7 + 7 windowed zeros upstream, centred here
    ("short", _PERMUTED, (0.5, 1.0, 0.5), (140, 50, 130), (70.6, 25.5, 129 - 65.4)),
)


@pytest.mark.slow  # ~6 s each: timm's import in the subprocess
@pytest.mark.parametrize("name,direction,spacing,size,seed", _SCANS, ids=[s[0] for s in _SCANS])
def test_official_patch_equals_spectre_fm_load_and_window(tmp_path, name, direction, spacing, size, seed):
    import pandas as pd
    import SimpleITK as sitk

    from lesionbench.baselines.zoo.spectre import MODEL
    from lesionbench.benchmark.encoders.features import load_patches

    _require_reference()
    if not (SPECTRE_REF / "nibabel").is_dir():
        pytest.skip(f"nibabel missing next to spectre-fm: pip install --no-deps --target {SPECTRE_REF} nibabel")
    vol = np.random.default_rng(3).integers(-1200, 1400, size[::-1]).astype(np.int16)  # beyond the window: clipping counts
    image = sitk.GetImageFromArray(vol)
    image.SetDirection(direction.flatten().tolist())
    image.SetSpacing(spacing)
    image.SetOrigin((12.5, -40.0, 300.25))
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(image, str(path))
    run = subprocess.run([sys.executable, str(HERE / "_spectre_reference.py"), "window", str(SPECTRE_REF), str(path), str(tmp_path / "w.npz")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ref = np.load(tmp_path / "w.npz")
    assert tuple(ref["grid"]) == (1, 1, 1) and ref["crops"].shape == (1, 1, 128, 128, 64)
    x, y, z = image.TransformContinuousIndexToPhysicalPoint(seed)
    seeds = pd.DataFrame([{"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z}])
    got = load_patches(seeds, MODEL.recipe("official").patch_spec(), progress=False)[0, 0]
    np.testing.assert_allclose(got, ref["crops"][0, 0], rtol=0, atol=1e-6)
