"""Partial reading: a DICOM series decoded slice file by slice file, raw NRRD memory-mapped. The patches must
equal the whole-volume read's bit for bit, and whatever is not certain must be read whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.data.dicomslices import series_header_problem
from lesionbench.benchmark.errors import ImageError
from lesionbench.benchmark.encoders.features import cut_patches, extract_features
from lesionbench.benchmark.data.rawmap import MappedVolume, map_image
from lesionbench.benchmark.data.reading import ImagePrefetcher, read_image
from lesionbench.benchmark.types import Intensity, PatchSpec

pydicom = pytest.importorskip("pydicom")

SERIES_UID = "1.2.826.0.1.3680043.8.498.1"


def _ds(v: float) -> str:
    return f"{float(v):.10g}"  # a DICOM decimal string (at most 16 characters)


def write_slice(path: Path, plane: np.ndarray, *, position, iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.7), series_uid=SERIES_UID,
                index=0, slope=1.0, intercept=-1024.0, rle=False, frames=1, unsigned=False) -> None:  # fmt: skip
    """One CT slice file (or a multi-frame file with ``frames`` > 1), written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = CTImageStorage, sop, ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = CTImageStorage, sop, "CT", "P1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.9", series_uid, "1.2.826.0.1.3680043.8.498.8"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in iop]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = "1.5"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0 if unsigned else 1
    ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(plane, dtype=np.uint16 if unsigned else np.int16).tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)


def write_series(folder: Path, arr: np.ndarray, *, spacing=(0.7, 0.8, 2.0), origin=(-20.0, 15.5, -300.0), iop=(1, 0, 0, 0, 1, 0),
                 positions=None, names=None, **kw) -> Path:  # fmt: skip
    """A series of ``arr.shape[0]`` slice files; ``spacing`` is (column, row, slice) in mm."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    for k in range(arr.shape[0]):
        pos = positions[k] if positions is not None else np.asarray(origin) + k * spacing[2] * normal
        name = names[k] if names is not None else f"s{k:04d}.dcm"
        write_slice(folder / name, arr[k], position=pos, iop=iop, pixel_spacing=(spacing[1], spacing[0]), index=k, **kw)
    return folder


def write_series_sitk(folder: Path, arr: np.ndarray, *, compressor: str, spacing=(0.7, 0.8, 2.0)) -> Path:
    """A series written by SimpleITK (GDCM), compressed with ``compressor`` (e.g. lossless JPEG 2000)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetUseCompression(True)
    writer.SetCompressor(compressor)
    for k in range(arr.shape[0]):
        plane = sitk.GetImageFromArray(arr[k : k + 1])
        plane.SetSpacing(spacing)
        tags = {"0008|0060": "CT", "0020|000d": SERIES_UID + ".1", "0020|000e": SERIES_UID, "0008|0018": f"{SERIES_UID}.2.{k}",
                "0020|0013": str(k + 1), "0020|0032": f"-20\\15.5\\{_ds(-300 + k * spacing[2])}", "0020|0037": "1\\0\\0\\0\\1\\0"}  # fmt: skip
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"s{k:04d}.dcm"))
        writer.Execute(plane)
    return folder


def _volume(n: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2500, size=(n, 22, 26)).astype(np.int16)


class _Whole:
    """A stand-in for the prefetcher with get() alone: cut_patches then cuts from the whole SimpleITK image."""

    def __init__(self, image):
        self.image = image

    def get(self, path):
        return self.image


def _lesions(image: sitk.Image) -> list[dict[str, float]]:
    """Seeds at both ends of the series (patches padded there) and in the middle."""
    nx, ny, nz = image.GetSize()
    idx = [(1.2, 2.5, 0.4), (nx / 2 + 0.3, ny / 2 - 0.7, nz / 2 + 0.25), (nx - 2.1, ny - 1.4, nz - 1.2), (3.0, ny - 3.0, min(7.6, nz - 1.0))]
    return [dict(zip(("coordX", "coordY", "coordZ"), image.TransformContinuousIndexToPhysicalPoint(i), strict=True)) for i in idx]


def _assert_same_patches(got, expected) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert not isinstance(g, str), g
        assert g.dtype == e.dtype and np.array_equal(g, e)


