"""Issue 20 (Integrity II), weights: the digest is of the bytes deserialised (13), integer or bool tensors
for floating-point parameters are refused (19), a compressed checkpoint bomb and a FIFO are refused before
anything is allocated or blocks (21, 23)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lesionbench.benchmark.encoders import weights  # noqa: E402
from lesionbench.benchmark.errors import WeightsError  # noqa: E402


def _save(obj, path: Path) -> bytes:
    torch.save(obj, path)
    return path.read_bytes()


def test_digest_is_of_the_bytes_deserialised_even_if_the_file_is_rewritten_in_place(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    a = _save({"w": torch.full((64,), 1.0)}, path)
    b_path = tmp_path / "b.pt"
    b = _save({"w": torch.full((64,), 2.0)}, b_path)
    assert len(a) == len(b)
    real = weights._torch_load

    def rewrite_then_load(f, source, hint):
        with open(path, "r+b") as out:  # in place: same inode, same size
            out.write(b)
        return real(f, source, hint)

    monkeypatch.setattr(weights, "_torch_load", rewrite_then_load)
    ckpt, digest = weights.read_checkpoint(path)
    # the digest names checkpoint A, so the tensors must be A's
    assert digest == hashlib.sha256(a).hexdigest()
    assert float(ckpt["w"][0]) == 1.0


def test_integer_and_bool_tensors_for_float_parameters_are_named():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["0.weight"] = sd["0.weight"].to(torch.int8)
    sd["1.bias"] = sd["1.bias"].to(torch.bool)
    problems = weights.key_problems(net.state_dict(), sd)
    text = " ".join(problems)
    assert "0.weight int8 (expected float32)" in text
    assert "1.bias bool (expected float32)" in text
    # the BatchNorm's integer counter stays integer: no problem for it
    assert "num_batches_tracked" not in text


def test_zoo_audit_refuses_int8_weights():
    from lesionbench.baselines.zoo._load import audit

    net = torch.nn.Linear(4, 3)
    sd = {k: v.to(torch.int8) for k, v in net.state_dict().items()}
    with pytest.raises(WeightsError, match=r"weight int8 \(expected float32\)"):
        audit(net, sd, source="w.pt", model="toy")


def _deflated_copy(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def test_compressed_checkpoint_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.pt"
    big = _save({"w": torch.zeros(8 * 2**20 // 4)}, tmp_path / "big.pt")  # 8 MiB of zeros
    bomb = _deflated_copy(big)
    assert len(bomb) < len(big) // 50
    path.write_bytes(bomb)
    with pytest.raises(WeightsError, match="compressed record"):
        weights.read_checkpoint(path)
    # the genuine (stored) file still loads, with the digest of its bytes
    ckpt, digest = weights.read_checkpoint(tmp_path / "big.pt")
    assert ckpt["w"].numel() == 2 * 2**20 and digest == hashlib.sha256(big).hexdigest()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_as_weights_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "w.pt"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="not a regular file"):
        weights.read_checkpoint(fifo)
