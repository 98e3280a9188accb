"""The extraction pipeline on one machine: reader threads under a byte budget, patches cut on their own
thread while the model runs, and the same patches and features as reading and cutting one image at a time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.errors import ImageError
from lesionbench.benchmark.encoders.features import cut_patches, extract_features, load_patches
from lesionbench.benchmark.data.reading import ImagePrefetcher, image_nbytes, in_order_on_a_thread, read_image
from lesionbench.benchmark.types import EncoderMeta, Intensity, PatchSpec

MB = 2**20


class FakeImage:
    """Stands for a decoded image of ``nbytes`` pixel bytes (what the budget counts)."""

    def __init__(self, path: str, nbytes: int):
        self.path, self.nbytes = path, nbytes

    def GetNumberOfPixels(self) -> int:
        return self.nbytes

    def GetSizeOfPixelComponent(self) -> int:
        return 1

    def GetNumberOfComponentsPerPixel(self) -> int:
        return 1


@pytest.mark.parametrize("readers", [1, 3])
def test_reader_pool_stays_within_its_byte_budget_and_hands_images_out_in_order(readers):
    sizes = {f"img{i}": (100 if i != 7 else 900) * MB for i in range(16)}  # img7 alone exceeds the budget
    budget = 250 * MB
    peak = [0, 0]  # bytes held (read and waiting + reserved by reads under way), reads at once
    live = [0]
    lock = threading.Lock()

    made = threading.Event()  # `pre` is bound only once the constructor (which starts the readers) returns

    def read(path: str) -> FakeImage:
        made.wait()
        with lock:
            live[0] += 1
            peak[1] = max(peak[1], live[0])
        with pre._cond:
            peak[0] = max(peak[0], pre.held_bytes())
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        if path == "img3":
            raise ImageError("img3: unreadable")
        return FakeImage(path, sizes[path])

    pre = ImagePrefetcher(list(sizes), ahead=4, readers=readers, max_bytes=budget, read=read, nbytes=sizes.__getitem__)
    made.set()
    with pre:
        time.sleep(0.2)  # start-up: reads while below the budget, then stops
        with pre._cond:
            assert pre.held_bytes() <= budget + 100 * MB and len(pre._ready) + len(pre._reading) <= 3
        got = []
        for p in sizes:
            try:
                got.append(pre.get(p).path)
            except ImageError as exc:
                got.append(str(exc))
            time.sleep(0.005)  # the consumer works on it
    assert got == [p if p != "img3" else "img3: unreadable" for p in sizes]
    # the huge image was read (alone: nothing else held), everything else stayed within the budget
    assert peak[0] <= max(budget + 100 * MB, 900 * MB)
    assert peak[1] <= readers
    if readers > 1:
        assert peak[1] > 1  # the pool does read several images at once


def test_reader_pool_reserves_in_plan_order_after_start_up():
    sizes = {f"img{i}": 100 * MB for i in range(8)}
    held: list[int] = []
    made = threading.Event()

    def read(path: str) -> FakeImage:
        made.wait()
        with pre._cond:
            held.append(pre.held_bytes())
        return FakeImage(path, sizes[path])

    pre = ImagePrefetcher(list(sizes), ahead=2, readers=2, max_bytes=250 * MB, read=read, nbytes=sizes.__getitem__)
    made.set()
    with pre:
        assert pre.get("img0").path == "img0"
        time.sleep(0.2)
        with pre._cond:  # consuming: at most ahead + readers - 1 = 3 held, and 250 MB: two images
            assert len(pre._ready) + len(pre._reading) <= 2 and pre.held_bytes() <= 250 * MB
        assert [pre.get(p).path for p in list(sizes)[1:]] == list(sizes)[1:]
    assert max(held) <= 350 * MB  # the start-up budget plus the one image that crosses it
    with pytest.raises(Exception, match="readers"):
        ImagePrefetcher([], readers=0)


def test_images_that_weigh_nothing_are_still_bounded_in_number():
    from lesionbench.benchmark.data.reading import MAX_WAITING

    paths = [f"img{i}" for i in range(3 * MAX_WAITING)]
    with ImagePrefetcher(paths, read=lambda p: FakeImage(p, 0), nbytes=lambda p: 0) as pre:  # e.g. mapped files
        time.sleep(0.3)
        with pre._cond:
            assert len(pre._ready) + len(pre._reading) <= MAX_WAITING
        assert [pre.get(p).path for p in paths] == paths


def test_image_nbytes_from_the_header(tmp_path):
    img = sitk.Image([7, 5, 3], sitk.sitkInt16)
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    assert image_nbytes(tmp_path / "a.nii.gz") == 7 * 5 * 3 * 2
    assert image_nbytes(tmp_path / "missing.nii.gz") == 0
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    assert image_nbytes(tmp_path / "junk.nii.gz") == 0


def test_in_order_on_a_thread_keeps_order_bounds_depth_and_raises_in_turn():
    started: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        if i == 4:
            raise ValueError("job 4")
        return i * i

    out = []
    it = in_order_on_a_thread(((i, lambda i=i: job(i)) for i in range(8)), depth=2)
    with pytest.raises(ValueError, match="job 4"):
        for tag, res in it:
            time.sleep(0.05)
            assert max(started) <= tag + 2  # never more than `depth` jobs ahead of the caller
            out.append((tag, res))
    assert out == [(i, i * i) for i in range(4)]
    assert threading.main_thread() is threading.current_thread()


class Sampled:
    """A patch encoder whose features are every 97th patch voxel: equal features mean equal patches."""

    def __init__(self, spec: PatchSpec):
        n = int(np.prod(spec.size)) * (2 if spec.with_mask else 1)
        self.meta = EncoderMeta(name="sampled", version="1", feature_dim=len(range(0, n, 97)), patch=spec)
        self.batch_size = 2
        self.threads: set[str] = set()

    def encode(self, patches: np.ndarray) -> np.ndarray:
        return patches.reshape(len(patches), -1)[:, ::97].astype(np.float32)


def _cohort(tmp_path, n_images: int = 4, per_image: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_images):
        arr = rng.normal(-500, 200, (20 + 2 * i, 40, 44)).astype(np.int16)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.9, 0.8, 2.0 - 0.2 * i))
        img.SetOrigin((10.0 * i, -20.0, 100.0))
        path = tmp_path / f"img{i}.nii.gz"
        sitk.WriteImage(img, str(path))
        for k in range(per_image):
            pt = img.TransformContinuousIndexToPhysicalPoint((8.3 + 9 * k, 10 + 7 * k, 4.6 + 3 * k))
            rows.append({"lesion_id": f"P{i}L{k}", "image_path": str(path), "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2], "diameter_mm": 5.0 + k})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("spec", [PatchSpec(), PatchSpec(with_mask=True)], ids=["ct", "ct+mask"])
def test_pipelined_patches_and_features_equal_one_image_at_a_time(tmp_path, spec, monkeypatch):
    df = _cohort(tmp_path)
    expected = []
    for path, group in df.groupby("image_path", sort=False):  # today's path: read, then cut, one image after another
        expected += cut_patches(str(path), group.to_dict("records"), spec)
    expected = np.stack(expected)

    import lesionbench.benchmark.encoders.features as features

    cut_on: set[str] = set()
    real_cut = features.cut_patches

    def cut(*a, **k):
        cut_on.add(threading.current_thread().name)
        return real_cut(*a, **k)

    monkeypatch.setattr(features, "cut_patches", cut)
    np.testing.assert_array_equal(load_patches(df, spec, progress=False), expected)
    enc = Sampled(spec)
    feats = extract_features(df, enc, cache=False, progress=False)
    np.testing.assert_array_equal(feats, enc.encode(expected))
    # the patches were cut beside the caller's thread, which ran the encoder
    assert cut_on and threading.current_thread().name not in cut_on
    # and through the reader pool with several readers, the same again
    with ImagePrefetcher(df["image_path"], readers=3, max_bytes=0) as pre:
        np.testing.assert_array_equal(extract_features(df, enc, cache=False, progress=False, images=pre), enc.encode(expected))
    assert read_image(df["image_path"][0]).GetSize() == (44, 40, 20)


def _oblique_volume(dtype=np.int16) -> sitk.Image:
    """Anisotropic, oblique and axis-permuted (the direction's columns are a rotated permutation)."""
    arr = np.random.default_rng(3).normal(-300, 400, (26, 37, 41)).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 1.3, 2.5))
    img.SetOrigin((-12.5, 30.25, 101.0))
    c, s_ = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]])
    img.SetDirection(tuple(rot.ravel()))
    return img