SERIES = {
    "axial": {},
    "odd-spacing": {"spacing": (0.693359375, 0.693359375, 1.2999999)},
    "oblique": {"iop": (0.9396926208, 0.3420201433, 0.0, -0.3368240888, 0.9254165784, 0.1736481777), "spacing": (0.8, 0.9, 2.3)},
    "sagittal-shuffled-names": {"iop": (0, 1, 0, 0, 0, -1), "spacing": (0.6, 0.6, 0.9), "names": [f"x{(k * 7) % 60:03d}.dcm" for k in range(60)]},
    "fractional-rescale": {"slope": 0.5, "intercept": -1024.25},  # SimpleITK decodes to float64
    "unsigned": {"unsigned": True, "slope": 1.0, "intercept": -1024.0},
    "rle-compressed": {"rle": True},
}


@pytest.mark.parametrize("case", [*SERIES, "jpeg2000"])
def test_a_series_is_read_slice_by_slice_with_the_whole_reads_geometry_voxels_and_patches(tmp_path, case):
    if case == "jpeg2000":
        folder = write_series_sitk(tmp_path / case, _volume(30), compressor="JPEG2000")
    else:
        folder = write_series(tmp_path / case, _volume(), **SERIES[case])
    whole = read_image(folder)
    mapped = map_image(folder)
    assert isinstance(mapped, MappedVolume)
    # the geometry is exactly the whole read's, not merely close
    assert (mapped.GetSize(), mapped.GetSpacing(), mapped.GetOrigin(), mapped.GetDirection()) == (whole.GetSize(), whole.GetSpacing(), whole.GetOrigin(), whole.GetDirection())
    arr = sitk.GetArrayFromImage(whole)
    assert mapped.array.dtype == arr.dtype and mapped.array.shape == arr.shape
    np.testing.assert_array_equal(np.asarray(mapped.array), arr)
    lesions = _lesions(whole)
    seed_crop = PatchSpec(method="seed-crop", size=(8, 10, 12), spacing_mm=(1.5, 1.0, 1.0), orientation="RAS", intensity=Intensity())
    nearest = PatchSpec(method="seed-crop", size=(8, 10, 12), orientation="SPL", interpolation="nearest", intensity=Intensity())
    for spec in (PatchSpec(), PatchSpec(with_mask=True), seed_crop, nearest):
        expected = cut_patches(str(folder), lesions, spec, images=_Whole(whole))
        _assert_same_patches(cut_patches(str(folder), lesions, spec), expected)
        with ImagePrefetcher([folder]) as pre:
            _assert_same_patches(cut_patches(str(folder), lesions, spec, images=pre), expected)


def test_slice_blocks_index_like_the_whole_array(tmp_path):
    folder = write_series(tmp_path / "s", _volume(12))
    arr = sitk.GetArrayFromImage(read_image(folder))
    vol = map_image(folder).array
    for key in [(slice(2, 7), slice(3, 9), slice(0, 26)), (slice(0, 0), slice(None), slice(None)), (slice(-3, None), slice(None, None, 2), 5), (4,), 11, (-1, 2, slice(1, 4))]:
        np.testing.assert_array_equal(vol[key], arr[key])
        assert vol[key].shape == arr[key].shape


def _count_decodes(monkeypatch) -> list[str]:
    """The slice files whose pixels SimpleITK decodes (per-file reads and series reads), in order."""
    decoded: list[str] = []
    file_execute, series_execute = sitk.ImageFileReader.Execute, sitk.ImageSeriesReader.Execute

    def file_read(self, *a, **k):
        decoded.append(self.GetFileName())
        return file_execute(self, *a, **k)

    def series_read(self, *a, **k):
        decoded.extend(self.GetFileNames())
        return series_execute(self, *a, **k)

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", file_read)
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", series_read)
    return decoded


def test_only_the_slices_a_patch_touches_are_decoded_and_each_once(tmp_path, monkeypatch):
    folder = write_series(tmp_path / "s", _volume(80))  # 2 mm slices: 158 mm, a 50 mm patch needs ~26 of 80
    whole = read_image(folder)
    files = [str(folder / f"s{k:04d}.dcm") for k in range(80)]
    seed = whole.TransformContinuousIndexToPhysicalPoint((13.0, 11.0, 40.3))
    lesions = [dict(zip(("coordX", "coordY", "coordZ"), seed, strict=True))] * 2  # two lesions on the same slices
    expected = cut_patches(str(folder), lesions, PatchSpec(), images=_Whole(whole))
    decoded = _count_decodes(monkeypatch)
    _assert_same_patches(cut_patches(str(folder), lesions, PatchSpec()), expected)
    assert len(decoded) == len(set(decoded))  # kept: the second lesion decodes nothing again
    middle = {files.index(f) for f in decoded} - {0, 79}  # the first and last slices give the geometry
    assert middle and max(middle) - min(middle) + 1 == len(middle) <= 28
    assert min(middle) >= 40 - 14 and max(middle) <= 40 + 14


