"""The zoo's shared machinery: the seed-crop patch chain, intensity maps, spec checks, checkpoint unwrapping,
and weights resolution (cache, recorded digest, offline message, pinned download)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from lesionbench.baselines.zoo import _weights as _zoo_weights
from lesionbench.baselines.zoo._zoo import WeightsFile, unwrap
from lesionbench.baselines.zoo.ct_fm import MODEL as CTFM
from lesionbench.benchmark.errors import ConfigurationError, WeightsError
from lesionbench.benchmark.encoders.features import check_spec, load_patches
from lesionbench.benchmark.patches.seedcrop import apply_intensity
from lesionbench.benchmark.types import EncoderMeta, Intensity, PatchSpec

WINDOW = Intensity("window", -1024.0, 2048.0, 0.0, 1.0, True)


def _identity_ct(tmp_path, shape_zyx=(40, 50, 60)):
    vol = np.random.default_rng(0).integers(-1100, 2200, shape_zyx).astype(np.int16)
    image = sitk.GetImageFromArray(vol)  # spacing 1, identity direction, origin 0: LPS mm == voxel index
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    return vol, path


def _seeds(path, *points):
    return pd.DataFrame([{"image_path": str(path), "coordX": x, "coordY": y, "coordZ": z} for x, y, z in points])


def _window(v):
    return np.clip((v.astype(np.float32) + np.float32(1024)) / np.float32(3072), 0, 1)


def test_seed_crop_on_an_axis_aligned_1mm_image_is_the_flipped_crop(tmp_path):
    """Written out by hand: the 1 mm RAS grid of an LPS image is its x and y axes flipped; the crop is
    [c - 4, c + 4) around int() of the seed's RAS grid index; 'RAS' keeps the grid's axes (x, y, z)."""
    vol, path = _identity_ct(tmp_path)
    nz, ny, nx = vol.shape
    spec = PatchSpec(size=(8, 8, 8), method="seed-crop", orientation="RAS", intensity=WINDOW)
    x, y, z = 30.2, 25.7, 20.4
    got = load_patches(_seeds(path, (x, y, z)), spec, progress=False)[0, 0]
    c = (int(nx - 1 - x), int(ny - 1 - y), int(z))  # RAS grid index of the seed
    want = np.empty((8, 8, 8), dtype=np.float32)
    for i in range(8):
        for j in range(8):
            for k in range(8):
                want[i, j, k] = _window(vol[c[2] - 4 + k, ny - 1 - (c[1] - 4 + j), nx - 1 - (c[0] - 4 + i)])
    np.testing.assert_array_equal(got, want)
    # 'SPL' is the same crop transposed to (z, y, x) with y and x flipped back: the ITK array itself
    spl = load_patches(_seeds(path, (x, y, z)), PatchSpec(size=(8, 8, 8), method="seed-crop", orientation="SPL", intensity=WINDOW), progress=False)[0, 0]
    np.testing.assert_array_equal(spl, np.transpose(want, (2, 1, 0))[:, ::-1, ::-1])


def test_seed_crop_pads_a_clamped_crop_with_the_pad_value_after_the_map(tmp_path):
    vol, path = _identity_ct(tmp_path)
    spec = PatchSpec(size=(8, 8, 8), method="seed-crop", orientation="RAS", intensity=WINDOW, pad_value=-5.0)
    got = load_patches(_seeds(path, (1.0, 25.0, 20.0)), spec, progress=False)[0, 0]
    # x = 1 mm LPS is RAS grid index 58 of 60: the crop [54, 60) has 6 voxels, centred in 8 -> 1 pad each side
    assert (got[0] == -5.0).all() and (got[7] == -5.0).all()
    assert ((got[1:7] >= 0) & (got[1:7] <= 1)).all()
    hu = PatchSpec(size=(8, 8, 8), method="seed-crop", orientation="RAS", intensity=Intensity("zscore-positive"), pad_value=0.0, pad_before_intensity=True)
    z = load_patches(_seeds(path, (1.0, 25.0, 20.0)), hu, progress=False)[0, 0]
    assert np.allclose(z[0], z[7]) and not np.allclose(z[0], 0.0)  # padded in HU (0), then normalised like every voxel


def test_native_grid_in_itk_index_order_is_the_raw_crop(tmp_path):
    vol, path = _identity_ct(tmp_path)
    spec = PatchSpec(size=(8, 6, 4), method="seed-crop", orientation="index", interpolation="none", intensity=Intensity("window", -1000.0, 1000.0))
    got = load_patches(_seeds(path, (30.7, 25.2, 20.9)), spec, progress=False)[0, 0]
    want = np.transpose(vol[18:22, 22:28, 26:34], (2, 1, 0))  # (x, y, z) around int(30.7), int(25.2), int(20.9)
    np.testing.assert_array_equal(got, np.clip((want.astype(np.float32) + 1000) / 2000, 0, 1))


def test_intensity_maps():
    x = np.array([-2000, -1000, -200, 0, 200, 1000, 3000], dtype=np.float32)
    pw = apply_intensity(x, Intensity("piecewise", points=((-1000, 0), (-200, 0.2), (200, 0.9), (1000, 1))))
    np.testing.assert_allclose(pw, [0, 0, 0.2, 0.55, 0.9, 1, 1], atol=1e-7)
    win = apply_intensity(x, Intensity("window", -175, 250, 0, 1, clip=False))
    assert win[0] < 0 and win[-1] > 1
    for ddof in (0, 1):
        z = apply_intensity(x, Intensity("zscore-positive", ddof=ddof))
        pos = x[x > 0].astype(np.float64)
        np.testing.assert_allclose(z, (x - pos.mean()) / pos.std(ddof=ddof), rtol=1e-6)
    np.testing.assert_array_equal(apply_intensity(np.zeros(5, np.float32), Intensity("zscore-positive")), np.zeros(5))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (PatchSpec(method="crop"), "Unknown patch method 'crop'"),
        (PatchSpec(method="seed-crop", orientation="RAX", intensity=WINDOW), "axis code 'X'"),
        (PatchSpec(method="seed-crop", orientation="RRS", intensity=WINDOW), "each of the three world axes once"),
        (PatchSpec(method="seed-crop", orientation="RAS"), "needs an intensity"),
        (PatchSpec(method="seed-crop", orientation="RAS", intensity=WINDOW, interpolation="cubic"), "Unknown interpolation 'cubic'"),
        (PatchSpec(method="seed-crop", orientation="index", intensity=WINDOW), "needs interpolation 'none'"),
        (PatchSpec(method="seed-crop", orientation="RAS", intensity=WINDOW, with_mask=True), "no mask channel"),
        (PatchSpec(method="seed-crop", orientation="index", intensity=WINDOW, interpolation="none", diagonal=False), "diagonal=False resamples"),
        (PatchSpec(method="seed-crop", orientation="RAS", intensity=Intensity("zscore-positive"), intensity_before_resample=True), "needs a pointwise intensity"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(spec, match):
    with pytest.raises(ConfigurationError, match=match):
        check_spec(spec)


def test_intensity_before_resample_is_the_chain_on_the_mapped_scan(tmp_path):
    """Windowing the whole scan and then resampling it (SPECTRE's order) equals resampling the windowed scan with
    an identity map; it differs from windowing after resampling where a voxel outside the window meets one inside."""
    vol, path = _identity_ct(tmp_path)
    image = sitk.ReadImage(str(path))
    mapped = sitk.GetImageFromArray(_window(vol))
    mapped.CopyInformation(image)
    mapped_path = tmp_path / "mapped.nii.gz"
    sitk.WriteImage(mapped, str(mapped_path))
    common = {"size": (10, 12, 14), "spacing_mm": (0.7, 0.6, 1.3), "method": "seed-crop", "orientation": "RAS", "interpolation": "linear", "diagonal": False}
    first = load_patches(_seeds(path, (30.2, 25.7, 20.4)), PatchSpec(**common, intensity=WINDOW, intensity_before_resample=True), progress=False)
    identity = Intensity("window", 0.0, 1.0, 0.0, 1.0, False)
    want = load_patches(_seeds(mapped_path, (30.2, 25.7, 20.4)), PatchSpec(**common, intensity=identity), progress=False)
    np.testing.assert_allclose(first, want, rtol=0, atol=1e-6)
    after = load_patches(_seeds(path, (30.2, 25.7, 20.4)), PatchSpec(**common, intensity=WINDOW), progress=False)
    assert np.abs(after - first).max() > 0.01  # voxels beyond [-1024, 2048] HU meet ones inside
    assert PatchSpec(**common, intensity=WINDOW, intensity_before_resample=True).to_dict()["intensity_before_resample"] is True


def test_new_patch_fields_keep_old_fingerprints_and_round_trip():
    from lesionbench.baselines.fmcib import random_init_meta

    assert random_init_meta(0).fingerprint() == "a78e853d48dca200"  # the value before seed-crop existed
    meta = EncoderMeta(name="x", version="1", feature_dim=3, patch=PatchSpec(size=(4, 5, 6), method="seed-crop", orientation="SPL", intensity=Intensity("piecewise", points=((0, 0), (1, 1)))), card=(("k", "v"),))
    again = EncoderMeta.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert again == meta and again.fingerprint() == meta.fingerprint()
    assert EncoderMeta(**{**meta.__dict__, "card": (("k", "other"),)}).fingerprint() == meta.fingerprint()  # the card is descriptive


def test_unwrap_containers_prefixes_and_ignored_keys():
    w = WeightsFile(filename="f.pt", containers=("state_dict", "net"), prefix="module.", ignored=("module.head.*",))
    t = torch.zeros(1)
    sd, ignored = unwrap({"net": {"module.a": t, "module.head.w": t}, "epoch": 3}, w, source="f.pt")
    assert sd == {"a": t} and ignored == ["module.head.w"]
    assert unwrap({"a": t}, w, source="f.pt")[0] == {"a": t}  # a bare state dict, saved from the network itself
    with pytest.raises(WeightsError, match=r"no state dict found .*'epoch'"):
        unwrap({"epoch": 3, "model": {"a": t}}, w, source="f.pt")


# ------------------------------------------------------------------------------------------ weights
def test_missing_weights_offline_name_the_file_and_where_to_get_it(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("LESIONBENCH_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: pytest.fail("offline: must not be called"))
    with pytest.raises(_zoo_weights.WeightsMissingError, match=r"model\.safetensors.*huggingface\.co/project-lighter/ct_fm_feature_extractor") as info:
        _zoo_weights.resolve(CTFM, None)
    assert "LESIONBENCH_OFFLINE" in str(info.value) and "--random-init (ct-fm-random-init)" in str(info.value)  # the control still runs


def test_an_unresolvable_hub_fails_at_once_without_calling_the_downloader(monkeypatch):
    import socket

    import huggingface_hub

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: pytest.fail("must not be called"))
    with pytest.raises(_zoo_weights.WeightsMissingError, match="cannot be reached.*--random-init"):
        _zoo_weights.resolve(CTFM, None)


def test_download_records_size_and_sha256_and_later_loads_verify_them(monkeypatch, tmp_path):
    calls = []

    def fake_download(*, repo_id, filename, revision, local_dir):
        calls.append((repo_id, filename, revision))
        p = tmp_path / "fetched" / filename
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"weights-bytes")
        return str(p)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(_zoo_weights, "_reachable", lambda: True)
    path, digest = _zoo_weights.resolve(CTFM, None, progress=False)
    assert calls == [("project-lighter/ct_fm_feature_extractor", "model.safetensors", "main")]
    record = json.loads(path.with_name(path.name + ".sha256.json").read_text())
    assert record["size"] == 13 and record["sha256"] == digest
    assert _zoo_weights.resolve(CTFM, None) == (path, digest) and len(calls) == 1  # cached: no second download
    path.write_bytes(b"weights-bytez")  # same size, other content
    with pytest.raises(WeightsError, match="sha256 .* were recorded when they were downloaded"):
        _zoo_weights.resolve(CTFM, None)


def test_building_from_the_cache_loads_once_and_checks_the_bytes_it_loaded(monkeypatch, tmp_path):
    """The encoder is built from one read of the cached file: its digest is of the bytes loaded, and a file
    swapped in after the download (valid weights, other content) is refused, never loaded under the old digest."""
    from safetensors.torch import save_file

    from lesionbench.benchmark.encoders.plugins import get_encoder

    monkeypatch.setenv("LESIONBENCH_WEIGHTS", str(tmp_path / "weights"))
    dest = _zoo_weights.model_dir(CTFM) / CTFM.weights.filename
    dest.parent.mkdir(parents=True)
    control = get_encoder("ct-fm-random-init", device="cpu")
    save_file({k: v.contiguous() for k, v in control.network.state_dict().items()}, str(dest))
    first = get_encoder("ct-fm", device="cpu")  # placed by hand: recorded now, verified from now on
    assert first.meta.weights_sha256 == _zoo_weights.sha256_file(dest)
    reads = []
    real = _zoo_weights.sha256_file
    monkeypatch.setattr(_zoo_weights, "sha256_file", lambda path: reads.append(path) or real(path))
    assert get_encoder("ct-fm", device="cpu").meta.weights_sha256 == first.meta.weights_sha256 and reads == []
    other = get_encoder("ct-fm-random-init", device="cpu", seed=1)
    save_file({k: v.contiguous() for k, v in other.network.state_dict().items()}, str(dest))
    with pytest.raises(WeightsError, match="were recorded when they were downloaded"):
        get_encoder("ct-fm", device="cpu")


def test_a_download_that_differs_from_the_card_is_not_kept(monkeypatch, tmp_path):
    import dataclasses

    import huggingface_hub

    pinned = dataclasses.replace(CTFM, weights=dataclasses.replace(CTFM.weights, sha256="0" * 64))

    def fake_download(*, repo_id, filename, revision, local_dir):
        p = tmp_path / filename
        p.write_bytes(b"other")
        return str(p)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(_zoo_weights, "_reachable", lambda: True)
    with pytest.raises(WeightsError, match="the card pins 0000"):
        _zoo_weights.resolve(pinned, None, progress=False)
    assert _zoo_weights.present(pinned) is None


@pytest.mark.slow
def test_seed_crop_equals_tib_preprocess_on_oblique_permuted_anisotropic_volumes(tmp_path):
    """TIB's own get_transforms (MONAI 1.4) for three orientations: bit-for-bit the same patches."""
    from _tib import require_tib, tib_patches, write_volumes

    require_tib()
    seeds = write_volumes(tmp_path)
    for extractor, orientation in (("CTFMExtractor", "SPL"), ("VISTA3DExtractor", "RAS"), ("PASTAExtractor", "LPS")):
        ref = tib_patches(extractor, seeds, tmp_path)
        spec = PatchSpec(size=(48, 48, 48), method="seed-crop", orientation=orientation, intensity=WINDOW)
        np.testing.assert_array_equal(load_patches(seeds, spec, progress=False), ref)


def test_a_pickled_class_outside_the_cards_safe_globals_is_named(tmp_path):
    import argparse
    import dataclasses

    from lesionbench.baselines.zoo._zoo import read_checkpoint

    path = tmp_path / "turbo.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1.0)}, path)
    w = WeightsFile(filename="turbo.pth", containers=("model_state_dict",))
    with pytest.raises(WeightsError, match=r"\['argparse\.Namespace'\].*safe_globals"):
        read_checkpoint(path, w)
    assert set(read_checkpoint(path, dataclasses.replace(w, safe_globals=("argparse.Namespace",)))) == {"model_state_dict", "args"}


def test_a_network_that_cannot_be_built_on_the_meta_device_is_built_normally(tmp_path):
    import dataclasses

    from lesionbench.baselines.zoo._zoo import ZooEntry, build_encoder

    def build(recipe):
        torch.zeros(1, device=torch.get_default_device()).item()  # fails on meta, as MONAI's Swin does
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))

    model = dataclasses.replace(CTFM, name="tiny", embedding_dim=3, weights=WeightsFile(filename="tiny.pt", containers=()))
    sd = build("official").state_dict()
    torch.save(sd, tmp_path / "tiny.pt")
    enc = build_encoder(ZooEntry(model, build), tmp_path / "tiny.pt", device="cpu")
    assert all(torch.equal(enc.network.state_dict()[k], v) for k, v in sd.items())


