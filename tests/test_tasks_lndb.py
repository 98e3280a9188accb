"""LNDb: labels from tables in the published schema, prepare + validate on a download laid out like the real one
(``.mhd/.raw`` CTs in ``data*/``, the challenge CSVs in ``trainset_csv.zip``), and the Zenodo file checks, offline."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.cli import main
from lesionbench.tasks import _zenodo
from lesionbench.tasks.cohorts import lndb

ORIENTATIONS = {
    "identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "oblique": tuple(np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]).ravel()),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONBENCH_OFFLINE", "1")  # nothing here may reach Zenodo


def _write_ct(path: Path, voxels: list[tuple[int, int, int]], orientation: str) -> list[tuple[float, float, float]]:
    """A small CT as LNDb ships it (MetaImage, int16), bright at ``voxels`` (x, y, z); their physical points."""
    import SimpleITK as sitk

    arr = np.full((16, 20, 24), -800, dtype=np.int16)  # z, y, x
    for i, j, k in voxels:
        arr[k, j, i] = 1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 1.25))
    img.SetOrigin((-160.5, -300.25, -297.5))
    img.SetDirection(ORIENTATIONS[orientation])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return [img.TransformIndexToPhysicalPoint(v) for v in voxels]


#: (LNDbID, [(voxel, Nodule, Text, RadID, RadFindingID, per-reader malignancy)]); LNDb 55 has no image.
CASES = [
    (1, [((5, 6, 3), 1, 1.0, "1", "1", (1,)), ((12, 10, 8), 1, 11 / 3, "1,2", "2,1", (4, 5)), ((3, 3, 3), 0, 0.0, "2", "2", ())]),
    (2, [((8, 8, 8), 1, 7 / 3, "1,2,3", "1,1,1", (2, 3, 2)), ((15, 4, 10), 1, 5.0, "1", "2", (5,))]),
    (3, [((10, 12, 5), 1, 2.0, "1", "1", (1,)), ((4, 15, 12), 1, 4.5, "1,3", "2,1", (2, 3))]),
    (5, [((6, 6, 6), 1, 3.0, "1", "1", (3,)), ((18, 10, 9), 1, 5.0, "2", "1", (4,))]),
    (8, [((9, 14, 4), 1, 1.5, "1,2", "1,1", (1, 2)), ((20, 5, 11), 1, 4.0, "1", "2", (5,))]),
    (13, [((7, 7, 7), 1, 3.5, "1,2", "1,1", (4, 4)), ((14, 14, 12), 1, 1.0, "1", "2", ())]),
    (21, [((11, 3, 2), 1, 2.5, "1", "1", (1,)), ((16, 16, 13), 1, 5.0, "2", "1", (5,))]),
    (34, [((12, 12, 6), 1, 4.0, "1", "1", (2,)), ((5, 17, 9), 1, 1.0, "1", "2", (1,))]),
    (55, [((0, 0, 0), 1, 5.0, "1", "1", (5,))]),
]


def _write_raw(raw: Path) -> dict[str, tuple[float, float, float]]:
    """The LNDb layout: data0/ data1/ with LNDb-XXXX.mhd/.raw, trainset_csv.zip, chars_trainNodules.csv; seeds by lesion_id."""
    gt, per_reader, chars, seeds = [], [], [], {}
    for n, (lndb_id, findings) in enumerate(CASES):
        if lndb_id == 55:
            points = [(1.0, 2.0, 3.0)]
        else:
            orientation = ("identity", "flipped", "oblique")[n % 3]
            points = _write_ct(raw / f"data{n % 2}" / f"LNDb-{lndb_id:04d}.mhd", [f[0] for f in findings], orientation)
        for fid, ((_, nodule, text, rads, rad_fids, malig), (x, y, z)) in enumerate(zip(findings, points, strict=True), start=1):
            gt.append({"LNDbID": lndb_id, "RadID": rads, "RadFindingID": rad_fids, "FindingID": fid, "x": x, "y": y, "z": z,
                       "AgrLevel": len(rads.split(",")), "Nodule": nodule, "Volume": 0.0 if fid == 2 else 113.1, "Text": text})  # fmt: skip
            seeds[f"LNDb-{lndb_id:04d}_{fid:02d}"] = (x, y, z)
            for rad, rad_fid, m in zip(rads.split(","), rad_fids.split(","), malig):
                chars.append({"LNDbID": lndb_id, "RadID": int(rad), "FindingID": int(rad_fid), "calcification": 6, "internalStructure": 1,
                              "lobulation": 1, "malignancy": m, "margin": 5, "sphericity": 4, "spiculation": 1, "subtlety": 5})  # fmt: skip
            for rad, rad_fid in zip(rads.split(","), rad_fids.split(",")):
                per_reader.append({"LNDbID": lndb_id, "RadID": int(rad), "FindingID": int(rad_fid), "x": x, "y": y, "z": z,
                                   "Nodule": nodule, "Volume": 100.0, "Text": round(text)})  # fmt: skip
    buf = {}
    for name, rows in (("trainNodules_gt.csv", gt), ("trainNodules.csv", per_reader),
                       ("trainFleischner.csv", [{"LNDbID": c[0], "Fleischner": 0} for c in CASES])):  # fmt: skip
        s = io.StringIO()
        pd.DataFrame(rows).to_csv(s, index=False)
        buf[name] = s.getvalue()
    with zipfile.ZipFile(raw / "trainset_csv.zip", "w") as z:
        for name, text in buf.items():
            z.writestr(f"trainset_csv/{name}", text)
    pd.DataFrame(chars).to_csv(raw / "chars_trainNodules.csv", index=False)
    return seeds


def test_texture_classes_follow_the_challenge_thresholds() -> None:
    text = np.array([1, 2, 2.333, 7 / 3, 2.5, 3, 3.5, 3.667, 11 / 3, 4, 5, 0, np.nan])
    got = lndb.texture_class(text)
    np.testing.assert_array_equal(got[:11], [0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    assert np.isnan(got[11:]).all()


def test_malignancy_is_the_rint_of_the_readers_mean(tmp_path: Path) -> None:
    findings = pd.DataFrame({"LNDbID": [1, 1, 2, 3], "RadID": ["1,2", "1", "1,2,3", "2"], "RadFindingID": ["3,1", "1", "1,2,1", "4"],
                             "FindingID": [1, 2, 1, 1]})  # fmt: skip
    chars = pd.DataFrame({"LNDbID": [1, 1, 1, 2, 2, 2], "RadID": ["1", "2", "1", "1", "2", "3"], "FindingID": [3, 1, 1, 1, 2, 1],
                          "malignancy": [2, 3, 4, 5, 4, 4]})  # fmt: skip
    mean = lndb.reader_malignancy(findings, chars)
    assert mean.tolist()[:3] == [2.5, 4.0, pytest.approx(13 / 3)] and np.isnan(mean.iloc[3])
    assert np.rint(2.5) == 2  # halves to even: 2.5 is benign, as luna16 rounds LIDC's means
    # column names are matched case-insensitively (LNDb v4's allNods.csv writes "Malignancy"); a wrong table says what it found
    read = lndb._read(b"lndbid,RadID,FindingID,Malignancy\n2,1,1,5\n", "chars.csv", lndb.CHARS_COLUMNS)
    assert list(read.columns) == ["LNDbID", "RadID", "FindingID", "malignancy"]
    with pytest.raises(DataPreparationError, match=r"chars.csv has no column\(s\) \['malignancy'\] \(found \['LNDbID', 'RadID', 'FindingID', 'texture'\]\)"):
        lndb._read(b"LNDbID,RadID,FindingID,texture\n2,1,1,5\n", "chars.csv", lndb.CHARS_COLUMNS)


def test_lndb_texture_prepare_validates_with_lps_seeds_and_grouped_folds(tmp_path: Path) -> None:
    from lesionbench.benchmark.data.geometry import ImageGeometry
    from lesionbench.benchmark.data.reading import read_image

    raw, out = tmp_path / "raw", tmp_path / "lndb_texture"
    seeds = _write_raw(raw)
    assert main(["prepare", "lndb_texture", "--raw", str(raw), "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv")
    expected = {"LNDb-0001_01": 0, "LNDb-0001_02": 2, "LNDb-0002_01": 1, "LNDb-0002_02": 2, "LNDb-0003_01": 0, "LNDb-0003_02": 2,
                "LNDb-0005_01": 1, "LNDb-0005_02": 2, "LNDb-0008_01": 0, "LNDb-0008_02": 2, "LNDb-0013_01": 1, "LNDb-0013_02": 0,
                "LNDb-0021_01": 1, "LNDb-0021_02": 2, "LNDb-0034_01": 2, "LNDb-0034_02": 0}  # fmt: skip
    assert dict(zip(df["lesion_id"], df["label"])) == expected
    assert json.loads((out / "label_counts.json").read_text()) == {
        "n_lesions": 16, "n_patients": 8, "n_excluded": 2, "classes": {"GGO": 5, "part-solid": 4, "solid": 7}}  # fmt: skip
    assert pd.read_csv(out / "excluded.csv").set_index("lesion_id")["reason"].to_dict() == {
        "LNDb-0001_03": "not a nodule (Nodule 0: a non-nodule finding)", "LNDb-0055_01": "LNDb-0055.mhd is not under the raw folder"}  # fmt: skip
    # the seed is the CSV's world point unchanged, and in lesionbench's LPS reading it is the marked voxel
    for row in df.itertuples():
        np.testing.assert_allclose((row.coordX, row.coordY, row.coordZ), seeds[row.lesion_id], atol=1e-9)
        image = read_image(row.image_path)
        index = np.linalg.solve(ImageGeometry.of(image).index_to_lps, [row.coordX, row.coordY, row.coordZ, 1.0])[:3]
        i, j, k = np.rint(index).astype(int)
        assert image[int(i), int(j), int(k)] == 1000, row.lesion_id
    assert np.isnan(df.set_index("lesion_id").loc["LNDb-0001_02", "diameter_mm"])  # Volume 0: no diameter
    assert df.set_index("lesion_id").loc["LNDb-0001_01", "diameter_mm"] == pytest.approx(6.0, abs=1e-3)
    assert main(["validate", str(out / "manifest.csv"), "--task", "lndb_texture"]) == 0
    task = get_task("lndb_texture", data_dir=out, fold=2)
    m = task.manifest()
    assert task.meta.version == "1.0-fold2" and task.meta.class_names == ("GGO", "part-solid", "solid")
    assert set(m["split"]) == {"train", "val", "test"} and m.groupby("patient_id")["split"].nunique().max() == 1


def test_lndb_malignancy_prepare_and_refusals(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "lndb_malignancy"
    _write_raw(raw)
    assert main(["prepare", "lndb_malignancy", "--raw", str(raw), "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv").set_index("lesion_id")
    assert df["label"].to_dict() == {
        "LNDb-0001_01": 0, "LNDb-0001_02": 1, "LNDb-0002_01": 0, "LNDb-0002_02": 1, "LNDb-0003_01": 0, "LNDb-0003_02": 0, "LNDb-0005_02": 1,
        "LNDb-0008_01": 0, "LNDb-0008_02": 1, "LNDb-0013_01": 1, "LNDb-0021_01": 0, "LNDb-0021_02": 1, "LNDb-0034_01": 0, "LNDb-0034_02": 0}  # fmt: skip
    reasons = pd.read_csv(out / "excluded.csv").set_index("lesion_id")["reason"].to_dict()
    assert reasons["LNDb-0005_01"] == "malignancy 3 (indeterminate)"  # while (2, 3, 2) -> 2.33 -> 2 is benign, (2, 3) -> 2.5 -> 2 too
    assert reasons["LNDb-0013_02"] == "no reader's malignancy rating in chars_trainNodules.csv"
    assert main(["validate", str(out / "manifest.csv"), "--task", "lndb_malignancy"]) == 0
    # without the v4 file: one line naming it and its record
    (raw / "chars_trainNodules.csv").unlink()
    with pytest.raises(DataPreparationError, match=r"chars_trainNodules.csv is not under .*zenodo.org/records/8348419"):
        lndb.LndbMalignancy.prepare(raw, tmp_path / "again")
    # a seed outside its image (images that do not match the CSV) is refused, naming the lesion
    with zipfile.ZipFile(raw / "trainset_csv.zip") as z:
        gt = pd.read_csv(io.BytesIO(z.read("trainset_csv/trainNodules_gt.csv")))
    gt.loc[0, "x"] = 500.0
    gt.to_csv(raw / "trainNodules_gt.csv", index=False)  # an extracted copy is preferred to the zip
    with pytest.raises(DataPreparationError, match=r"1 LNDb seed\(s\) fall outside their image:\n  - LNDb-0001_01: seed \(500.0"):
        lndb.LndbTexture.prepare(raw, tmp_path / "outside")


# ------------------------------------------------------------------------------------------ downloads
def _record_json(folder: Path, files: dict[str, bytes], *, links: Path | None = None) -> dict:
    return {"id": 6613714, "files": [
        {"key": n, "size": len(b), "checksum": "md5:" + hashlib.md5(b).hexdigest(),
         "links": {"self": (links / n).as_uri() if links else f"https://zenodo.org/api/records/6613714/files/{n}/content"}}
        for n, b in files.items()]}  # fmt: skip


def _archives() -> dict[str, bytes]:
    return {n: f"{n} payload ".encode() * (3 + i) for i, n in enumerate(lndb.IMAGES.names)}


def test_download_verifies_offline_against_the_saved_record_and_names_a_corrupted_file(tmp_path: Path, capsys) -> None:
    raw, files = tmp_path / "raw", _archives()
    raw.mkdir()
    (raw / "zenodo-6613714.json").write_text(json.dumps(_record_json(raw, files)))
    for n, b in files.items():
        (raw / n).write_bytes(b)
    bad = bytearray(files["data3.rar"])
    bad[5] ^= 0xFF  # same size, one byte flipped
    (raw / "data3.rar").write_bytes(bytes(bad))
    assert main(["download", "lndb", "--out", str(raw)]) == 2
    err = capsys.readouterr().err
    assert "1 corrupted and 0 missing file(s) of Zenodo record 6613714" in err
    assert f"{raw / 'data3.rar'}: md5 {hashlib.md5(bytes(bad)).hexdigest()}, the record publishes {hashlib.md5(files['data3.rar']).hexdigest()}" in err
    assert "data2.rar" not in err
    (raw / "data3.rar").write_bytes(files["data3.rar"])
    (raw / "data5.rar").unlink()
    assert main(["download", "lndb", "--out", str(raw)]) == 2  # offline: a missing file is named with its address, never fetched
    err = capsys.readouterr().err
    assert "0 corrupted and 1 missing file(s)" in err and f"{raw / 'data5.rar'}: missing; download https://zenodo.org/" in err
    assert "LESIONBENCH_OFFLINE=1 forbids downloading" in err
    (raw / "data5.rar").write_bytes(files["data5.rar"])
    assert main(["download", "lndb", "--out", str(raw)]) == 0
    out = capsys.readouterr().out
    assert f"verified data0.rar, data1.rar, data2.rar, data3.rar, data4.rar, data5.rar, trainset_csv.zip against {raw / 'zenodo-6613714.json'}" in out
    assert "not checked: chars_trainNodules.csv" in out and "lesionbench prepare lndb_texture" in out
    assert set(json.loads((raw / _zenodo.VERIFIED_JSON).read_text())) == set(files)


def test_shipped_digests_check_offline_without_the_record(tmp_path: Path) -> None:
    files = {"a.rar": b"alpha", "b.zip": b"beta"}
    spec = _zenodo.RecordSpec("1", names=tuple(files), shipped={n: "sha256:" + hashlib.sha256(b).hexdigest() for n, b in files.items()})
    record = _zenodo.load_record(spec, tmp_path)
    assert record.source == "the digests lesionbench ships"
    (tmp_path / "a.rar").write_bytes(b"alpha")
    (tmp_path / "b.zip").write_bytes(b"bets")
    with pytest.raises(DataPreparationError, match=r"b.zip: sha256 [0-9a-f]{64}, the record publishes") as exc:
        _zenodo.verify(record, tmp_path)
    assert "a.rar" not in str(exc.value)
    assert len(lndb.IMAGES.shipped) == len(lndb.IMAGES.names)


def test_dry_run_lists_the_files_offline(capsys) -> None:
    assert main(["download", "lndb", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["data0.rar", "?", lndb.IMAGES.shipped["data0.rar"], lndb.IMAGES.file_url("data0.rar")]
    assert "trainset_csv.zip" in out and out.endswith("dry run, nothing downloaded.\n")
    assert main(["download", "lndb"]) == 2  # a real download needs a folder


def test_download_fetches_from_the_record_links_and_refuses_a_corrupted_transfer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LESIONBENCH_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src, raw, files = tmp_path / "zenodo", tmp_path / "raw", {"data0.rar": b"x" * 1000, "trainset_csv.zip": b"csv" * 10}
    src.mkdir()
    for n, b in files.items():
        (src / n).write_bytes(b)
    (src / "record.json").write_text(json.dumps(_record_json(src, files, links=src)))
    spec = _zenodo.RecordSpec("6613714", names=tuple(files))
    record = _zenodo.load_record(spec, raw, url=(src / "record.json").as_uri())
    assert (raw / "zenodo-6613714.json").is_file()  # kept for offline checks
    assert _zenodo.download(record, raw, progress=False) == [raw / n for n in files]
    assert (raw / "data0.rar").read_bytes() == files["data0.rar"]
    (raw / "data0.rar").unlink()
    (src / "data0.rar").write_bytes(b"y" * 1000)  # the source now differs from what the record publishes
    with pytest.raises(DataPreparationError, match=r"The download of data0.rar from file://.* is corrupted \(1,000 bytes, md5"):
        _zenodo.download(record, raw, progress=False)
    assert not (raw / "data0.rar").exists() and not (raw / "data0.rar.part").exists()