def test_nearest_seed_crop_decodes_only_its_slices(tmp_path, monkeypatch):
    """Nearest-neighbour seed-crop patches (MedicalNet's recipe) read the bounding block, not the whole series."""
    folder = write_series(tmp_path / "s", _volume(80))
    whole = read_image(folder)
    files = [str(folder / f"s{k:04d}.dcm") for k in range(80)]
    seed = whole.TransformContinuousIndexToPhysicalPoint((13.0, 11.0, 40.3))
    lesions = [dict(zip(("coordX", "coordY", "coordZ"), seed, strict=True))]
    spec = PatchSpec(method="seed-crop", size=(8, 10, 12), orientation="SPL", interpolation="nearest", intensity=Intensity())
    expected = cut_patches(str(folder), lesions, spec, images=_Whole(whole))
    decoded = _count_decodes(monkeypatch)
    _assert_same_patches(cut_patches(str(folder), lesions, spec), expected)
    middle = {files.index(f) for f in decoded} - {0, 79}
    assert middle and len(middle) <= 16


def _fallback_series(tmp_path: Path, case: str) -> Path:
    arr, folder = _volume(12), tmp_path / case
    if case == "two-series":
        write_series(folder, arr)
        write_series(folder, arr[:4], series_uid="1.2.826.0.1.3680043.8.498.2", names=[f"t{k}.dcm" for k in range(4)])
    elif case == "gantry-tilt":
        write_series(folder, arr, positions=[(-20.0, 15.5 + 0.3 * k, -300.0 + 2.0 * k) for k in range(12)])
    elif case == "uneven-spacing":
        write_series(folder, arr, positions=[(-20.0, 15.5, -300.0 + 2.0 * k + (0.5 if k > 6 else 0.0)) for k in range(12)])
    elif case == "a-slice-rescaled-otherwise":  # its pixel type (float) differs from the series' (integer)
        write_series(folder, arr)
        write_slice(folder / "s0005.dcm", arr[5], position=(-20.0, 15.5, -290.0), index=5, slope=0.5, intercept=-1024.25)
    elif case == "two-slices":
        write_series(folder, arr[:2])
    elif case == "multi-frame":
        write_slice(folder.mkdir() or folder / "mf.dcm", arr[:3], position=(0.0, 0.0, 0.0), frames=3)
    return folder


# gantry-tilt and uneven-spacing: refused by both paths since issue 20 (tests/test_integrity_dicom.py)
@pytest.mark.parametrize("case", ["two-series", "a-slice-rescaled-otherwise", "two-slices", "multi-frame"])
def test_what_is_not_certain_is_read_whole(tmp_path, case):
    folder = _fallback_series(tmp_path, case)
    assert map_image(folder) is None
    try:
        whole = read_image(folder)
    except ImageError as exc:  # the multi-frame file is 4D to ITK: refused as before
        assert case == "multi-frame" and "is not a 3D scalar image" in str(exc)
        return
    lesions = _lesions(whole)
    expected = cut_patches(str(folder), lesions, PatchSpec(), images=_Whole(whole))
    with ImagePrefetcher([folder]) as pre:
        _assert_same_patches(cut_patches(str(folder), lesions, PatchSpec(), images=pre), expected)