_MONAI_LINEAR = """
import sys, numpy as np, pandas as pd
from monai import transforms as T
seeds = pd.read_csv(sys.argv[1])
chain = T.Compose([T.LoadImage(reader="ITKReader", ensure_channel_first=True), T.Orientation(axcodes="LPS"),
                   T.Spacing(pixdim=(1.0, 1.0, 3.0), mode="bilinear", padding_mode="zeros", align_corners=False, diagonal=True)])
out = []
for _, r in seeds.iterrows():
    img = chain(r.image_path)
    c = [int(v) for v in (np.linalg.inv(np.array(img.affine)) @ np.array((-r.coordX, -r.coordY, r.coordZ, 1)))[:3]]
    roi = (40, 40, 12)
    crop = img[:, max(c[0] - 20, 0):min(c[0] + 20, img.shape[1]), max(c[1] - 20, 0):min(c[1] + 20, img.shape[2]), max(c[2] - 6, 0):min(c[2] + 6, img.shape[3])]
    crop = T.SpatialPad((12, 40, 40))(T.ScaleIntensityRange(-1024, 2048, 0, 1, clip=True)(T.Orientation(axcodes="SPL")(crop)))
    out.append(np.asarray(crop))
np.save(sys.argv[2], np.stack(out))
"""


@pytest.mark.slow
def test_linear_interpolation_equals_monai_spacing_without_aligned_corners(tmp_path):
    """The official recipes' 'linear' (MONAI Spacing, align_corners=False, anisotropic 1x1x3 mm), written as a
    MONAI 1.4 chain and run in TIB's environment (it has ITK): the same patches bit for bit."""
    import subprocess

    from _tib import TIB_PYTHON, require_tib, write_volumes

    require_tib()
    seeds = write_volumes(tmp_path)
    seeds.to_csv(tmp_path / "seeds.csv", index=False)
    subprocess.run([str(TIB_PYTHON), "-c", _MONAI_LINEAR, str(tmp_path / "seeds.csv"), str(tmp_path / "ref.npy")], check=True, capture_output=True, timeout=900)
    spec = PatchSpec(size=(12, 40, 40), spacing_mm=(3.0, 1.0, 1.0), method="seed-crop", orientation="SPL", intensity=WINDOW, interpolation="linear")
    np.testing.assert_array_equal(load_patches(seeds, spec, progress=False), np.load(tmp_path / "ref.npy"))


