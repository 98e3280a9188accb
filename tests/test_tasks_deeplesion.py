"""deeplesion_site: preparation from a tiny format-faithful DeepLesion folder, and the published task-1 lists."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.errors import ConfigurationError, DataPreparationError
from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.tasks import deeplesion as dl

#: Every column of DeepLesion's DL_info.csv, in the file's order.
REAL_COLUMNS = [
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
    "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
    "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
    "Patient_age", "Train_Val_Test",
]
SIZE = 64  # pixels per side (DeepLesion's are 512; the format is the same)
LESION_HU = 150
BACKGROUND_HU = -900


def _fmt(vals) -> str:
    return ", ".join(f"{v:g}" for v in vals)


def _row(patient, study, series, key, srange, spacing, centre, radius_px, ctype, tvt, cross=True):
    cx, cy = centre
    long_axis = [cx - radius_px, cy, cx + radius_px, cy]
    short_axis = [cx, cy - radius_px * 0.7, cx, cy + radius_px * 0.7]
    if not cross:  # short axis entirely beside the long axis
        short_axis = [cx + 2 * radius_px, cy - 2, cx + 2 * radius_px, cy + 2]
    return {
        "File_name": f"{patient:06d}_{study:02d}_{series:02d}_{key:03d}.png",
        "Patient_index": patient, "Study_index": study, "Series_ID": series, "Key_slice_index": key,
        "Measurement_coordinates": _fmt(long_axis + short_axis),
        "Bounding_boxes": _fmt([cx - radius_px - 5, cy - radius_px - 5, cx + radius_px + 5, cy + radius_px + 5]),
        "Lesion_diameters_Pixel_": _fmt([2 * radius_px, 1.4 * radius_px]),
        "Normalized_lesion_location": "0.5, 0.5, 0.5",
        "Coarse_lesion_type": ctype, "Possibly_noisy": 0,
        "Slice_range": _fmt(srange), "Spacing_mm_px_": _fmt(spacing), "Image_size": f"{SIZE}, {SIZE}",
        "DICOM_windows": "-175, 275", "Patient_gender": "F", "Patient_age": 60, "Train_Val_Test": tvt,
    }


# (row, planted lesion centre in pixels (x, y), slice) of the lesions that must be kept
KEPT = {
    0: ((40.3, 20.6), 13),  # set 2, patient 3
    1: ((15.2, 45.7), 12),  # set 3, patient 1
    2: ((50.5, 30.2), 3),  # set 3, patient 2, 2.5 mm slices
    5: ((22.0, 11.5), 14),  # set 3, patient 1, same volume as row 1
}


def make_raw(root: Path) -> Path:
    """A DeepLesion raw folder: DL_info.csv with the real columns and 16-bit PNGs with the 32768 offset."""
    rows = [
        _row(3, 1, 1, 13, (10, 16), (0.7, 0.7, 1.0), KEPT[0][0], 4, 5, 2),
        _row(1, 1, 2, 12, (9, 16), (0.8, 0.8, 1.25), KEPT[1][0], 4, 4, 3),
        _row(2, 1, 1, 3, (1, 5), (0.9, 0.9, 2.5), KEPT[2][0], 3, 1, 3),
        _row(4, 1, 1, 20, (18, 22), (0.7, 0.7, 5.0), (30, 30), 4, 6, 3),  # 5 mm slices: dropped
        _row(5, 1, 1, 7, (5, 9), (0.7, 0.7, 1.0), (30, 30), 4, -1, 1),  # unlabelled set 1: skipped
        _row(1, 1, 2, 14, (9, 16), (0.8, 0.8, 1.25), KEPT[5][0], 3, 8, 3),
        _row(2, 1, 1, 2, (1, 5), (0.9, 0.9, 2.5), (20, 20), 3, 2, 3, cross=False),  # axes do not cross: dropped
    ]
    df = pd.DataFrame(rows, columns=REAL_COLUMNS)
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "DL_info.csv", index=False)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i, r in df.iterrows():
        if r.Train_Val_Test == 1 or i == 3:
            continue  # those series were not downloaded; the task does not need them
        folder = root / "Images_png" / r.File_name[: -len("_000.png")]
        folder.mkdir(parents=True, exist_ok=True)
        start, end = (int(v) for v in r.Slice_range.split(","))
        for s in range(start, end + 1):
            path = folder / f"{s:03d}.png"
            hu = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.int32) - 32768 if path.exists() else np.full((SIZE, SIZE), BACKGROUND_HU)
            for j, ((cx, cy), key) in KEPT.items():
                if df.File_name[j][: -len("_000.png")] == folder.name and abs(s - key) <= 1:
                    hu[(xx - cx) ** 2 + (yy - cy) ** 2 <= 9] = LESION_HU + 10 * j
            sitk.WriteImage(sitk.GetImageFromArray((hu + 32768).astype(np.uint16)), str(path))
    return root


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_raw(tmp_path / "raw")


def test_png_fixture_is_16_bit_with_offset(raw: Path) -> None:
    img = sitk.ReadImage(str(raw / "Images_png" / "000003_01_01" / "013.png"))
    assert img.GetPixelID() == sitk.sitkUInt16
    assert sitk.GetArrayFromImage(img).min() == BACKGROUND_HU + 32768


@pytest.mark.parametrize("split", ["grouped", "fmcib"])
def test_prepare_seeds_land_on_planted_lesions(raw: Path, tmp_path: Path, split: str) -> None:
    out = tmp_path / "out"
    path = dl.DeepLesionSite.prepare(raw=raw, out=out, split=split)
    task = get_task("deeplesion_site", data_dir=out)
    assert task.meta.version == f"1.0+{split}" and task.meta.published_split == (split == "fmcib")
    m = task.manifest()
    assert sorted(m["dl_info_row"]) == sorted(KEPT)
    assert m.set_index("dl_info_row").loc[[0, 1, 2, 5], "label"].tolist() == [4, 3, 0, 7]
    assert m.loc[m.dl_split == 2, "split"].eq("train").all()
    assert set(m.loc[m.dl_split == 3, "split"]) == {"val", "test"}
    for r in m.itertuples():
        img = sitk.ReadImage(r.image_path)
        assert img.GetPixelID() == sitk.sitkInt16
        idx = img.TransformPhysicalPointToIndex((r.coordX, r.coordY, r.coordZ))
        assert img[idx] == LESION_HU + 10 * r.dl_info_row, (r.lesion_id, idx)
        # the seed is the RECIST crossing on the key slice, at the planted centre (x = column, y = row)
        (cx, cy), key = KEPT[r.dl_info_row]
        cont = img.TransformPhysicalPointToContinuousIndex((r.coordX, r.coordY, r.coordZ))
        start = int(re.search(r"_(\d{3})-\d{3}\.nii\.gz$", r.image_path).group(1))
        np.testing.assert_allclose(cont, (cx, cy, key - start), atol=1e-3)
        # swapping x and y (the published files' defect) lands off the lesion
        assert img[int(round(cy)), int(round(cx)), key - start] == BACKGROUND_HU
    # geometry of the written volumes: spacing from Spacing_mm_px_, slices stacked head to feet
    img = sitk.ReadImage(str(out / "images" / "000002_01_01_001-005.nii.gz"))
    np.testing.assert_allclose(img.GetSpacing(), (0.9, 0.9, 2.5), rtol=1e-6)
    assert img.GetSize() == (SIZE, SIZE, 5)
    np.testing.assert_allclose(img.GetDirection(), dl.DIRECTION, atol=1e-6)
    assert (out / "task.json").is_file() and path == out / "manifest.csv"


def test_prepare_is_idempotent_and_resumable(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dl.DeepLesionSite.prepare(raw=raw, out=out)
    vols = sorted((out / "images").glob("*.nii.gz"))
    assert len(vols) == 3 and not list((out / "images").glob(".*"))  # no temp files left behind
    mtimes = {p: p.stat().st_mtime_ns for p in vols}
    first = pd.read_csv(out / "manifest.csv")
    os.utime(vols[0], ns=(1, 1))  # a marker: a rewrite would change it
    vols[1].unlink()  # resumable: only this one is converted again
    dl.DeepLesionSite.prepare(raw=raw, out=out)
    assert vols[0].stat().st_mtime_ns == 1
    assert vols[2].stat().st_mtime_ns == mtimes[vols[2]]
    assert vols[1].is_file()
    pd.testing.assert_frame_equal(pd.read_csv(out / "manifest.csv"), first)
    # converted volumes no longer need their PNGs
    for p in (raw / "Images_png" / "000003_01_01").glob("*.png"):
        p.unlink()
    dl.DeepLesionSite.prepare(raw=raw, out=out)


def test_variant_is_read_from_prepared_folder(raw: Path, tmp_path: Path) -> None:
    dl.DeepLesionSite.prepare(raw=raw, out=tmp_path / "f", split="fmcib")
    assert get_task("deeplesion_site", data_dir=tmp_path / "f").meta.version == "1.0+fmcib"
    with pytest.raises(ConfigurationError, match="prepared with split variant 'fmcib'"):
        get_task("deeplesion_site", data_dir=tmp_path / "f", split="grouped")
    assert dl.DeepLesionSite.meta.version == "1.0+grouped"
    with pytest.raises(ConfigurationError, match="Unknown split variant"):
        dl.DeepLesionSite.prepare(raw=raw, out=tmp_path / "x", split="random")


def test_missing_raw_files_say_what_to_download(raw: Path, tmp_path: Path) -> None:
    with pytest.raises(DataPreparationError, match=r"DL_info\.csv.*nihcc\.app\.box\.com"):
        dl.DeepLesionSite.prepare(raw=tmp_path / "empty", out=tmp_path / "o")
    with pytest.raises(DataPreparationError, match="--raw"):
        dl.DeepLesionSite.prepare(raw=None, out=tmp_path / "o")
    (raw / "Images_png" / "000001_01_02" / "011.png").unlink()
    with pytest.raises(DataPreparationError, match=r"1 DeepLesion PNG slice.*000001_01_02/011\.png.*Images_png_\*\.zip"):
        dl.DeepLesionSite.prepare(raw=raw, out=tmp_path / "o")


def test_malformed_dl_info_is_reported_by_row(raw: Path, tmp_path: Path) -> None:
    df = pd.read_csv(raw / "DL_info.csv")
    df.loc[1, "Spacing_mm_px_"] = "0.8, 0.8"
    df.loc[2, "Measurement_coordinates"] = "1, 2, x"
    df.to_csv(raw / "DL_info.csv", index=False)
    with pytest.raises(DataPreparationError, match=r"(?s)2 malformed row.*row 2 .*Spacing_mm_px_.*row 3 .*Measurement_coordinates"):
        dl.DeepLesionSite.prepare(raw=raw, out=tmp_path / "o")
    df.drop(columns=["Slice_range"]).to_csv(raw / "DL_info.csv", index=False)
    with pytest.raises(DataPreparationError, match=r"lacks the DeepLesion column\(s\) \['Slice_range'\]"):
        dl.DeepLesionSite.prepare(raw=raw, out=tmp_path / "o")


def test_8_bit_png_is_refused(raw: Path, tmp_path: Path) -> None:
    p = raw / "Images_png" / "000002_01_01" / "002.png"
    sitk.WriteImage(sitk.Image([SIZE, SIZE], sitk.sitkUInt8), str(p))
    with pytest.raises(DataPreparationError, match="not a 16-bit"):
        dl.DeepLesionSite.prepare(raw=raw, out=tmp_path / "o")


def test_recist_intersection() -> None:
    assert dl.recist_intersection([0, 0, 10, 10, 0, 10, 10, 0]) == pytest.approx((5.0, 5.0))
    assert dl.recist_intersection([0, 0, 10, 0, 0, 1, 10, 1]) is None  # parallel
    assert dl.recist_intersection([0, 0, 10, 0, 20, -5, 20, 5]) is None  # crossing point beyond the long axis


# ------------------------------------------------------------------ against the published FMCIB lists
def _published(shared_dir: Path) -> dict[str, pd.DataFrame]:
    d = shared_dir / "data" / "fmcib-annotations"
    return {s: pd.read_csv(d / f"deeplesion_task1_{s}.csv") for s in ("train", "val", "test")} | {
        "pretrain": pd.read_csv(d / "deeplesion_pretrain.csv")
    }


def _dl_info_from_published(pub: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rebuild DL_info.csv rows from the DeepLesion columns the published files carry.

    Each published row goes back to its DL_info row number ("Unnamed: 0"): patient, study, series and
    Slice_range from Volume_fn, Key_slice_index from the published z rule (centroid_z = end - key + 1),
    RECIST axes crossing at the published centroid, spacing, label + 1, Train_Val_Test. Every other row
    number gets a lesion the task must drop (5-mm slices, axes that do not cross, unlabelled set 3).
    """
    allrows = pd.concat(list(pub.values()), ignore_index=True).set_index("Unnamed: 0").sort_index()
    assert allrows.index.is_unique
    n = int(allrows.index.max()) + 10
    m = allrows["Volume_fn"].str.extract(r"^(\d+)_(\d+)_(\d+)_(\d+)-(\d+)\.nii\.gz$").astype(int)
    m.columns = ["p", "st", "se", "start", "end"]
    key = (m["end"] - allrows["centroid_z"] + 1).astype(int)
    cx, cy = allrows["centroid_x"], allrows["centroid_y"]
    half = allrows["lesion_diameters_x"] / allrows["spacing_x"] / 2
    fmt = lambda *cols: [", ".join(f"{v:.10g}" for v in vals) for vals in zip(*cols)]  # noqa: E731
    real = pd.DataFrame(
        {
            "File_name": [f"{p:06d}_{st:02d}_{se:02d}_{k:03d}.png" for p, st, se, k in zip(m.p, m.st, m.se, key)],
            "Patient_index": m.p, "Study_index": m.st, "Series_ID": m.se, "Key_slice_index": key,
            "Measurement_coordinates": fmt(cx - half, cy, cx + half, cy, cx, cy - half / 2, cx, cy + half / 2),
            "Bounding_boxes": allrows["bbox"].str.strip("[]"),
            "Lesion_diameters_Pixel_": fmt(allrows["lesion_diameters_x"] / allrows["spacing_x"], allrows["lesion_diameters_y"] / allrows["spacing_y"]),
            "Normalized_lesion_location": "0.5, 0.5, 0.5",
            "Coarse_lesion_type": np.where(allrows["Train_Val_Test"] == 1, -1, allrows["Coarse_lesion_type"] + 1),
            "Possibly_noisy": allrows["Possibly_noisy"],
            "Slice_range": fmt(m.start, m.end), "Spacing_mm_px_": fmt(allrows.spacing_x, allrows.spacing_y, allrows.spacing_z),
            "Image_size": "512, 512", "DICOM_windows": allrows["DICOM_windows"], "Patient_gender": allrows["Patient_gender"],
            "Patient_age": allrows["Patient_age"], "Train_Val_Test": allrows["Train_Val_Test"],
        },
        index=allrows.index,
    )
    gaps = np.setdiff1d(np.arange(n), real.index)
    kind = gaps % 3
    decoy = pd.DataFrame(
        {
            "File_name": [f"{9000 + g % 500:06d}_01_01_050.png" for g in gaps],
            "Patient_index": 9000 + gaps % 500, "Study_index": 1, "Series_ID": 1, "Key_slice_index": 50,
            # kind 1: RECIST short axis beside the long axis (no crossing); else a proper cross
            "Measurement_coordinates": np.where(kind == 1, "100, 100, 120, 100, 130, 90, 130, 110", "100, 100, 120, 100, 110, 90, 110, 110"),
            "Bounding_boxes": "95, 85, 135, 115", "Lesion_diameters_Pixel_": "20, 20", "Normalized_lesion_location": "0.5, 0.5, 0.5",
            # kind 2: unlabelled lesion in set 3
            "Coarse_lesion_type": np.where(kind == 2, -1, 1 + gaps % 8), "Possibly_noisy": 0, "Slice_range": "40, 60",
            # kind 0: 5-mm slices
            "Spacing_mm_px_": np.where(kind == 0, "0.7, 0.7, 5", "0.7, 0.7, 1"),
            "Image_size": "512, 512", "DICOM_windows": "-175, 275", "Patient_gender": "M", "Patient_age": 50,
            "Train_Val_Test": 2 + gaps % 2,
        },
        index=gaps,
    )
    return pd.concat([real, decoy]).sort_index()[REAL_COLUMNS]