def _broken_series(folder: Path, case: str) -> Path:
    arr = _volume(12)
    write_series(folder, arr[:3] if case == "three-uneven" else arr,
                 positions=[(-20.0, 15.5, z) for z in (-300.0, -298.0, -294.0)] if case == "three-uneven" else None)  # fmt: skip
    middle = folder / "s0005.dcm"
    if case == "truncated":  # an interrupted download: GDCM leaves the file out of the series
        middle.write_bytes(middle.read_bytes()[:-100])
    elif case == "empty":
        middle.write_bytes(b"")
    elif case == "two-deleted":
        middle.unlink()
        (folder / "s0006.dcm").unlink()
    elif case == "copied-twice":  # the same slice file under two names
        shutil.copy(middle, folder / "s0005 (1).dcm")
    elif case == "series-twice":  # every file downloaded again beside the first copy
        for f in sorted(folder.glob("s*.dcm")):
            shutil.copy(f, f.with_name(f.stem + " (1).dcm"))
    elif case == "extra-slice-nearby":
        write_slice(folder / "extra.dcm", arr[5], position=(-20.0, 15.5, -289.9), index=5)
    elif case == "no-position":
        ds = pydicom.dcmread(middle)
        del ds.ImagePositionPatient
        ds.save_as(middle)
    elif case == "localizer":  # a coronal scout image with the series' UID
        write_slice(folder / "scout.dcm", arr[0], position=(-20.0, 0.0, -300.0), iop=(1, 0, 0, 0, 0, -1), index=20)
    elif case == "no-orientation":
        ds = pydicom.dcmread(middle)
        del ds.ImageOrientationPatient
        ds.save_as(middle)
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param("truncated", r"gap of 4 mm between slices s0004\.dcm and s0006\.dcm, where most are 2 mm apart.*not in the series: s0005\.dcm", id="truncated"),
        pytest.param("empty", r"gap of 4 mm between slices s0004\.dcm and s0006\.dcm.*not in the series: s0005\.dcm", id="empty"),
        pytest.param("two-deleted", r"gap of 6 mm between slices s0004\.dcm and s0007\.dcm.*about 2 slice file\(s\) missing", id="two-deleted"),
        pytest.param("three-uneven", r"gap of 4 mm between slices s0001\.dcm and s0002\.dcm", id="three-uneven"),
        pytest.param("copied-twice", r"slices s0005( \(1\))?\.dcm and s0005( \(1\))?\.dcm at the same position \(1 such pair.*duplicate slice file", id="copied-twice"),
        pytest.param("series-twice", r"at the same position \(12 such pair\(s\)\): a duplicate slice file, or the series twice", id="series-twice"),
        pytest.param("extra-slice-nearby", r"only 0\.1 mm apart.*Remove the extra file", id="extra-slice-nearby"),
        pytest.param("no-position", r"slices without a usable position \(ImagePositionPatient\): s0005\.dcm", id="no-position"),
        pytest.param("localizer", r"mixes slice orientations: scout\.dcm differ.*localizer", id="localizer"),
        pytest.param("no-orientation", r"mixes slice orientations: s0005\.dcm differ", id="no-orientation"),
    ],
)
def test_a_missing_or_duplicate_slice_is_an_error_not_a_stretched_volume(tmp_path, case, expected):
    """ITK stacks the slices it is given at one spacing and only prints a warning: a lesion beyond a missing
    slice would be cut from the wrong voxels. Both reading paths refuse, naming the files."""
    folder = _broken_series(tmp_path / case, case)
    with pytest.raises(ImageError, match=expected) as error:
        read_image(folder)
    assert str(folder) in str(error.value)
    assert map_image(folder) is None  # read whole, which refuses: the same message for each lesion
    seeds = [{"coordX": -15.0, "coordY": 20.0, "coordZ": -299.0}]
    assert cut_patches(str(folder), seeds, PatchSpec()) == [str(error.value)]
    assert series_header_problem(folder) == (str(error.value), None)  # validate: the same reason from the headers alone


def test_orientations_written_with_other_rounding_are_one_orientation(tmp_path):
    folder = write_series(tmp_path / "s", _volume(12))
    write_slice(folder / "s0005.dcm", _volume(12)[5], position=(-20.0, 15.5, -290.0), iop=(1.0000001, 0, 0, 0, 0.99999999, 0), index=5)
    assert read_image(folder).GetSize() == (26, 22, 12)


