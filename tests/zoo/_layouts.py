"""Load-audit proof any zoo encoder test can reuse: random weights written in a release's exact on-disk layout
load (and give the random-init encoder's features); one key removed, one added, one reshaped each fail
with the key named.

    from _layouts import audit_roundtrip
    def test_release_layout(tmp_path):
        audit_roundtrip("ct-fm", tmp_path, lambda sd, path: torch.save({"encoder." + k: v for k, v in sd.items()}, path),
                        filename="pretrained_segresnet.torch")
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.encoders.plugins import get_encoder

#: Patch side used to compare features in fast tests (instance norm needs more than one voxel at the deepest level).
SMALL = 32


def shrink(encoder: Any, size: int = SMALL) -> Any:
    """The encoder with a small patch size: cheap check_encoder / feature comparisons on CPU."""
    encoder.meta = dataclasses.replace(encoder.meta, patch=dataclasses.replace(encoder.meta.patch, size=(size, size, size)))
    return encoder


def small_patches(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, SMALL, SMALL, SMALL)).astype(np.float32)


def audit_roundtrip(
    name: str,
    folder: Path,
    write: Callable[[dict[str, Any], Path], None],
    *,
    filename: str,
    reshape_key: str | None = None,
    patch_size: int | None = SMALL,
    **options: Any,
) -> None:
    """``write(state_dict, path)`` saves the network's own state dict in the release's layout. The loaded
    encoder's features are compared with the control's at ``patch_size``^3 (None: its tensors instead)."""
    folder = Path(folder)
    control = get_encoder(f"{name}-random-init", seed=7, device="cpu", **options)
    sd = {k: v.clone() for k, v in control.network.state_dict().items()}

    written: list[Path] = []

    def saved(tag: str, state: dict[str, Any]) -> Path:
        """One checkpoint on disk at a time: full-size releases are hundreds of MB each."""
        for old in written:
            old.unlink(missing_ok=True)
        (folder / tag).mkdir(parents=True, exist_ok=True)
        path = folder / tag / filename
        write(state, path)
        written.append(path)
        return path

    loaded = get_encoder(name, weights=saved("ok", sd), device="cpu", **options)
    card = dict(loaded.meta.card)
    assert card["tensors_loaded"] == str(len(sd)), card
    assert loaded.meta.weights_sha256 and not loaded.meta.weights_sha256.startswith("random")
    if patch_size is None:
        got = loaded.network.state_dict()
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    else:
        x = np.random.default_rng(0).uniform(0, 1, (2, 1, patch_size, patch_size, patch_size)).astype(np.float32)
        np.testing.assert_array_equal(shrink(loaded, patch_size).encode(x), shrink(control, patch_size).encode(x))

    removed = sorted(sd)[len(sd) // 2]
    bad = {k: v for k, v in sd.items() if k != removed}
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): " + re.escape(removed)):
        get_encoder(name, weights=saved("missing", bad), device="cpu", **options)

    bad = dict(sd)
    bad["zz_extra.weight"] = next(iter(sd.values())).clone()
    with pytest.raises(WeightsError, match=r"1 unexpected key\(s\): zz_extra\.weight"):
        get_encoder(name, weights=saved("unexpected", bad), device="cpu", **options)

    key = reshape_key or next(k for k, v in sd.items() if v.ndim >= 2)
    bad = dict(sd)
    bad[key] = sd[key].reshape(sd[key].shape[0], -1)[:, :1].clone()
    with pytest.raises(WeightsError, match=r"1 mis-shaped key\(s\): " + re.escape(key)):
        get_encoder(name, weights=saved("reshaped", bad), device="cpu", **options)

    bad = dict(sd)
    bad[key] = sd[key].clone()
    bad[key].view(-1)[0] = float("nan")
    with pytest.raises(WeightsError, match=r"NaN or infinite values: " + re.escape(key)):
        get_encoder(name, weights=saved("nan", bad), device="cpu", **options)
    written[-1].unlink()
