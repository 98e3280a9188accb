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

from lesionbench.benchmark.encoders.feature_cache import FeatureCache, lesion_keys
from lesionbench.benchmark.encoders.features import extract_features
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


# ------------------------------------------------------------------------------ item 9: planted shards
def _cached_once(tmp_path):
    path = tmp_path / "ct.nii"
    _write(path, 100)
    enc = CentreMean()
    cache = tmp_path / "cache"
    genuine = extract_features(_table(path), enc, cache_dir=cache, progress=False)
    store = FeatureCache(cache, enc.meta)
    key = lesion_keys(_table(path), with_mask=False)[0][0]
    return path, enc, cache, store, key, genuine


def test_a_planted_shard_does_not_override_genuine_features(tmp_path, caplog):
    path, enc, cache, store, key, genuine = _cached_once(tmp_path)
    forged = np.full((1, 2), 7.0, dtype=np.float32)
    planted = store.dir / "shard-ffffffffffffffffffffffffffffffff.npz"  # sorts last: "last file name wins" before
    np.savez(planted, keys=np.asarray([key]), features=forged)
    with caplog.at_level(logging.WARNING, logger="lesionbench.benchmark.encoders.feature_cache"):
        again = extract_features(_table(path), enc, cache_dir=cache, progress=False)
    assert np.array_equal(again, genuine) and enc.encoded == 2  # recomputed, not taken from either shard
    assert "different features in two shards" in caplog.text
    # the conflict is resolved: the next run takes the recomputed features from the cache
    assert np.array_equal(extract_features(_table(path), enc, cache_dir=cache, progress=False), genuine) and enc.encoded == 2
    assert not planted.exists()


def test_identical_duplicates_from_an_interrupted_compaction_are_kept(tmp_path, caplog):
    path, enc, cache, store, key, genuine = _cached_once(tmp_path)
    assert store.load()[key].shape == (2,)
    store.put([key], genuine)
    with caplog.at_level(logging.WARNING, logger="lesionbench.benchmark.encoders.feature_cache"):
        assert np.array_equal(extract_features(_table(path), enc, cache_dir=cache, progress=False), genuine)
    assert enc.encoded == 1 and "different features" not in caplog.text


def test_a_cache_folder_others_can_write_is_not_used(tmp_path, caplog):
    path, enc, cache, store, _, genuine = _cached_once(tmp_path)
    os.chmod(store.dir, 0o777)
    with caplog.at_level(logging.WARNING, logger="lesionbench.benchmark.encoders.feature_cache"):
        again = extract_features(_table(path), enc, cache_dir=cache, progress=False)
    assert np.array_equal(again, genuine) and enc.encoded == 2
    assert "writable by others (mode 777)" in caplog.text and str(store.dir) in caplog.text
    os.chmod(store.dir, 0o700)
    extract_features(_table(path), enc, cache_dir=cache, progress=False)
    assert enc.encoded == 2  # trusted again: from the cache


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_shard_owned_by_another_user_is_ignored(tmp_path, caplog):
    path, enc, cache, store, _, _ = _cached_once(tmp_path)
    for shard in store.dir.glob("shard-*.npz"):
        os.chown(shard, 12345, -1)
    with caplog.at_level(logging.WARNING, logger="lesionbench.benchmark.encoders.feature_cache"):
        extract_features(_table(path), enc, cache_dir=cache, progress=False)
    assert enc.encoded == 2 and "owned by user id 12345" in caplog.text