def test_validate_reads_dicom_series_folders_from_their_headers(tmp_path):
    """A manifest's image_path may be a DICOM series folder: validate finds a missing slice and a seed outside
    the series from the slice headers, with the rows, and passes the good folder (it said "file not found")."""
    from lesionbench.benchmark.errors import ManifestError
    from lesionbench.benchmark.data.manifest import validate_manifest
    from lesionbench.benchmark.types import TaskKind

    good = write_series(tmp_path / "good", _volume(12))
    bad = _broken_series(tmp_path / "bad", "empty")
    rows = [(good, -296.0, "train"), (bad, -296.0, "val"), (good, 100.0, "test"), (good, -292.0, "test")]
    df = pd.DataFrame([{"lesion_id": f"L{i}", "patient_id": f"P{i}", "image_path": str(f), "coordX": -15.0, "coordY": 20.0, "coordZ": z,
                        "split": split, "label": i % 2} for i, (f, z, split) in enumerate(rows)])  # fmt: skip
    with pytest.raises(ManifestError) as error:
        validate_manifest(df, kind=TaskKind.BINARY, check_images=True, source="m.csv")
    msg = str(error.value)
    assert msg.startswith("m.csv: 2 problems") and "file not found" not in msg
    assert "row 2: the DICOM series in" in msg and "gap of 4 mm between slices s0004.dcm and s0006.dcm" in msg
    assert "row 3: seed point outside its image good" in msg and "Z -300.0..-278.0 mm" in msg
    validate_manifest(df.iloc[[0, 3]], kind=TaskKind.BINARY, check_images=True, source="m.csv")  # the good rows pass
    geometry = series_header_problem(good)[1]
    whole = read_image(good)
    assert geometry.size == whole.GetSize() and geometry.spacing == whole.GetSpacing() and geometry.origin == whole.GetOrigin()
    assert series_header_problem(tmp_path / "bad")[0].startswith(f"the DICOM series in {bad} has a gap")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "folder without a DICOM series" in series_header_problem(empty)[0]
    df["mask_path"] = str(empty)  # a mask is one file, not a folder
    with pytest.raises(ManifestError, match=r"rows 1, 2: mask_path is a folder .*Give each mask as one file"):
        validate_manifest(df.iloc[[0, 3]], kind=TaskKind.BINARY, source="m.csv")


def test_three_multi_frame_files_are_refused_as_not_3d(tmp_path):
    folder = tmp_path / "mf"
    folder.mkdir()
    for k in range(3):
        write_slice(folder / f"mf{k}.dcm", _volume(3, seed=k), position=(0.0, 0.0, 10.0 * k), index=k, frames=3)
    with pytest.raises(ImageError, match="is not a 3D scalar image"):
        read_image(folder)


def test_a_truncated_end_slice_is_an_error_not_a_shorter_series(tmp_path):
    """No gap to see: GDCM leaves the file out; both paths and validate refuse, naming it (issue 20, item 18)."""
    folder = write_series(tmp_path / "s", _volume(12))
    last = folder / "s0011.dcm"
    last.write_bytes(last.read_bytes()[:-100])
    with pytest.raises(ImageError, match=r"slice file\(s\) that do not decode: s0011\.dcm \(\d+ bytes") as error:
        read_image(folder)
    assert map_image(folder) is None
    assert series_header_problem(folder) == (str(error.value), None)


def test_a_slice_that_does_not_decode_gives_the_whole_reads_error(tmp_path):
    folder = write_series(tmp_path / "bad", _volume(40), rle=True)
    bad = folder / "s0020.dcm"
    data = bytearray(bad.read_bytes())
    data[-200:-100] = b"\xff" * 100  # the header still parses; the RLE data does not decode
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError) as whole_error:
        read_image(folder)
    assert str(folder) in str(whole_error.value) and "Re-download or re-convert it" in str(whole_error.value)
    mapped = map_image(folder)
    assert isinstance(mapped, MappedVolume)
    ref = sitk.ReadImage(str(folder / "s0000.dcm"))
    near = ref.TransformContinuousIndexToPhysicalPoint((13.0, 11.0, 20.0))  # the seed is on the bad slice
    got = cut_patches(str(folder), [dict(zip(("coordX", "coordY", "coordZ"), near, strict=True))], PatchSpec())
    assert got == [str(whole_error.value)]
    # a size mismatch is found in the headers: read whole, which says so as before
    size = write_series(tmp_path / "size", _volume(12))
    write_slice(size / "s0004.dcm", _volume(12)[4, :18], position=(-20.0, 15.5, -292.0), index=4)
    assert map_image(size) is None
    with pytest.raises(ImageError, match="could not read image"):
        read_image(size)


