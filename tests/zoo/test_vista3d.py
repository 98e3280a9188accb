"""VISTA3D's image encoder: the released whole-model checkpoint loads audited, recipes, TIB parity (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _layouts import audit_roundtrip, shrink
from _tib import compare, require_tib, tib_features, write_volumes

from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.encoders.features import extract_features
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder

#: A few keys of the rest of vista3d132 (decoders, class and point heads): deliberately ignored.
OTHER = {
    "image_encoder.up_layers.0.head.weight": torch.zeros(2, 48, 1, 1, 1),
    "image_encoder.up_layers_auto.0.head.weight": torch.zeros(2, 48, 1, 1, 1),
    "class_head.mlp.0.weight": torch.zeros(4, 4),
    "point_head.mask_tokens.weight": torch.zeros(4, 4),
}


def _release(sd, path):
    torch.save({**{f"image_encoder.encoder.{k}": v for k, v in sd.items()}, **OTHER}, path)


def test_model_zoo_checkpoint_layout_loads_audited(tmp_path):
    audit_roundtrip("vista3d", tmp_path, _release, filename="model_vista3d.pt")


def test_an_unknown_non_encoder_key_is_an_error_not_ignored(tmp_path):
    sd = get_encoder("vista3d-random-init", device="cpu").network.state_dict()
    ckpt = {**{f"image_encoder.encoder.{k}": v for k, v in sd.items()}, "image_encoder.something_new.weight": torch.zeros(1)}
    torch.save(ckpt, tmp_path / "model_vista3d.pt")
    with pytest.raises(WeightsError, match=r"something_new"):
        get_encoder("vista3d", weights=tmp_path / "model_vista3d.pt", device="cpu")


def test_recipes_and_card():
    enc = get_encoder("vista3d-random-init", device="cpu")
    assert enc.meta.feature_dim == 768 and enc.meta.patch.size == (128, 128, 128) and enc.meta.patch.orientation == "RAS"
    assert dict(enc.meta.card)["non_commercial"] == "yes"
    assert get_encoder("vista3d-random-init", recipe="tib", device="cpu").meta.name == "vista3d-random-init:tib"


def test_conformance_and_batch_invariance():
    check_encoder(shrink(get_encoder("vista3d-random-init", recipe="tib", device="cpu", batch_size=2)), n=2)


@pytest.mark.slow
def test_tib_recipe_matches_tumorimagingbench(tmp_path):
    require_tib()
    seeds = write_volumes(tmp_path)
    enc = get_encoder("vista3d-random-init", recipe="tib", seed=5, device="cpu", batch_size=2)
    ckpt = tmp_path / "model_vista3d.pt"  # TIB: torch.load, 'image_encoder.encoder.' stripped, strict=False
    _release(enc.network.state_dict(), ckpt)
    ref = tib_features("VISTA3DExtractor", seeds, ckpt, tmp_path)
    ours = extract_features(seeds, enc, cache=False, progress=False)
    assert np.abs(ref).max() > 0
    compare(ours, ref, "vista3d:tib")