@pytest.mark.parametrize("suffix", [".nii", ".mha", ".mhd", ".nrrd", ".nhdr"])
@pytest.mark.parametrize("spec", [PatchSpec(), PatchSpec(method="seed-crop", size=(8, 10, 12), spacing_mm=(1.5, 1.0, 1.0), orientation="RAS", intensity=Intensity()), PatchSpec(method="seed-crop", size=(8, 10, 12), orientation="SPL", interpolation="nearest", intensity=Intensity())], ids=["fmcib", "seed-crop", "seed-crop-nearest"])
def test_uncompressed_images_are_mapped_and_give_the_whole_volume_patches(tmp_path, suffix, spec):
    from lesionbench.benchmark.encoders.features import check_spec
    from lesionbench.benchmark.data.rawmap import MappedVolume, map_image

    check_spec(spec)
    img = _oblique_volume()
    raw = tmp_path / f"raw{suffix}"
    sitk.WriteImage(img, str(raw), useCompression=False)
    mapped = map_image(raw)
    assert isinstance(mapped, MappedVolume)
    ref = read_image(raw)  # the whole-volume path: SimpleITK decodes the file
    np.testing.assert_array_equal(np.asarray(mapped.array), sitk.GetArrayViewFromImage(ref))
    assert (mapped.GetSize(), mapped.GetSpacing(), mapped.GetOrigin()) == (ref.GetSize(), ref.GetSpacing(), ref.GetOrigin())
    np.testing.assert_allclose(mapped.GetDirection(), ref.GetDirection(), rtol=0, atol=1e-12)
    seeds = [ref.TransformContinuousIndexToPhysicalPoint(ix) for ix in [(20.2, 18.5, 13.1), (3.0, 2.0, 1.0), (39.6, 35.2, 24.7)]]
    lesions = [{"coordX": x, "coordY": y, "coordZ": z} for x, y, z in seeds]
    expected = cut_patches(str(raw), lesions, spec, images=_Whole(ref))
    for got in (cut_patches(str(raw), lesions, spec), _cut_through_prefetcher(raw, lesions, spec)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert not isinstance(g, str), g
            np.testing.assert_array_equal(g, e)


class _Whole:
    """A stand-in for the prefetcher with get() alone: cut_patches then uses the whole SimpleITK image."""

    def __init__(self, image):
        self.image = image

    def get(self, path):
        return self.image


def _cut_through_prefetcher(path, lesions, spec):
    with ImagePrefetcher([path]) as pre:
        return cut_patches(str(path), lesions, spec, images=pre)


def test_what_cannot_be_mapped_with_certainty_is_read_whole(tmp_path):
    from lesionbench.benchmark.data.rawmap import map_image

    img = _oblique_volume()
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(img, str(tmp_path / "z.mha"), useCompression=True)
    assert map_image(tmp_path / "a.nii.gz") is None and map_image(tmp_path / "z.mha") is None
    sitk.WriteImage(img, str(tmp_path / "t.nii"))
    data = bytearray((tmp_path / "t.nii").read_bytes())
    data[112:116] = np.float32(2.0).tobytes()  # scl_slope 2: ITK rescales to float, the stored values are not its
    (tmp_path / "s.nii").write_bytes(bytes(data))
    assert map_image(tmp_path / "s.nii") is None
    (tmp_path / "cut.nii").write_bytes(bytes(data[: len(data) // 2]))  # truncated: left to read_image
    assert map_image(tmp_path / "cut.nii") is None
    # with the prefetcher, get() still hands a SimpleITK image to image encoders
    with ImagePrefetcher([tmp_path / "t.nii"]) as pre:
        assert isinstance(pre.get(tmp_path / "t.nii"), sitk.Image)
