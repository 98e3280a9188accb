"""Issue 20 (Integrity II), image inputs: a truncated uncompressed image fails `validate` and extraction
(16), a FIFO or device as an image or table path is refused at once (21, 23)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.errors import ImageError, ManifestError
from lesionbench.benchmark.data.reading import read_image
from lesionbench.cli import main


def _image(path: Path) -> Path:
    arr = (np.arange(20 * 30 * 30) % 997).astype(np.int16).reshape(20, 30, 30)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path), False)
    return path


def _manifest(tmp_path: Path, image: Path) -> Path:
    rows = [{"lesion_id": f"L{i}", "patient_id": f"P{i}", "image_path": str(image), "coordX": 15.0, "coordY": 15.0, "coordZ": 20.0,
             "split": s, "label": i % 2} for i, s in enumerate(["train", "train", "val", "test"])]  # fmt: skip
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _truncate(path: Path, by: int = 3000) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - by)


@pytest.mark.parametrize("suffix", [".nii", ".mha", ".nrrd", ".mhd", ".nhdr"])
def test_truncated_uncompressed_image_is_refused_by_read_and_validate(tmp_path, suffix, capsys):
    path = _image(tmp_path / f"ct{suffix}")
    _truncate(tmp_path / "ct.raw" if suffix in (".mhd", ".nhdr") else path)
    with pytest.raises(ImageError, match=r"truncated: \d+ bytes, where the header of ct\S* needs \d+"):
        read_image(path)
    assert main(["-q", "validate", str(_manifest(tmp_path, path))]) == 2
    err = capsys.readouterr().err
    assert "3000 bytes are missing" in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_truncated_nii_gives_no_features(tmp_path, capsys):
    path = _image(tmp_path / "ct.nii")
    _truncate(path)
    table = tmp_path / "seeds.csv"
    pd.DataFrame([{"image_path": str(path), "coordX": 15.0, "coordY": 15.0, "coordZ": 38.0}]).to_csv(table, index=False)
    out = tmp_path / "feats.csv"
    assert main(["-q", "extract", str(table), "--encoder", "example-intensity-histogram", "-o", str(out)]) == 2
    assert "truncated" in capsys.readouterr().err and not out.exists()


def test_whole_images_still_read(tmp_path):
    for suffix in (".nii", ".mha", ".nrrd", ".mhd", ".nhdr"):
        assert read_image(_image(tmp_path / f"ok{suffix}")).GetSize() == (30, 30, 20)


def _returns_within(fn, seconds: float):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s"
    return box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_as_image_path_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "ct.nii"
    os.mkfifo(fifo)
    box = _returns_within(lambda: read_image(fifo), 20)
    assert isinstance(box.get("error"), ImageError) and "not a regular file" in str(box["error"])
    box = _returns_within(lambda: main(["-q", "validate", str(_manifest(tmp_path, fifo))]), 20)
    assert box.get("value") == 2
    err = capsys.readouterr().err
    assert "not a regular file" in err and "not found" not in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_as_manifest_is_refused_without_blocking(tmp_path):
    from lesionbench.benchmark.data.manifest import read_table

    fifo = tmp_path / "manifest.csv"
    os.mkfifo(fifo)
    box = _returns_within(lambda: read_table(fifo), 20)
    assert isinstance(box.get("error"), ManifestError) and "not a regular file" in str(box["error"])


def test_a_compressed_image_declaring_huge_voxels_is_refused_before_decoding(tmp_path, monkeypatch):
    """A .nii.gz of a few kB whose header declares 4000^3 int16 voxels (119 GiB): refused from its header."""
    import gzip
    import struct

    small = _image(tmp_path / "small.nii")
    head = bytearray(small.read_bytes()[:352])
    head[40:56] = struct.pack("<8h", 3, 4000, 4000, 4000, 1, 1, 1, 1)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(bytes(head) + bytes(1 << 20)))
    assert bomb.stat().st_size < 10_000
    box = _returns_within(lambda: read_image(bomb), 20)
    assert isinstance(box.get("error"), ImageError) and "declares 119.2 GiB of voxels" in str(box["error"])
    from lesionbench.benchmark.data.manifest import _header_problem

    assert "declares 119.2 GiB of voxels" in _header_problem(bomb)[0]  # validate says so too, from the header
    monkeypatch.setenv("LESIONBENCH_MAX_IMAGE_BYTES", "1000")
    with pytest.raises(ImageError, match="LESIONBENCH_MAX_IMAGE_BYTES raises the bound"):
        read_image(_image(tmp_path / "ok.nii"))
