"""FMCIB: weight-loading audit, download and digest checks, and the encoder contract with random weights."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lesionbench.baselines import fmcib as fm
from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.encoders.plugins import get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder


def _meta_trunk():
    # the real architecture without allocating its 704 MiB: keys and shapes are all the audit needs
    with torch.device("meta"):
        return fm.build_trunk()


@pytest.fixture(scope="module")
def trunk_state():
    """The real FMCIB trunk's state dict (322 keys, meta tensors)."""
    return _meta_trunk().state_dict()


def test_real_trunk_keys_and_strict_audit(trunk_state):
    trunk = _meta_trunk()
    assert len(trunk_state) == 322 and "conv1.weight" in trunk_state and not any(k.startswith("fc.") for k in trunk_state)
    assert tuple(trunk_state["conv1.weight"].shape) == (128, 1, 7, 7, 7)
    assert fm.load_trunk_weights(trunk, trunk_state) == 322

    missing = {k: v for k, v in trunk_state.items() if k != "layer2.0.downsample.0.bias"}
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): layer2.0.downsample.0.bias"):
        fm.load_trunk_weights(trunk, missing)
    extra = dict(trunk_state, **{"fc.weight": torch.zeros(2, 4096)})
    with pytest.raises(WeightsError, match=r"1 unexpected key\(s\): fc.weight"):
        fm.load_trunk_weights(trunk, extra)
    shaped = dict(trunk_state, **{"conv1.weight": torch.zeros(128, 1, 3, 3, 3)})
    with pytest.raises(WeightsError, match=r"mis-shaped key\(s\): conv1.weight \(128, 1, 3, 3, 3\)"):
        fm.load_trunk_weights(trunk, shaped)


def test_trunk_is_monais_resnet50():
    """The torch-only trunk is MONAI's resnet50 layer for layer: same keys and shapes in the same order
    (full FMCIB configuration, on the meta device), and, on a narrow version of the same 50-layer network,
    the same random weights after the same seed and bitwise-identical outputs."""
    from monai.networks.nets import resnet50 as monai_resnet50

    from lesionbench.baselines import _resnet3d

    ref_kw = dict(pretrained=False, n_input_channels=1, conv1_t_stride=2, feed_forward=False, bias_downsample=True)
    with torch.device("meta"):
        ours_full, monai_full = fm.build_trunk().state_dict(), monai_resnet50(widen_factor=2, **ref_kw).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours_full.items()] == [(k, tuple(v.shape)) for k, v in monai_full.items()]

    torch.manual_seed(7)
    monai_small = monai_resnet50(widen_factor=0.125, **ref_kw).eval()
    torch.manual_seed(7)
    ours_small = _resnet3d.resnet50(n_input_channels=1, widen_factor=0.125, conv1_t_stride=2, bias_downsample=True).eval()
    a, b = monai_small.state_dict(), ours_small.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    # non-trivial batch-norm statistics so that every layer matters
    with torch.no_grad():
        for k, v in a.items():
            if k.endswith(("running_mean", "running_var", "bn3.weight", ".bias")):
                v.copy_(torch.rand_like(v) + 0.5 if "var" in k or "weight" in k else torch.randn_like(v) * 0.1)
    ours_small.load_state_dict(a)
    x = torch.from_numpy(np.random.default_rng(1).normal(0.3, 0.2, (2, 1, 40, 40, 40)).astype(np.float32))
    with torch.inference_mode():
        assert torch.equal(monai_small(x), ours_small(x))


def test_checkpoint_formats(trunk_state):
    released = {"trunk_state_dict": trunk_state}
    lighter = {"state_dict": {**{f"model.trunk.{k}": v for k, v in trunk_state.items()}, "model.heads.0.weight": torch.zeros(1)}}
    assert fm.trunk_state_dict(released).keys() == trunk_state.keys()
    assert fm.trunk_state_dict(lighter).keys() == trunk_state.keys()
    with pytest.raises(WeightsError, match="neither 'trunk_state_dict'"):
        fm.trunk_state_dict({"model": trunk_state})
    with pytest.raises(WeightsError, match="without 'model.trunk"):
        fm.trunk_state_dict({"state_dict": {"model.heads.0.weight": torch.zeros(1)}})
    with pytest.raises(WeightsError, match="not a checkpoint dictionary"):
        fm.trunk_state_dict([1, 2])