def test_selection_reproduces_published_task1_lists(shared_dir: Path) -> None:
    pub = _published(shared_dir)
    lesions = dl.select_lesions(_dl_info_from_published(pub))
    assert len(lesions) == 2610 + 1220 + 1221
    lesions["split"] = dl.assign_split(lesions, "fmcib")
    by_row = lesions.set_index("dl_row")
    for s in ("train", "val", "test"):
        rows = pub[s]["Unnamed: 0"].to_numpy()
        assert set(by_row.index[by_row["split"] == s]) == set(rows), s
        np.testing.assert_array_equal(by_row.loc[rows, "label"], pub[s]["Coarse_lesion_type"])
        # the seed is the RECIST crossing; the published coordY holds its x (the documented x/y swap)
        x_mm = by_row.loc[rows, "seed_x_px"].to_numpy() * by_row.loc[rows, "spacing_x"].to_numpy()
        gap = x_mm - pub[s]["coordY"].to_numpy()
        assert ((gap > -1e-4) & (gap < pub[s]["spacing_x"].to_numpy() + 1e-4)).all()
    assert len(set(by_row.index[by_row.split == "val"].map(by_row.patient_id)) & set(by_row.index[by_row.split == "test"].map(by_row.patient_id))) == 291
    assert [by_row["split"].eq(s).sum() for s in ("train", "val", "test")] == [2610, 1220, 1221]
    assert by_row.loc[by_row.split == "train", "patient_id"].nunique() == 553
    # the grouped variant: same lesions, val/test disjoint by patient, about half each, classes balanced
    grouped = dl.assign_split(lesions, "grouped")
    val_p = set(lesions.patient_id[grouped == "val"])
    test_p = set(lesions.patient_id[grouped == "test"])
    assert not val_p & test_p
    assert abs((grouped == "val").sum() - (grouped == "test").sum()) < 150
    assert (grouped[lesions.dl_split.to_numpy() == 2] == "train").all()
    np.testing.assert_array_equal(dl.assign_split(lesions, "grouped"), grouped)  # seeded


def test_cli_prepare_in_parallel(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lesionbench.cli import main

    out = tmp_path / "cli"
    assert main(["-q", "prepare", "deeplesion_site", "--raw", str(raw), "--out", str(out), "--split", "fmcib", "--workers", "2"]) == 0
    assert "manifest.csv" in capsys.readouterr().out
    assert len(list((out / "images").glob("*.nii.gz"))) == 3
    assert main(["validate", str(out / "manifest.csv"), "--task", "deeplesion_site"]) == 0
    assert main(["-q", "prepare", "deeplesion_site", "--raw", str(raw), "--out", str(out), "--labels-only"]) == 2
