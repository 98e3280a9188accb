"""Feature extraction: index-addressed results, resumable cache, per-lesion errors, both encoder styles, CLI."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.errors import ImageError
from lesionbench.benchmark.encoders.features import extract_features
from lesionbench.benchmark.encoders.plugins import ENCODERS
from lesionbench.benchmark.encoders.testing import check_encoder
from lesionbench.benchmark.types import EncoderMeta, PatchSpec


class PatchStats:
    """A cheap deterministic patch encoder: a few statistics of the patch centre. Counts what it encodes."""

    def __init__(self, version: str = "1", batch_size: int = 3):
        self.meta = EncoderMeta(name="patch-stats", version=version, feature_dim=4, patch=PatchSpec())
        self.batch_size = batch_size
        self.encoded = 0
        self.fail_after: int | None = None

    def encode(self, patches: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and self.encoded + len(patches) > self.fail_after:
            raise KeyboardInterrupt  # a run killed midway
        self.encoded += len(patches)
        c = patches[:, 0, 20:30, 20:30, 20:30]
        return np.stack([c.mean((1, 2, 3)), c.std((1, 2, 3)), patches[:, 0].mean((1, 2, 3)), patches[:, 0, 25, 25, 25]], axis=1).astype(np.float32)


class ImageStats:
    """An image encoder (style b): mean HU in a ball of diameter_mm around each seed."""

    def __init__(self):
        self.meta = EncoderMeta(name="image-stats", version="1", feature_dim=2, patch=PatchSpec())

    def encode_lesions(self, image, lesions: pd.DataFrame) -> np.ndarray:
        arr = sitk.GetArrayViewFromImage(image)
        out = []
        for r in lesions.itertuples():
            idx = np.round(image.TransformPhysicalPointToContinuousIndex((r.coordX, r.coordY, r.coordZ))).astype(int)
            x, y, z = idx
            out.append([float(arr[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2].mean()), float(r.diameter_mm)])
        return np.asarray(out, dtype=np.float32)


def _cohort(tmp_path, n_images: int = 3, per_image: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_images):
        arr = rng.normal(-500, 200, (20 + 2 * i, 40, 44)).astype(np.int16)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.9, 0.8, 2.0))
        img.SetOrigin((10.0 * i, -20.0, 100.0))
        path = tmp_path / f"img{i}.nii.gz"
        sitk.WriteImage(img, str(path))
        for k in range(per_image):
            idx = (8 + 9 * k, 10 + 7 * k, 4 + 3 * k)
            pt = img.TransformIndexToPhysicalPoint(idx)
            rows.append({"lesion_id": f"P{i}L{k}", "image_path": str(path), "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2], "diameter_mm": 5.0 + k})
    return pd.DataFrame(rows)


def test_fake_encoders_pass_check_encoder():
    check_encoder(PatchStats())
    check_encoder(ImageStats())


def test_features_in_row_order_and_cached(tmp_path):
    df = _cohort(tmp_path)
    enc = PatchStats()
    f = extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False)
    assert f.shape == (9, 4) and f.dtype == np.float32 and enc.encoded == 9
    # row order: a shuffled manifest gives the shuffled features
    perm = np.random.default_rng(1).permutation(9)
    enc2 = PatchStats()
    g = extract_features(df.iloc[perm], enc2, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(g, f[perm])
    assert enc2.encoded == 0  # all from the cache
    # uncached extraction agrees
    np.testing.assert_allclose(extract_features(df, PatchStats(), cache=False, progress=False), f, rtol=1e-6)


def test_interrupted_run_resumes_with_missing_lesions_only(tmp_path):
    df = _cohort(tmp_path)
    enc = PatchStats(batch_size=2)
    enc.fail_after = 5  # dies in the third batch: four lesions are done and cached
    with pytest.raises(KeyboardInterrupt):
        extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False)
    assert enc.encoded == 4
    enc.fail_after = None
    enc.encoded = 0
    f = extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False)
    assert enc.encoded == 5
    np.testing.assert_allclose(f, extract_features(df, PatchStats(), cache=False, progress=False), rtol=1e-6)


def test_any_key_change_misses_the_cache(tmp_path):
    df = _cohort(tmp_path, n_images=2, per_image=2)
    cache = tmp_path / "cache"
    extract_features(df, PatchStats(), cache_dir=cache, progress=False)
    enc = PatchStats(version="2")  # encoder version (same for weights digest and settings: all in the fingerprint)
    extract_features(df, enc, cache_dir=cache, progress=False)
    assert enc.encoded == 4
    moved = df.copy()  # a seed point moves
    moved.loc[0, "coordX"] += 0.5
    enc = PatchStats()
    extract_features(moved, enc, cache_dir=cache, progress=False)
    assert enc.encoded == 1
    st = os.stat(df["image_path"][2])  # an image is rewritten (new mtime)
    os.utime(df["image_path"][2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    enc = PatchStats()
    extract_features(df, enc, cache_dir=cache, progress=False)
    assert enc.encoded == 2


def test_failed_lesions_reported_once_after_the_rest_is_cached(tmp_path):
    df = _cohort(tmp_path, n_images=2, per_image=2)
    bad = pd.DataFrame(
        [
            {"lesion_id": "gone", "image_path": str(tmp_path / "missing.nii.gz"), "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0, "diameter_mm": 5.0},
            {"lesion_id": "far", "image_path": df["image_path"][0], "coordX": 5000.0, "coordY": 0.0, "coordZ": 0.0, "diameter_mm": 5.0},
        ]
    )
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    broken = bad.iloc[:1].assign(lesion_id="broken", image_path=str(tmp_path / "broken.nii.gz"))
    full = pd.concat([df.iloc[:2], bad, df.iloc[2:], broken], ignore_index=True)
    enc = PatchStats()
    with pytest.raises(ImageError) as err:
        extract_features(full, enc, cache_dir=tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert "3 of 7 lesions failed (features for the other 4 are done and cached;" in msg
    assert "row 3 (lesion_id gone)" in msg and "missing.nii.gz" in msg and "not found" in msg
    assert "row 4 (lesion_id far)" in msg and "outside the image" in msg
    assert "row 7 (lesion_id broken)" in msg and "could not read image" in msg
    assert enc.encoded == 4
    enc2 = PatchStats()
    extract_features(df, enc2, cache_dir=tmp_path / "cache", progress=False)
    assert enc2.encoded == 0  # the good lesions were kept


@pytest.mark.parametrize("workers", [1, 2])
def test_image_encoder_style(tmp_path, workers):
    df = _cohort(tmp_path, n_images=3, per_image=2)
    f = extract_features(df, ImageStats(), cache_dir=tmp_path / "cache", workers=workers, progress=False)
    assert f.shape == (6, 2)
    np.testing.assert_array_equal(f[:, 1], df["diameter_mm"].to_numpy(np.float32))
    # the diameter is part of an image encoder's lesion key
    f2 = extract_features(df.assign(diameter_mm=df["diameter_mm"] + 1), ImageStats(), cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(f2[:, 1], f[:, 1] + 1)


def test_workers_give_the_same_patch_features(tmp_path):
    df = _cohort(tmp_path)
    a = extract_features(df, PatchStats(), cache=False, progress=False)
    b = extract_features(df, PatchStats(), cache=False, workers=2, progress=False)
    np.testing.assert_array_equal(a, b)


def _register_temporarily(monkeypatch, registry, name, factory):
    registry.names()  # load the built-ins and entry points first, so that the restored registry keeps them
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    monkeypatch.setattr(registry, "_origins", dict(registry._origins))
    registry.add(name, factory)


def test_cli_extract_is_a_get_features_drop_in(tmp_path, monkeypatch, capsys):
    from lesionbench.cli import main

    df = _cohort(tmp_path, n_images=2, per_image=2)
    table = df[["image_path", "coordX", "coordY", "coordZ", "lesion_id"]].copy()
    table["image_path"] = [os.path.basename(p) for p in table["image_path"]]  # relative to the CSV
    table.to_csv(tmp_path / "seeds.csv", index=False)
    _register_temporarily(monkeypatch, ENCODERS, "patch-stats-test", PatchStats)
    monkeypatch.chdir("/")
    for out in ("out.csv", "out.parquet"):
        assert main(["extract", str(tmp_path / "seeds.csv"), "--encoder", "patch-stats-test", "-o", str(tmp_path / out)]) == 0
        res = pd.read_csv(tmp_path / out) if out.endswith(".csv") else pd.read_parquet(tmp_path / out)
        assert list(res.columns) == list(table.columns) + [f"pred_{i}" for i in range(4)]
        assert list(res["image_path"]) == list(table["image_path"])
        np.testing.assert_allclose(res[[f"pred_{i}" for i in range(4)]].to_numpy(), extract_features(df, PatchStats(), cache=False, progress=False), rtol=1e-6)
    assert main(["extract", str(tmp_path / "seeds.csv"), "--encoder", "patch-stats-tst", "-o", str(tmp_path / "x.csv")]) == 2
    # an output fed back as input would carry its features twice: one clear error, no half-written file
    assert main(["extract", str(tmp_path / "out.csv"), "--encoder", "patch-stats-test", "--no-cache", "-o", str(tmp_path / "again.parquet")]) == 2
    assert "already has feature column(s) ['pred_0'" in capsys.readouterr().err and not (tmp_path / "again.parquet").exists()


def test_cli_extract_skip_failed_writes_the_rest_and_says_why(tmp_path, monkeypatch, capsys, caplog):
    from lesionbench.cli import main

    df = _cohort(tmp_path, n_images=2, per_image=2)
    table = df[["image_path", "coordX", "coordY", "coordZ", "lesion_id"]].copy()
    table.loc[1, "coordX"] = 5000.0  # outside its image
    table.loc[3, "image_path"] = str(tmp_path / "gone.nii.gz")
    table.to_csv(tmp_path / "seeds.csv", index=False)
    _register_temporarily(monkeypatch, ENCODERS, "patch-stats-test", PatchStats)
    out = tmp_path / "feats.parquet"
    args = ["-q", "extract", str(tmp_path / "seeds.csv"), "--encoder", "patch-stats-test", "--no-cache", "-o", str(out)]
    assert main(args) == 2 and not out.exists()  # by default: one error, nothing written
    assert "2 of 4 lesions failed" in capsys.readouterr().err
    with caplog.at_level("WARNING", logger="lesionbench"):
        assert main([*args, "--skip-failed"]) == 0
    assert "2 of 4 lesions failed; their features are NaN" in caplog.text
    res = pd.read_parquet(out)
    feats = res[[f"pred_{i}" for i in range(4)]].to_numpy()
    assert list(res["lesion_id"]) == list(table["lesion_id"]) and np.isnan(feats[[1, 3]]).all() and np.isfinite(feats[[0, 2]]).all()
    good = extract_features(df.iloc[[0, 2]], PatchStats(), cache=False, progress=False)
    np.testing.assert_allclose(feats[[0, 2]], good, rtol=1e-6)
    errors = pd.read_csv(tmp_path / "feats.parquet.errors.csv")
    assert list(errors["row"]) == [2, 4] and list(errors["lesion_id"]) == ["P0L1", "P1L1"]
    assert "outside the image" in errors["reason"][0] and "not found" in errors["reason"][1]
    table.iloc[[0, 2]].to_csv(tmp_path / "seeds.csv", index=False)  # fixed: the stale errors file goes
    assert main([*args, "--skip-failed"]) == 0 and not (tmp_path / "feats.parquet.errors.csv").exists()


def test_cli_extract_task(tmp_path, monkeypatch):
    from lesionbench.benchmark.data.manifest import ManifestTask
    from lesionbench.benchmark.encoders.plugins import TASKS
    from lesionbench.benchmark.types import TaskKind, TaskMeta
    from lesionbench.cli import main

    class Tiny(ManifestTask):
        meta = TaskMeta(name="tiny-extract", version="1", kind=TaskKind.BINARY, description="t", main_metric="auc", metrics=("auc",))

    df = _cohort(tmp_path, n_images=2, per_image=2)
    df.assign(patient_id=["a", "a", "b", "b"], split=["train", "test"] * 2, label=[0, 1, 0, 1]).to_csv(tmp_path / "manifest.csv", index=False)
    _register_temporarily(monkeypatch, TASKS, "tiny-extract", Tiny)
    _register_temporarily(monkeypatch, ENCODERS, "patch-stats-test", PatchStats)
    out = tmp_path / "task.parquet"
    assert main(["extract", "--task", "tiny-extract", "--data-dir", str(tmp_path), "--encoder", "patch-stats-test", "-o", str(out)]) == 0
    res = pd.read_parquet(out)
    assert list(res["lesion_id"]) == list(df["lesion_id"]) and res.columns[-1] == "pred_3"
    np.testing.assert_allclose(res[[f"pred_{i}" for i in range(4)]].to_numpy(), extract_features(df, PatchStats(), cache=False, progress=False), rtol=1e-6)


def test_truncated_gz_image_is_an_error_not_zero_filled(tmp_path):
    # SimpleITK reads a truncated .nii.gz without error and fills the rest with zeros
    from lesionbench.benchmark.encoders.features import read_image

    arr = np.random.default_rng(1).normal(-500, 200, (30, 40, 44)).astype(np.int16)
    whole = tmp_path / "whole.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(whole), True)
    raw = whole.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    assert read_image(whole).GetSize() == (44, 40, 30)
    with pytest.raises(ImageError, match=r"cut\.nii\.gz is truncated or corrupt.*Re-download"):
        read_image(cut)


def test_unreadable_images_say_why(tmp_path):
    from lesionbench.benchmark.encoders.features import read_image

    text = tmp_path / "text.nii.gz"
    text.write_text("hello\n")
    with pytest.raises(ImageError) as err:
        read_image(text)
    msg = str(err.value)
    assert "Unable to determine ImageIO reader" in msg and "text.nii.gz" in msg
    assert "Exception thrown in SimpleITK" not in msg and ".cxx" not in msg  # no C++ source locations
    img = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    sitk.WriteImage(img, str(tmp_path / "vol.mhd"))
    (tmp_path / "vol.raw").unlink()
    with pytest.raises(ImageError, match=r"voxel data file .*vol\.raw named by vol\.mhd \(ElementDataFile\) is missing"):
        read_image(tmp_path / "vol.mhd")


def test_image_encoder_refusing_one_lesion_fails_only_that_row(tmp_path):
    # encode_lesions gets all lesions of an image and raises for the group (radiomics does for one bad
    # mask or seed); the harness must not blame the image's other lesions
    class PickyImageStats(ImageStats):
        def encode_lesions(self, image, lesions):
            bad = lesions.loc[lesions["diameter_mm"] > 100, "lesion_id"].tolist()
            if bad:
                raise ImageError(f"lesion {bad[0]!r}: mask unreadable")
            return super().encode_lesions(image, lesions)

    df = _cohort(tmp_path, n_images=2, per_image=3)
    df.loc[1, "diameter_mm"] = 500.0
    with pytest.raises(ImageError) as err:
        extract_features(df, PickyImageStats(), cache_dir=tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert "1 of 6 lesions failed" in msg and "row 2 (lesion_id P0L1)" in msg and "mask unreadable" in msg
    assert "row 1 " not in msg and "row 3 " not in msg
    ok = df.drop(index=1)
    assert np.isfinite(extract_features(ok, PickyImageStats(), cache_dir=tmp_path / "cache", progress=False)).all()


def test_damaged_cache_shard_is_recomputed_not_a_crash(tmp_path, caplog):
    df = _cohort(tmp_path, n_images=1, per_image=2)
    first = extract_features(df, PatchStats(), cache_dir=tmp_path / "cache", progress=False)
    shard = next((tmp_path / "cache").rglob("shard-*.npz"))
    shard.write_bytes(shard.read_bytes()[:100])  # e.g. a disk that filled up
    enc = PatchStats()
    again = extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again, first)
    assert enc.encoded == 2 and "Ignoring unreadable feature cache shard" in caplog.text


def test_failure_message_does_not_claim_a_cache_that_was_off(tmp_path):
    df = _cohort(tmp_path, n_images=1, per_image=2)
    df.loc[1, "coordX"] = 5000.0
    with pytest.raises(ImageError, match=r"1 of 2 lesions failed \(features for the other 1 are done; fix these rows"):
        extract_features(df, PatchStats(), cache=False, progress=False)


def test_image_prefetcher_reads_ahead_in_order_bounded(tmp_path):
    import time

    from lesionbench.benchmark.encoders.features import ImagePrefetcher, read_image

    df = _cohort(tmp_path, n_images=4, per_image=1)
    paths = list(df["image_path"])
    missing = str(tmp_path / "missing.nii.gz")
    with ImagePrefetcher([paths[0], missing, *paths[1:]], ahead=1, max_bytes=0) as pre:
        time.sleep(0.5)
        assert len(pre._ready) <= 1  # bounded: never more than `ahead` images waiting without a byte budget
        a = pre.get(paths[0])
        assert sitk.GetArrayFromImage(a).tolist() == sitk.GetArrayFromImage(read_image(paths[0])).tolist()
        with pytest.raises(ImageError, match="not found"):
            pre.get(missing)  # a failed read reaches the caller, for that path only
        pre.retain([paths[1], paths[3]])  # paths[2] is no longer needed
        assert pre.get(paths[3]).GetSize() == read_image(paths[3]).GetSize()  # skipping paths[1] releases it
        assert pre.get(paths[1]).GetSize() == read_image(paths[1]).GetSize()  # no longer planned: read on the spot
        assert not pre._ready
    with pytest.raises(Exception, match="ahead"):
        ImagePrefetcher(paths, ahead=0)


def test_image_prefetcher_reads_several_images_at_start_up_then_one_ahead(tmp_path):
    import time

    from lesionbench.benchmark.encoders.features import ImagePrefetcher, _image_bytes, read_image

    df = _cohort(tmp_path, n_images=5, per_image=1)
    paths = list(df["image_path"])
    size = [_image_bytes(read_image(p)) for p in paths]  # growing: 20, 22, 24, ... slices
    # start-up room for the first two images: a third is read, then the budget is spent and the rest wait
    with ImagePrefetcher(paths, max_bytes=size[0] + size[1] + 1) as pre:

        def settle(expected):
            deadline = time.monotonic() + 10
            while list(pre._ready) != expected and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # nothing more arrives
            assert list(pre._ready) == expected

        settle(paths[:3])
        pre.get(paths[0])
        settle(paths[1:3])  # consuming: no more start-up budget, one image ahead (two already wait)
        pre.get(paths[1])
        settle(paths[2:3])
        pre.get(paths[2])
        settle(paths[3:4])  # one ahead again
    with pytest.raises(Exception, match="max_bytes"):
        ImagePrefetcher(paths, max_bytes=-1)


def test_extract_with_a_prefetcher_started_before_the_encoder(tmp_path):
    from lesionbench.benchmark.encoders.features import ImagePrefetcher

    df = _cohort(tmp_path)
    ref = extract_features(df, PatchStats(), cache=False, progress=False)
    with ImagePrefetcher(df["image_path"]) as pre:
        f = extract_features(df, PatchStats(), cache_dir=tmp_path / "cache", progress=False, images=pre)
    np.testing.assert_array_equal(f, ref)
    # everything cached: the prefetcher's plan is emptied, nothing is encoded
    enc = PatchStats()
    with ImagePrefetcher(df["image_path"]) as pre:
        g = extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False, images=pre)
        assert not pre._planned and not pre._ready
    assert enc.encoded == 0
    np.testing.assert_array_equal(g, ref)


def _chosen(feats: np.ndarray) -> np.ndarray:
    """A fixed, content-dependent choice of about half the lesions."""
    return np.floor(np.abs(feats[:, 0]) * 1e3) % 2 == 0


class NaNOnSome(PatchStats):
    """PatchStats, but one NaN (or inf) feature for the lesions :func:`_chosen` picks."""

    def __init__(self, bad_rows_value: float = float("nan")):
        super().__init__(version="nan")
        self.value = bad_rows_value

    def encode(self, patches: np.ndarray) -> np.ndarray:
        out = super().encode(patches)
        out[_chosen(out), 1] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_features_fail_their_lesions_by_name_and_are_never_cached(tmp_path, value):
    from lesionbench.benchmark.encoders.features import FeatureCache, FeatureError

    df = _cohort(tmp_path)
    n_bad = int(_chosen(extract_features(df, PatchStats(), cache=False, progress=False)).sum())
    assert 0 < n_bad < 9
    enc = NaNOnSome(value)
    with pytest.raises(FeatureError, match=r"lesions failed .* got NaN or infinite features") as err:
        extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False)
    msg = str(err.value)
    bad = [line for line in msg.splitlines() if "NaN or infinite features: 1 of 4 values from encoder 'patch-stats'" in line]
    assert len(bad) == n_bad and all("lesion_id P" in line and ".nii.gz" in line for line in bad)  # each named, with its file
    cached = FeatureCache(tmp_path / "cache", enc.meta).load()
    assert len(cached) == 9 - n_bad and all(np.isfinite(v).all() for v in cached.values())  # only the finite ones
    failed: dict[int, str] = {}
    f = extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False, failed=failed)
    assert len(failed) == n_bad and np.isnan(f[sorted(failed)]).all() and np.isfinite(np.delete(f, sorted(failed), axis=0)).all()


def test_non_finite_features_in_an_old_cache_are_recomputed(tmp_path, caplog):
    from lesionbench.benchmark.encoders.features import FeatureCache, lesion_keys

    df = _cohort(tmp_path, n_images=1, per_image=3)
    enc = PatchStats()
    keys, _ = lesion_keys(df, with_mask=False)
    FeatureCache(tmp_path / "cache", enc.meta).put(keys, np.full((3, 4), np.nan, np.float32))  # as older versions cached them
    with caplog.at_level("WARNING"):
        f = extract_features(df, enc, cache_dir=tmp_path / "cache", progress=False)
    assert np.isfinite(f).all() and enc.encoded == 3 and "Ignoring 3 lesions with NaN or infinite features" in caplog.text


def test_feature_table_is_written_atomically(tmp_path, monkeypatch):
    """A write that dies midway (disk full) leaves the earlier output, and no temporary file."""
    import pyarrow.parquet as pq

    from lesionbench.benchmark.encoders import features as fx

    def half_then_die(where) -> None:
        with open(where, "wb") as f:
            f.write(b"half a table")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, where, **k: half_then_die(where))
    monkeypatch.setattr(pq, "write_table", lambda table, where, **k: half_then_die(where))
    table = pd.DataFrame({"image_path": ["a"], "coordX": [0.0], "coordY": [0.0], "coordZ": [0.0]})
    for name in ("out.csv", "out.parquet"):
        (tmp_path / name).write_text("earlier output")
        with pytest.raises(OSError, match="No space"):
            fx.write_feature_table(table, np.zeros((1, 2), np.float32), tmp_path / name)
        assert (tmp_path / name).read_text() == "earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.parquet"]