def test_a_series_changed_after_mapping_is_an_error_not_a_mixture(tmp_path):
    folder = write_series(tmp_path / "s", _volume(12))
    mapped = map_image(folder)
    shutil.rmtree(folder)
    write_series(folder, _volume(10)[:, :20])
    with pytest.raises(ImageError, match="changed while it was read"):
        mapped.array[5]
    assert np.array_equal(mapped.array[0], _volume(12)[0].astype(mapped.array.dtype) - 1024)  # read when it was mapped


# ----------------------------------------------------------------------------------- raw NRRD
def _nrrd_volume(dtype=np.int16) -> sitk.Image:
    img = sitk.GetImageFromArray(np.random.default_rng(4).normal(-300, 400, (26, 37, 41)).astype(dtype))
    img.SetSpacing((0.7, 1.3, 2.5))
    img.SetOrigin((-12.5, 30.25, 101.0))
    c, s_ = np.cos(0.3), np.sin(0.3)
    img.SetDirection(tuple((np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]])).ravel()))
    return img


def _nrrd_header(img: sitk.Image, dtype: str, extra: str) -> str:
    d = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    dirs = " ".join("(" + ",".join(repr(float(v)) for v in d[:, a]) + ")" for a in range(3))
    return (
        f"NRRD0004\n# hand-written\ntype: {dtype}\ndimension: 3\nspace: left-posterior-superior\nsizes: {' '.join(map(str, img.GetSize()))}\n"
        f"space directions: {dirs}\nkinds: domain domain domain\nspace origin: ({','.join(repr(float(v)) for v in img.GetOrigin())})\n{extra}"
    )


@pytest.mark.parametrize("layout", ["nrrd", "nhdr", "big-endian-nrrd", "nhdr-byte-skip"])
def test_raw_nrrd_is_mapped_and_gives_the_whole_volume_patches(tmp_path, layout):
    img = _nrrd_volume(np.float32 if "big" in layout else np.int16)
    arr = sitk.GetArrayFromImage(img)
    if layout in ("nrrd", "nhdr"):
        path = tmp_path / f"raw.{layout}"
        sitk.WriteImage(img, str(path), useCompression=False)
    elif layout == "big-endian-nrrd":
        path = tmp_path / "be.nrrd"
        path.write_bytes(_nrrd_header(img, "float", "endian: big\nencoding: raw\n\n").encode() + arr.astype(">f4").tobytes())
    else:
        path = tmp_path / "skip.nhdr"
        path.write_text(_nrrd_header(img, "int16", "endian: little\nencoding: raw\nbyte skip: 7\ndata file: skip.data\n"))
        (tmp_path / "skip.data").write_bytes(b"x" * 7 + arr.astype("<i2").tobytes())
    mapped = map_image(path)
    assert isinstance(mapped, MappedVolume)
    whole = read_image(path)
    np.testing.assert_array_equal(np.asarray(mapped.array), sitk.GetArrayViewFromImage(whole))
    assert (mapped.GetSize(), mapped.GetSpacing(), mapped.GetOrigin(), mapped.GetDirection()) == (whole.GetSize(), whole.GetSpacing(), whole.GetOrigin(), whole.GetDirection())
    lesions = _lesions(whole)
    expected = cut_patches(str(path), lesions, PatchSpec(), images=_Whole(whole))
    _assert_same_patches(cut_patches(str(path), lesions, PatchSpec()), expected)


def test_nrrd_that_is_not_raw_is_read_whole(tmp_path):
    img = _nrrd_volume()
    sitk.WriteImage(img, str(tmp_path / "z.nrrd"), useCompression=True)
    sitk.WriteImage(img, str(tmp_path / "z.nhdr"), useCompression=True)
    arr = sitk.GetArrayFromImage(img)
    (tmp_path / "ascii.nrrd").write_text(_nrrd_header(img, "short", "encoding: ascii\n\n") + " ".join(map(str, arr.ravel())) + "\n")
    (tmp_path / "cut.nrrd").write_bytes(_nrrd_header(img, "short", "endian: little\nencoding: raw\n\n").encode() + arr.tobytes()[:1000])
    for name in ("z.nrrd", "z.nhdr", "ascii.nrrd", "cut.nrrd"):
        assert map_image(tmp_path / name) is None, name
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(tmp_path / "ascii.nrrd")), arr)