def _small_trunk():
    """A small trunk of the same family for file-level tests (the real one is 704 MiB on disk)."""
    from monai.networks.nets import resnet10

    return resnet10(pretrained=False, n_input_channels=1, widen_factor=0.25, conv1_t_stride=2, feed_forward=False, bias_downsample=True)


@pytest.fixture
def small(monkeypatch, tmp_path):
    monkeypatch.setattr(fm, "build_trunk", _small_trunk)
    torch.manual_seed(3)
    sd = _small_trunk().state_dict()
    path = tmp_path / "model_weights.torch"
    torch.save({"trunk_state_dict": sd}, path)
    return path, sd


def test_load_released_and_lighter_files(small, tmp_path):
    path, sd = small
    enc = get_encoder("fmcib", weights=path, threads=1)
    assert enc.meta.weights_sha256 == fm.sha256_file(path)
    assert fm.resolve_weights(path)[1] == enc.meta.weights_sha256  # remembered digest
    torch.save({"trunk_state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}}, path)
    assert fm.resolve_weights(path)[1] == fm.sha256_file(path) != enc.meta.weights_sha256  # rewritten: re-hashed
    assert torch.equal(enc.trunk.state_dict()["conv1.weight"], sd["conv1.weight"])
    lighter = tmp_path / "epoch=10.ckpt"
    torch.save({"state_dict": {f"model.trunk.{k}": v for k, v in sd.items()}, "epoch": 10}, lighter)
    torch.save({"trunk_state_dict": sd}, path)
    enc = get_encoder("fmcib", weights=path, threads=1)
    enc2 = get_encoder("fmcib", weights=lighter, threads=1)
    x = np.random.default_rng(0).random((2, 1, 20, 20, 20), dtype=np.float32)
    enc.meta.feature_dim  # noqa: B018
    np.testing.assert_array_equal(enc.trunk(torch.from_numpy(x)).detach().numpy(), enc2.trunk(torch.from_numpy(x)).detach().numpy())
    assert enc.meta.fingerprint() != enc2.meta.fingerprint()  # different files, different digests


def test_device_errors(small):
    from lesionbench.benchmark.errors import ConfigurationError

    path, _ = small
    with pytest.raises(ConfigurationError, match="Unknown torch device"):
        get_encoder("fmcib", weights=path, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigurationError, match="CUDA is not available"):
            get_encoder("fmcib", weights=path, device="cuda")


def test_missing_key_in_file_fails(small, tmp_path):
    _, sd = small
    bad = tmp_path / "bad.torch"
    torch.save({"trunk_state_dict": {k: v for k, v in sd.items() if k != "bn1.running_mean"}}, bad)
    with pytest.raises(WeightsError, match="missing key.*bn1.running_mean"):
        get_encoder("fmcib", weights=bad)


def test_corrupt_and_non_checkpoint_files(tmp_path):
    garbage = tmp_path / "garbage.torch"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(WeightsError, match="could not be read as a PyTorch checkpoint"):
        fm.load_checkpoint(garbage)
    pickled = tmp_path / "object.torch"
    torch.save({"trunk_state_dict": {"conv1.weight": object()}}, pickled)  # not loadable with weights_only=True
    with pytest.raises(WeightsError, match="could not be read"):
        fm.load_checkpoint(pickled)
    with pytest.raises(WeightsError, match="not found.*--weights"):
        fm.resolve_weights(tmp_path / "nope.torch")


def test_weights_messages_never_advise_unsafe_loading(tmp_path):
    # torch's own UnpicklingError text suggests weights_only=False (running code from the file)
    text = tmp_path / "notes.torch"
    text.write_text("not weights\n")
    with pytest.raises(WeightsError) as err:
        fm.load_checkpoint(text)
    assert "weights_only` set to `False`" not in str(err.value) and "only tensors and plain containers" in str(err.value)


def test_weights_folder_uses_the_released_file_or_says_what_is_missing(tmp_path):
    with pytest.raises(WeightsError, match=r"is a folder without model_weights\.torch"):
        fm.resolve_weights(tmp_path)
    (tmp_path / fm.WEIGHTS_FILENAME).write_bytes(b"x")
    assert fm.resolve_weights(tmp_path)[0] == tmp_path / fm.WEIGHTS_FILENAME


def _zenodo_record(tmp_path, checksum: str) -> str:
    """A stand-in for the Zenodo record's metadata (the API's shape: files[].key / .checksum)."""
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"id": 10528450, "files": [{"key": "other.txt", "checksum": "md5:0"}, {"key": fm.WEIGHTS_FILENAME, "checksum": checksum}]}))
    return record.as_uri()


