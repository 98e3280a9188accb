"""SuPreM (UNet): the released Universal-Model layout loads audited, recipes, batch invariance, TIB parity (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _layouts import audit_roundtrip, shrink
from _tib import compare, require_tib, tib_features, write_volumes
from _unet_release import suprem_checkpoint

from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.features import extract_features
from lesionbench.benchmark.plugins import get_encoder
from lesionbench.benchmark.testing import check_encoder


def _released(sd: dict, path) -> None:
    """``supervised_suprem_unet_2100.pth``: {"net": {"module.backbone.<key>", "module.<head>"}, "epoch"}, with
    the backbone's decoder and the Universal Model's heads; ``sd`` replaces the encoder's tensors."""
    ckpt = suprem_checkpoint(seed=1)
    ckpt["net"] = {k: v for k, v in ckpt["net"].items() if not k.startswith("module.backbone.down_tr")}
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