def test_features_from_a_series_equal_the_whole_reads(tmp_path, monkeypatch):
    import pandas as pd

    import lesionbench.benchmark.encoders.features as features
    import lesionbench.benchmark.patches.cutting as patches
    import lesionbench.benchmark.data.reading as reading

    folder = write_series(tmp_path / "s", _volume(50), iop=(0.8660254038, 0.5, 0.0, -0.5, 0.8660254038, 0.0))
    whole = read_image(folder)
    df = pd.DataFrame([{"lesion_id": f"L{i}", "image_path": str(folder), **les} for i, les in enumerate(_lesions(whole))])

    class Sampled:
        def __init__(self):
            self.meta = features.EncoderMeta(name="sampled", version="1", feature_dim=len(range(0, 50**3, 97)), patch=PatchSpec())
            self.batch_size = 2

        def encode(self, patches):
            return patches.reshape(len(patches), -1)[:, ::97].astype(np.float32)

    lazy = extract_features(df, Sampled(), cache=False, progress=False)
    monkeypatch.setattr(patches, "map_image", lambda p: None)
    monkeypatch.setattr(reading, "map_image", lambda p: None)
    decoded = _count_decodes(monkeypatch)
    np.testing.assert_array_equal(extract_features(df, Sampled(), cache=False, progress=False), lazy)
    assert len(decoded) == 50  # the comparison really was the whole read


@pytest.mark.parametrize("orientation", ["oblique", "flipped", "real-ct"])
def test_nsclc_style_and_real_ct_series_read_slice_by_slice_equal_the_whole_read(tmp_path, orientation, request):
    """The task tests' DICOM writer (reversed instance numbers, shuffled file names, a tilted or feet-first
    normal) and pyradiomics' real lung1 CT written as a series."""
    from nsclc_fixtures import write_ct, write_ct_volume

    if orientation == "real-ct":
        shared = request.getfixturevalue("shared_dir")
        image = sitk.ReadImage(str(shared / "data" / "real-ct" / "lung1_image.nrrd"))
        arr = sitk.GetArrayFromImage(image)
        write_ct_volume(tmp_path / "ct", "REAL-1", arr.astype(float), R=np.array(image.GetDirection()).reshape(3, 3),
                        origin=np.array(image.GetOrigin()), spacing=image.GetSpacing(), truth=arr > 0)  # fmt: skip
    else:
        write_ct(tmp_path / "ct", "P-1", orientation=orientation, shape=(24, 36, 30))
    folder = tmp_path / "ct"
    whole = read_image(folder)
    mapped = map_image(folder)
    assert isinstance(mapped, MappedVolume)
    assert (mapped.GetSize(), mapped.GetSpacing(), mapped.GetOrigin(), mapped.GetDirection()) == (whole.GetSize(), whole.GetSpacing(), whole.GetOrigin(), whole.GetDirection())
    lesions = _lesions(whole)
    _assert_same_patches(cut_patches(str(folder), lesions, PatchSpec()), cut_patches(str(folder), lesions, PatchSpec(), images=_Whole(whole)))


def test_a_series_declaring_more_voxels_than_an_image_may_take_is_refused_before_decoding(tmp_path, monkeypatch):
    """The slice headers' declared voxel bytes are summed before anything is decoded: over
    $LESIONBENCH_MAX_IMAGE_BYTES the whole read, the partial map and validate all refuse, naming the folder
    (a crafted compressed slice of a few kB may declare gigabytes)."""
    from lesionbench.benchmark.data.dicomslices import map_series, read_series, series_header_problem
    from lesionbench.benchmark.errors import ImageError

    folder = write_series(tmp_path / "s", _volume(12))
    whole = read_series(folder)
    declared = whole.GetNumberOfPixels() * whole.GetSizeOfPixelComponent()  # what the read will hold (ITK's output type)
    monkeypatch.setenv("LESIONBENCH_MAX_IMAGE_BYTES", str(declared))  # exactly the bound: read
    assert read_series(folder).GetSize() == (26, 22, 12) and series_header_problem(folder)[0] is None
    monkeypatch.setenv("LESIONBENCH_MAX_IMAGE_BYTES", str(declared - 1))
    with pytest.raises(ImageError, match=r"declares .* GiB of voxels in its slice headers \(largest slice 26 x 22 x 1\).*LESIONBENCH_MAX_IMAGE_BYTES"):
        read_series(folder)
    assert map_series(folder) is None  # left to the whole read, which refuses it
    assert str(folder) in series_header_problem(folder)[0]