def test_download_size_check_and_digest(small, tmp_path, monkeypatch):
    import hashlib

    path, _ = small
    monkeypatch.setenv(fm.WEIGHTS_ENV, str(tmp_path / "weights"))
    monkeypatch.setattr(fm, "WEIGHTS_URL", path.as_uri())
    monkeypatch.setattr(fm, "WEIGHTS_SIZE", path.stat().st_size)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(fm, "RECORD_API", _zenodo_record(tmp_path, f"md5:{md5}"))
    got, digest = fm.resolve_weights(None, progress=False)
    assert got == tmp_path / "weights" / "model_weights.torch" and digest == fm.sha256_file(path)
    side = json.loads((tmp_path / "weights" / "model_weights.torch.sha256.json").read_text())
    assert side["sha256"] == digest and side["size"] == path.stat().st_size and side["publisher_checksum"] == f"md5:{md5}"
    assert fm.resolve_weights(None) == (got, digest)  # verified against the sidecar, no download
    with open(got, "r+b") as f:  # damage the cached file
        f.seek(100)
        f.write(b"\xff\xff")
    with pytest.raises(WeightsError, match="was recorded when they were downloaded"):
        fm.resolve_weights(None)
    got.unlink()
    monkeypatch.setattr(fm, "WEIGHTS_SIZE", path.stat().st_size + 1)
    with pytest.raises(WeightsError, match="expected"):
        fm.resolve_weights(None, progress=False)
    assert not got.exists()


def test_download_is_checked_against_the_published_checksum(small, tmp_path, monkeypatch, caplog):
    path, _ = small
    monkeypatch.setenv(fm.WEIGHTS_ENV, str(tmp_path / "weights"))
    monkeypatch.setattr(fm, "WEIGHTS_URL", path.as_uri())
    monkeypatch.setattr(fm, "WEIGHTS_SIZE", path.stat().st_size)
    monkeypatch.setattr(fm, "RECORD_API", _zenodo_record(tmp_path, "md5:" + "0" * 32))
    with pytest.raises(WeightsError, match=r"Zenodo record publishes md5:0{32}.*not kept"):
        fm.resolve_weights(None, progress=False)
    assert not list((tmp_path / "weights").iterdir())  # nothing half-kept
    # the record unreachable: the size check alone, said plainly
    monkeypatch.setattr(fm, "RECORD_API", (tmp_path / "no-record.json").as_uri())
    with caplog.at_level("WARNING", logger=fm.__name__):
        got, _ = fm.resolve_weights(None, progress=False)
    assert got.is_file() and "checked by its size only" in caplog.text


def test_offline_download_says_how_to_get_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(fm.WEIGHTS_ENV, str(tmp_path / "weights"))
    monkeypatch.setattr(fm, "WEIGHTS_URL", (tmp_path / "offline" / "model_weights.torch").as_uri())
    with pytest.raises(WeightsError, match="Could not download.*--weights PATH"):
        get_encoder("fmcib", progress=False)


def test_fmcib_random_init_passes_check_encoder():
    enc = get_encoder("fmcib-random-init", seed=0, batch_size=2)
    assert enc.meta.feature_dim == 4096 and enc.meta.patch.size == (50, 50, 50)
    assert ("precision", "float32") in enc.meta.settings
    check_encoder(enc, n=2)