_MONAI_DEFAULT_SPACING = """
import sys, numpy as np, pandas as pd
from monai import transforms as T
seeds, orient, first = pd.read_csv(sys.argv[1]), sys.argv[3], sys.argv[4] == "window-first"
window = T.ScaleIntensityRange(-175, 250, 0, 1, clip=True)
spacing = T.Spacing(pixdim=(1.5, 1.5, 1.5), mode="bilinear", padding_mode="zeros")
chain = T.Compose([T.LoadImage(reader="ITKReader", ensure_channel_first=True), T.Orientation(axcodes=orient), *([window] if first else []), spacing])
out = []
for _, r in seeds.iterrows():
    img = chain(r.image_path)
    c = [int(v) for v in (np.linalg.inv(np.array(img.affine)) @ np.array((-r.coordX, -r.coordY, r.coordZ, 1)))[:3]]
    crop = img[:, max(c[0] - 16, 0):min(c[0] + 16, img.shape[1]), max(c[1] - 16, 0):min(c[1] + 16, img.shape[2]), max(c[2] - 16, 0):min(c[2] + 16, img.shape[3])]
    out.append(np.asarray(T.SpatialPad((32, 32, 32))(crop if first else window(crop))))
np.save(sys.argv[2], np.stack(out))
"""


def _monai_default_chain(tmp_path, orientation: str, order: str):
    """TIB's test volumes and MONAI 1.4's default Orientation -> Spacing chain on them, run in TIB's environment
    (it has ITK); ``order`` "window-first" windows the whole scan before Spacing, else each crop after it."""
    import subprocess

    from _tib import TIB_PYTHON, require_tib, write_volumes

    require_tib()
    seeds = write_volumes(tmp_path)
    seeds.to_csv(tmp_path / "seeds.csv", index=False)
    subprocess.run([str(TIB_PYTHON), "-c", _MONAI_DEFAULT_SPACING, str(tmp_path / "seeds.csv"), str(tmp_path / "ref.npy"), orientation, order],
                   check=True, capture_output=True, timeout=900)  # fmt: skip
    return seeds, np.load(tmp_path / "ref.npy")


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["RAS", "SPL"])
def test_non_diagonal_spacing_equals_monai_default_chain_on_oblique_scans(tmp_path, orientation):
    """diagonal=False: MONAI's default Orientation -> Spacing (keeps the scanner's rotation), as the models' own
    pipelines run it, written as a MONAI 1.4 chain in TIB's environment: the same patches bit for bit."""
    seeds, ref = _monai_default_chain(tmp_path, orientation, "window-after")
    spec = PatchSpec(size=(32, 32, 32), spacing_mm=(1.5, 1.5, 1.5), method="seed-crop", orientation=orientation,
                     intensity=Intensity("window", -175.0, 250.0), interpolation="linear", diagonal=False)  # fmt: skip
    np.testing.assert_array_equal(load_patches(seeds, spec, progress=False), ref)


@pytest.mark.slow
def test_intensity_before_resample_equals_monai_windowing_the_scan_first(tmp_path):
    """SPECTRE's order (window the whole scan, then MONAI's default Spacing) as a MONAI 1.4 chain in TIB's
    environment, on TIB's oblique, permuted and anisotropic test volumes (max abs diff measured: 1.1e-13)."""
    seeds, ref = _monai_default_chain(tmp_path, "RAS", "window-first")
    spec = PatchSpec(size=(32, 32, 32), spacing_mm=(1.5, 1.5, 1.5), method="seed-crop", orientation="RAS", intensity=Intensity("window", -175.0, 250.0),
                     interpolation="linear", diagonal=False, intensity_before_resample=True)  # fmt: skip
    ours = load_patches(seeds, spec, progress=False)
    assert np.abs(ours - ref).max() <= 1e-6, np.abs(ours - ref).max()
    after = load_patches(seeds, PatchSpec(**{**spec.__dict__, "intensity_before_resample": False}), progress=False)
    assert np.abs(after - ref).max() > 1e-3  # the order matters on these volumes
