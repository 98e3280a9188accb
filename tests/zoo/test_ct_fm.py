"""CT-FM: both released weight layouts load audited, the recipes, batch invariance, and TIB parity (slow)."""

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


def test_hugging_face_safetensors_layout_loads_audited(tmp_path):
    from safetensors.torch import save_file

    audit_roundtrip("ct-fm", tmp_path, lambda sd, p: save_file({k: v.contiguous() for k, v in sd.items()}, str(p)), filename="model.safetensors")


def test_older_torch_layout_with_encoder_prefix_and_ignored_decoder(tmp_path):
    def write(sd, path):  # a SegResNetDS state dict: encoder.* plus the decoder's up_layers.*
        torch.save({**{f"encoder.{k}": v for k, v in sd.items()}, "up_layers.0.head.weight": torch.zeros(2, 32, 1, 1, 1)}, path)

    audit_roundtrip("ct-fm", tmp_path, write, filename="pretrained_segresnet.torch")


def test_a_key_without_the_prefix_in_a_prefixed_file_is_named(tmp_path):
    sd = get_encoder("ct-fm-random-init", device="cpu").network.state_dict()
    ckpt = {f"encoder.{k}": v for k, v in sd.items()}
    ckpt["conv_init.weight"] = ckpt.pop("encoder.conv_init.weight")
    torch.save(ckpt, tmp_path / "x.torch")
    with pytest.raises(WeightsError, match=r"conv_init\.weight"):
        get_encoder("ct-fm", weights=tmp_path / "x.torch", device="cpu")


def test_recipes_names_and_fingerprints():
    official = get_encoder("ct-fm-random-init", device="cpu")
    tib = get_encoder("ct-fm-random-init", recipe="tib", device="cpu")
    assert (official.meta.name, tib.meta.name) == ("ct-fm-random-init", "ct-fm-random-init:tib")
    assert official.meta.patch.size == (24, 128, 128) and official.meta.patch.orientation == "SPL"
    assert tib.meta.patch.size == (48, 48, 48) and tib.meta.patch.interpolation == "linear-align-corners"
    assert official.meta.fingerprint() != tib.meta.fingerprint()
    card = dict(tib.meta.card)
    assert card["non_commercial"] == "no" and card["embedding"].startswith("512-d")


def test_conformance_and_batch_invariance():
    enc = shrink(get_encoder("ct-fm-random-init", recipe="tib", device="cpu", batch_size=2))
    check_encoder(enc, n=2)


@pytest.mark.slow
def test_official_size_forward():
    enc = get_encoder("ct-fm-random-init", device="cpu", batch_size=1)
    check_encoder(enc, n=1)


@pytest.mark.slow
def test_tib_recipe_matches_tumorimagingbench(tmp_path):
    require_tib()
    seeds = write_volumes(tmp_path)
    enc = get_encoder("ct-fm-random-init", recipe="tib", seed=3, device="cpu", batch_size=2)
    # TIB's CTFMExtractor.load: torch.load, 'encoder.' stripped, strict=False (decoder keys only logged)
    ckpt = tmp_path / "pretrained_segresnet.torch"
    torch.save({f"encoder.{k}": v for k, v in enc.network.state_dict().items()}, ckpt)
    ref = tib_features("CTFMExtractor", seeds, ckpt, tmp_path)
    ours = extract_features(seeds, enc, cache=False, progress=False)
    assert np.abs(ref).max() > 0
    compare(ours, ref, "ct-fm:tib")