def test_bf16_is_recorded_and_close():
    meta32, meta16 = fm.random_init_meta(1), fm.random_init_meta(1, bf16=True)
    assert ("precision", "bf16-autocast") in meta16.settings
    assert meta16.fingerprint() != meta32.fingerprint()  # bf16 features are cached apart
    assert fm.random_init_meta(2).fingerprint() != meta32.fingerprint()
    torch.manual_seed(1)
    trunk = _small_trunk()
    f32 = fm.FMCIBEncoder(trunk, replace(meta32, feature_dim=128), threads=1)
    bf = fm.FMCIBEncoder(trunk, replace(meta16, feature_dim=128), bf16=True, threads=1)
    x = np.random.default_rng(0).random((2, 1, 24, 24, 24), dtype=np.float32)
    a, b = f32.encode(x), bf.encode(x)
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    np.testing.assert_allclose(b, a, rtol=0.1, atol=0.05 * np.abs(a).max())


def test_a_checkpoint_swapped_in_with_the_same_size_and_mtime_gets_its_own_digest_and_features(small, tmp_path, monkeypatch):
    """The weights digest keys the feature cache, so it must come from the content: another checkpoint of the
    same size copied over the first with the first one's (old) mtime gives a new digest and new features."""
    import os

    import pandas as pd
    import SimpleITK as sitk

    from lesionbench.benchmark.encoders.features import extract_features

    path, sd = small
    with torch.inference_mode():
        monkeypatch.setattr(fm, "FEATURE_DIM", int(_small_trunk().eval()(torch.zeros(1, 1, 20, 20, 20)).shape[1]))
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1000, (30, 30, 30)).astype(np.int16))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    lesions = pd.DataFrame({"image_path": [str(tmp_path / "ct.nii.gz")], "coordX": [15.0], "coordY": [15.0], "coordZ": [15.0]})
    torch.save({"trunk_state_dict": {k: v.clone() for k, v in sd.items()}}, path)
    old = 1_000_000_000 * 10**9  # 2001
    os.utime(path, ns=(old, old))
    size = path.stat().st_size
    first = get_encoder("fmcib", weights=path, threads=1)
    feats_first = extract_features(lesions, first, cache_dir=tmp_path / "cache", progress=False)

    torch.save({"trunk_state_dict": {k: v * 2 if v.is_floating_point() else v.clone() for k, v in sd.items()}}, path)
    os.utime(path, ns=(old, old))
    assert path.stat().st_size == size and path.stat().st_mtime_ns == old
    second = get_encoder("fmcib", weights=path, threads=1)
    assert second.meta.weights_sha256 == fm.sha256_file(path) != first.meta.weights_sha256
    assert fm.resolve_weights(path)[1] == second.meta.weights_sha256
    feats_second = extract_features(lesions, second, cache_dir=tmp_path / "cache", progress=False)
    assert not np.array_equal(feats_first, feats_second)  # computed with the new weights, not the old cache


def test_non_finite_weights_are_a_load_error_naming_the_tensors(small, tmp_path):
    from lesionbench.benchmark.encoders.weights import NonFiniteWeightsError, check_finite_state_dict

    _, sd = small
    bad = dict(sd)
    bad["conv1.weight"] = torch.full_like(sd["conv1.weight"], float("nan"))
    bad["bn1.running_var"] = sd["bn1.running_var"].clone()
    bad["bn1.running_var"][0] = float("inf")
    path = tmp_path / "nan.torch"
    torch.save({"trunk_state_dict": bad}, path)
    with pytest.raises(NonFiniteWeightsError, match=r"nan.torch: 2 tensor\(s\) hold NaN or infinite values: conv1.weight, bn1.running_var") as err:
        get_encoder("fmcib", weights=path, threads=1)
    assert isinstance(err.value, WeightsError) and err.value.tensors == ["conv1.weight", "bn1.running_var"]
    check_finite_state_dict(sd, "ok")  # finite: no error
    check_finite_state_dict({"num_batches_tracked": torch.tensor(3), "meta": torch.empty(2, device="meta")}, "ints and meta tensors")
    many = {f"t{i:02d}": torch.tensor([float("-inf")]) for i in range(12)}
    with pytest.raises(NonFiniteWeightsError, match=r"12 tensor\(s\).*t09 and 2 more"):
        check_finite_state_dict(many, "many")
