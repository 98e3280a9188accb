"""Issue 20 (Integrity II), the feature cache: its key changes with an image's content (14), and a shard
dropped into the cache can neither override genuine features nor be trusted from a folder others can
write (9)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.feature_cache import FeatureCache, lesion_keys
from lesionbench.benchmark.features import extract_features
from lesionbench.benchmark.types import EncoderMeta, PatchSpec


class CentreMean:
    """A cheap deterministic patch encoder: mean and centre value of each patch; counts what it encodes."""

    def __init__(self):
        self.meta = EncoderMeta(name="centre-mean", version="1", feature_dim=2, patch=PatchSpec())
        self.batch_size = 8
        self.encoded = 0

    def encode(self, patches: np.ndarray) -> np.ndarray:
        self.encoded += len(patches)
        return np.stack([patches[:, 0].mean((1, 2, 3)), patches[:, 0, 25, 25, 25]], axis=1).astype(np.float32)


def _write(path, value: int) -> None:
    arr = np.full((20, 30, 30), value, dtype=np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path))


def _table(path) -> pd.DataFrame:
    return pd.DataFrame([{"lesion_id": "L1", "image_path": str(path), "coordX": 15.0, "coordY": 15.0, "coordZ": 20.0}])


@pytest.mark.parametrize("suffix", [".nii", ".mhd"])
def test_image_rewritten_with_same_size_and_mtime_is_recomputed(tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    _write(path, 100)
    data = tmp_path / "ct.raw"
    enc = CentreMean()
    first = extract_features(_table(path), enc, cache_dir=tmp_path / "cache", progress=False)
    st = (data if suffix == ".mhd" else path).stat()
    size = st.st_size
    _write(path, -400)  # same size, other voxels (for .mhd: the .raw beside it is the one that changes)
    changed = data if suffix == ".mhd" else path
    assert changed.stat().st_size == size
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back, as cp -p / rsync -t do
    if suffix == ".mhd":
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    second = extract_features(_table(path), enc, cache_dir=tmp_path / "cache", progress=False)
    assert enc.encoded == 2, "the rewritten image must be encoded again"
    fresh = extract_features(_table(path), CentreMean(), cache=False, progress=False)
    assert np.array_equal(second, fresh) and not np.array_equal(first, second)


def test_dicom_folder_key_changes_when_one_slice_is_rewritten(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        (folder / f"{k}.dcm").write_bytes(bytes(100))
    df = _table(folder)
    before = lesion_keys(df, with_mask=False)[0][0]
    st = (folder / "0.dcm").stat()
    (folder / "0.dcm").write_bytes(bytes([1]) * 100)  # same size, same name
    os.utime(folder / "0.dcm", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lesion_keys(df, with_mask=False)[0][0] != before
