"""NSCLC survival tasks (LUNG1, RADIO, cross-cohort): DICOM conversion, labels, protocol, prepare end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")
sitk = pytest.importorskip("SimpleITK")

from nsclc_fixtures import ORIENTATIONS, strip_source_references, write_ct, write_rtstruct, write_seg  # noqa: E402

from lesionbench.benchmark.scoring.endpoints import two_year_label  # noqa: E402
from lesionbench.benchmark.errors import ConfigurationError, DataPreparationError, ManifestError  # noqa: E402
from lesionbench.benchmark.encoders.plugins import TASKS, get_task  # noqa: E402
from lesionbench.benchmark.types import TaskKind  # noqa: E402
from lesionbench.cli import main  # noqa: E402
from lesionbench.tasks import _dicom  # noqa: E402
from lesionbench.tasks._nsclc import DOWNLOAD_MANIFEST, assign_folds, compare_label_variants, split_for_fold  # noqa: E402
from lesionbench.tasks.lung1 import CLINICAL as LUNG1_CLINICAL  # noqa: E402
from lesionbench.tasks.lung1 import lung1_outcomes  # noqa: E402
from lesionbench.tasks.radio import CLINICAL as RADIO_CLINICAL  # noqa: E402
from lesionbench.tasks.radio import radio_outcomes  # noqa: E402


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _truth_centroid(study) -> np.ndarray:
    k, j, i = np.argwhere(study.truth).mean(axis=0)
    sx, sy, sz = study.spacing
    return study.origin + study.R @ np.array([i * sx, j * sy, k * sz])


# ------------------------------------------------------------------------------ DICOM conversion
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_ct_rtstruct_and_seg_land_on_the_planted_tumour(tmp_path: Path, orientation: str) -> None:
    study = write_ct(tmp_path / "ct", "LUNG1-900", orientation=orientation)
    write_rtstruct(study, tmp_path / "rt.dcm")
    write_seg(study, tmp_path / "seg.dcm")
    index = _dicom.scan_dicom(tmp_path, progress=False)
    assert index["Modality"].value_counts().to_dict() == {"CT": 7, "RTSTRUCT": 1, "SEG": 1}

    ct = _dicom.read_ct_series(index[index["Modality"] == "CT"])
    img = ct.image
    assert img.GetSize() == (30, 36, 7)
    np.testing.assert_allclose(img.GetSpacing(), study.spacing, atol=1e-5)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), study.R, atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), study.origin, atol=1e-4)
    assert img.GetPixelID() == sitk.sitkInt16
    hu = sitk.GetArrayFromImage(img)
    assert hu[study.truth].mean() > 0 > -700 > hu[~study.truth].mean()  # rescaled to HU, tumour where planted

    truth_centroid = _truth_centroid(study)
    for mask in (_dicom.rtstruct_mask(tmp_path / "rt.dcm", img, "gtv-1"), _dicom.seg_mask(tmp_path / "seg.dcm", ct)):
        arr = sitk.GetArrayFromImage(mask).astype(bool)
        assert _dice(arr, study.truth) > 0.95
        geom = _dicom.mask_geometry(mask)
        np.testing.assert_allclose(geom.centroid_lps, truth_centroid, atol=0.15)
        np.testing.assert_allclose(geom.centroid_lps, study.centre, atol=0.5)
        assert geom.diameter_mm == pytest.approx(2 * study.radius, rel=0.1)

    # a FRACTIONAL SEG is cut at occupancy 0.5
    write_seg(study, tmp_path / "fractional.dcm", fractional=True)
    arr = sitk.GetArrayFromImage(_dicom.seg_mask(tmp_path / "fractional.dcm", ct)).astype(bool)
    assert np.array_equal(arr, study.truth)

    # a SEG that references no source instance is mapped by its frame positions instead
    strip_source_references(tmp_path / "seg.dcm")
    arr = sitk.GetArrayFromImage(_dicom.seg_mask(tmp_path / "seg.dcm", ct)).astype(bool)
    assert np.array_equal(arr, study.truth)


def test_rtstruct_errors_name_the_problem(tmp_path: Path) -> None:
    study = write_ct(tmp_path / "ct", "LUNG1-901")
    write_rtstruct(study, tmp_path / "rt.dcm", roi_name="GTV-2")
    index = _dicom.scan_dicom(tmp_path, progress=False)
    ct = _dicom.read_ct_series(index[index["Modality"] == "CT"])
    with pytest.raises(DataPreparationError, match=r"no ROI named 'GTV-1'.*GTV-2"):
        _dicom.rtstruct_mask(tmp_path / "rt.dcm", ct.image, "GTV-1")
    # a CT with a slice missing is not a regular grid and is refused, not silently stretched
    ct_rows = index[index["Modality"] == "CT"]
    middle = study.datasets[3].SOPInstanceUID
    gappy = ct_rows[ct_rows["SOPInstanceUID"] != middle]
    with pytest.raises(DataPreparationError, match="regular grid"):
        _dicom.read_ct_series(gappy)


def test_real_pydicom_ct_slice_opens() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    index = _dicom.scan_dicom(Path(path).parent, progress=False)
    row = index[index["path"] == str(path)]
    assert row["Modality"].tolist() == ["CT"]
    img = sitk.ReadImage(str(path))
    ds = pydicom.dcmread(path)
    assert img.GetSize()[:2] == (ds.Columns, ds.Rows)
    np.testing.assert_allclose(img.GetOrigin(), [float(v) for v in ds.ImagePositionPatient], atol=1e-4)
    hu = sitk.GetArrayFromImage(img)
    raw = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(hu[0], raw)


# ---------------------------------------------------------------------------------------- labels
def test_two_year_rules_on_crafted_rows() -> None:
    rows = pd.DataFrame(
        {   # censored <=730 | death <=730 | death >730 | alive >730 | death on day 730 | censored on 730
            "time": [400.0, 500.0, 900.0, 1500.0, 730.0, 730.0],
            "event": [0, 1, 1, 0, 1, 0],
        }
    )
    y = two_year_label(rows["time"], rows["event"])
    np.testing.assert_array_equal(y, [np.nan, 1.0, 0.0, 0.0, 1.0, 0.0])  # censored on day 730: followed two years alive
    # LUNG1's published rule and its disagreement
    lung1 = lung1_outcomes(pd.DataFrame({"PatientID": list("abcdef"), "Survival.time": rows["time"].astype(int).astype(str), "deadstatus.event": rows["event"].astype(str)}))
    np.testing.assert_array_equal(lung1["label_fmcib"], [0, 0, 1, 1, 1, 1])
    cmp = compare_label_variants(lung1)
    assert cmp["n_2y_excluded"] == 1 and cmp["n_2y_known"] == 5
    assert cmp["reasons"]["died on or before day 730 but labelled survivor by fmcib"] == 1
    # RADIO: vital status; dates give the time
    radio = radio_outcomes(
        pd.DataFrame(
            {
                "Case ID": ["R1", "R2", "R3", "R4"],
                "Survival Status": ["Alive", "Dead", "Dead", "unknown"],
                "Date of Last Known Alive": ["3/1/2001", "1/10/2000", "1/1/2004", "1/1/2003"],
                "CT Date": ["1/1/2000", "1/1/2000", "1/1/2000", "1/1/2000"],
            }
        )
    )
    assert radio["time"].tolist()[:3] == [425.0, 9.0, 1461.0]
    assert radio["event"].tolist()[:3] == [0.0, 1.0, 1.0] and np.isnan(radio["event"].iloc[3])
    assert radio["label_fmcib"].tolist()[:3] == [1.0, 0.0, 0.0]
    cmp = compare_label_variants(radio.iloc[:3])
    assert cmp["n_2y_excluded"] == 1 and cmp["n_differ"] == 2


def test_fmcib_variant_reproduces_the_published_labels(shared_dir: Path) -> None:
    ann = shared_dir / "data" / "fmcib-annotations"
    lung1_table = LUNG1_CLINICAL.read(ann / "lung1_annotations.csv")
    lung1 = lung1_outcomes(lung1_table)
    np.testing.assert_array_equal(lung1["label_fmcib"], lung1_table["survival"].astype(float))
    np.testing.assert_array_equal(lung1["time"], lung1_table["Survival.time"].astype(float))
    cmp = compare_label_variants(lung1)
    assert (cmp["n_patients"], cmp["n_2y_excluded"], cmp["n_differ"]) == (421, 1, 1)

    radio_table = RADIO_CLINICAL.read(ann / "radio_nsclc_radiogenomics.csv")
    radio = radio_outcomes(radio_table)
    np.testing.assert_array_equal(radio["label_fmcib"], (radio_table["survival"] == "True").astype(float))
    np.testing.assert_array_equal(radio["event"], radio_table["deadstatus.event"].astype(float))
    np.testing.assert_array_equal(radio["time"], radio_table["Survival.time"].astype(float))
    cmp = compare_label_variants(radio)
    assert (cmp["n_patients"], cmp["n_2y_excluded"], cmp["n_differ"]) == (144, 11, 34)
    assert sum(cmp["reasons"].values()) == cmp["n_differ"]


def test_clinical_table_is_checked_on_use(tmp_path: Path) -> None:
    bad = tmp_path / "NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv"
    bad.write_text("PatientID,Survival.time\nLUNG1-001,100\n")
    with pytest.raises(DataPreparationError, match=r"lacks column\(s\) \['deadstatus.event'\]"):
        LUNG1_CLINICAL.read(LUNG1_CLINICAL.locate(tmp_path, None))
    with pytest.raises(DataPreparationError, match="NSCLCR01Radiogenomic_DATA_LABELS.*wp-content.*lesionbench download radio"):
        RADIO_CLINICAL.locate(tmp_path, None)


def test_folds_are_grouped_stratified_and_seeded() -> None:
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(50)], "event": [1] * 35 + [0] * 15})
    folds = assign_folds(df)
    assert np.array_equal(folds, assign_folds(df)) and set(folds) == set(range(5))
    assert all(df.loc[folds == k, "event"].sum() == 7 for k in range(5))  # stratified by event
    split = split_for_fold(folds, 4)
    assert set(df.loc[split == "test"].index) == set(np.flatnonzero(folds == 4))
    assert set(df.loc[split == "val"].index) == set(np.flatnonzero(folds == 0))
    with pytest.raises(ConfigurationError, match="out of range"):
        split_for_fold(folds, 5)


# ---------------------------------------------------------------------------- prepare end to end
def _lung1_raw(raw: Path, n: int = 6) -> dict[str, object]:
    studies = {}
    for i in range(n):
        pid = f"LUNG1-{i + 1:03d}"
        st = write_ct(raw / pid / "ct", pid, orientation="oblique" if i % 2 else "flipped", radius=5.5 + 0.5 * i)
        write_rtstruct(st, raw / pid / "rtstruct.dcm")
        studies[pid] = st
    times = [100, 2000, 800, 300, 1500, 650]
    events = [1, 0, 1, 1, 1, 0]
    pd.DataFrame(
        {"PatientID": [*studies, "LUNG1-099"], "Survival.time": [*times[:n], 50], "deadstatus.event": [*events[:n], 1], "age": 70}
    ).to_csv(raw / "NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv", index=False)
    return studies


def test_lung1_prepare_end_to_end_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data" / "lung1_survival"
    studies = _lung1_raw(raw)
    assert main(["prepare", "lung1_survival", "--raw", str(raw), "--out", str(out), "--workers", "2"]) == 0

    df = pd.read_csv(out / "manifest.csv")
    assert len(df) == 6 and df["lesion_id"].tolist() == sorted(studies)
    for _, row in df.iterrows():
        st = studies[row["patient_id"]]
        img = sitk.ReadImage(str(out / row["image_path"]))
        mask = sitk.ReadImage(str(out / row["mask_path"]))
        np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), st.R, atol=1e-6)
        assert mask.GetSize() == img.GetSize() and np.allclose(mask.GetOrigin(), img.GetOrigin())
        assert _dice(sitk.GetArrayFromImage(mask).astype(bool), st.truth) > 0.95
        np.testing.assert_allclose(row[["coordX", "coordY", "coordZ"]].to_numpy(float), _truth_centroid(st), atol=0.15)
        assert row["diameter_mm"] == pytest.approx(2 * st.radius, rel=0.1)
    assert df["time"].tolist() == [100, 2000, 800, 300, 1500, 650]
    np.testing.assert_array_equal(df["label_fmcib"], [0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(df["label_2y"], [1, 0, 0, 1, 0, np.nan])
    excluded = pd.read_csv(out / "excluded.csv")
    assert excluded["patient_id"].tolist() == ["LUNG1-099"]
    comparison = json.loads((out / "label_comparison.json").read_text())
    assert comparison["n_2y_excluded"] == 1

    task = get_task("lung1_survival", data_dir=out, fold=2)
    m = task.manifest()
    assert task.meta.version == "1.0-fold2" and task.meta.kind == TaskKind.SURVIVAL
    assert set(m["split"]) == {"train", "val", "test"} and Path(m["image_path"].iloc[0]).is_absolute()
    fm = get_task("lung1_survival", data_dir=out, label_variant="fmcib")
    assert fm.meta.kind == TaskKind.BINARY and fm.meta.version == "1.0-fold0-fmcib" and fm.meta.version != task.meta.version
    np.testing.assert_array_equal(fm.manifest()["label"], df["label_fmcib"])

    # idempotent and resumable: a second run converts nothing and writes the same manifest
    before = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    monkeypatch.setattr(_dicom, "read_ct_series", lambda *a, **k: pytest.fail("re-converted a finished patient"))
    assert main(["prepare", "lung1_survival", "--raw", str(raw), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "manifest.csv"), df)


def test_radio_prepare_from_seg_and_cross_cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, root = tmp_path / "raw", tmp_path / "data"
    studies = {}
    for i in range(5):
        pid = f"R01-{i + 1:03d}"
        st = write_ct(raw / pid / "ct", pid, orientation="oblique" if i % 2 else "flipped")
        write_seg(st, raw / pid / "seg.dcm", label=["Heart", "Segmentation", "Neoplasm", "tumour", "x"][i])
        studies[pid] = st
    pd.DataFrame(
        {
            "Case ID": list(studies),
            "Survival Status": ["Alive", "Dead", "Dead", "Alive", "Alive"],
            "Date of Last Known Alive": ["1/1/2004", "6/1/2000", "1/1/2004", "6/1/2000", "1/1/2003"],
            "Date of Death": ["", "7/1/2000", "1/1/2004", "", ""],
            "CT Date": ["1/1/2000"] * 5,
        }
    ).to_csv(raw / "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv", index=False)
    # IDC also holds AI-made SEGs; the series list `lesionbench download` writes keeps prepare to the chosen ones
    ai = write_seg(studies["R01-002"], raw / "R01-002" / "ai_seg.dcm", label="Lung")
    index = _dicom.scan_dicom(raw, progress=False)
    chosen = index.loc[index["path"] != str(ai), ["SeriesInstanceUID"]].drop_duplicates()
    chosen.to_csv(raw / DOWNLOAD_MANIFEST, index=False)
    assert main(["prepare", "radio_survival", "--raw", str(raw), "--out", str(root / "radio_survival")]) == 0
    df = pd.read_csv(root / "radio_survival" / "manifest.csv")
    assert df["patient_id"].tolist() == list(studies)
    assert pd.read_csv(root / "radio_survival" / "excluded.csv").empty
    # without that list, two SEGs for one patient are ambiguous: the patient is excluded, saying why
    (raw / DOWNLOAD_MANIFEST).unlink()
    assert main(["prepare", "radio_survival", "--raw", str(raw), "--out", str(tmp_path / "again")]) == 0
    excluded = pd.read_csv(tmp_path / "again" / "excluded.csv")
    assert excluded["patient_id"].tolist() == ["R01-002"] and "2 candidate SEG files" in excluded["reason"].iloc[0]
    for _, row in df.iterrows():
        st = studies[row["patient_id"]]
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "radio_survival" / row["mask_path"]))).astype(bool)
        assert np.array_equal(mask, st.truth)
        np.testing.assert_allclose(row[["coordX", "coordY", "coordZ"]].to_numpy(float), _truth_centroid(st), atol=1e-3)
    np.testing.assert_array_equal(df["event"], [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(df["time"], [1461, 152, 1461, 152, 1096])
    np.testing.assert_array_equal(df["label_fmcib"], [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(df["label_2y"], [0, 1, 0, np.nan, 0])

    lung_raw = tmp_path / "lung_raw"
    _lung1_raw(lung_raw)
    assert main(["prepare", "lung1_survival", "--raw", str(lung_raw), "--out", str(root / "lung1_survival")]) == 0
    monkeypatch.setenv("LESIONBENCH_DATA", str(root))
    cross = get_task("lung1_to_radio")
    m = cross.manifest()
    assert set(m.loc[m["split"] == "test", "patient_id"]) == set(studies)
    assert set(m.loc[m["split"] != "test", "cohort"]) == {"lung1_survival"} and (m["split"] == "val").sum() >= 1
    rev = get_task("radio_to_lung1", label_variant="fmcib").manifest()
    assert set(rev.loc[rev["split"] == "test", "cohort"]) == {"lung1_survival"} and "label" in rev.columns
    assert main(["prepare", "lung1_to_radio", "--raw", str(raw)]) == 2  # no data of its own: says what to prepare


def test_prepare_says_what_to_download(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "lung1_survival", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "lesionbench download lung1" in capsys.readouterr().err
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv").write_text("PatientID,Survival.time,deadstatus.event\nLUNG1-001,10,1\n")
    with pytest.raises(DataPreparationError, match="No DICOM files.*lesionbench download lung1"):
        TASKS.get("lung1_survival").prepare(raw=raw, out=tmp_path / "o")
    with pytest.raises(ManifestError, match="lesionbench prepare lung1_survival"):
        get_task("lung1_survival").manifest()
    with pytest.raises(ConfigurationError, match="label_variant"):
        get_task("radio_survival", label_variant="published")


def test_real_ct_and_tumour_round_trip_through_dicom(tmp_path: Path, shared_dir: Path) -> None:
    """pyradiomics' real lung1 CT and tumour written as DICOM (CT series, RTSTRUCT traced from the mask, SEG) come back exactly."""
    from nsclc_fixtures import write_ct_volume, write_rtstruct_from_mask

    real = shared_dir / "data" / "real-ct"
    image, label = sitk.ReadImage(str(real / "lung1_image.nrrd")), sitk.ReadImage(str(real / "lung1_label.nrrd"))
    truth = sitk.GetArrayFromImage(label) > 0
    study = write_ct_volume(
        tmp_path / "ct", "REAL-1", sitk.GetArrayFromImage(image).astype(float),
        R=np.array(image.GetDirection()).reshape(3, 3), origin=np.array(image.GetOrigin()), spacing=image.GetSpacing(), truth=truth,
    )
    write_rtstruct_from_mask(study, tmp_path / "rt.dcm")
    write_seg(study, tmp_path / "seg.dcm")
    index = _dicom.scan_dicom(tmp_path / "ct", progress=False)
    ct = _dicom.read_ct_series(index)
    assert np.array_equal(sitk.GetArrayFromImage(ct.image), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(ct.image.GetSpacing(), image.GetSpacing(), atol=1e-5)
    for mask in (_dicom.rtstruct_mask(tmp_path / "rt.dcm", ct.image, "GTV-1"), _dicom.seg_mask(tmp_path / "seg.dcm", ct)):
        arr = sitk.GetArrayFromImage(mask) > 0
        assert _dice(arr, truth) > 0.99
        # the centroid the shared README lists for this mask
        np.testing.assert_allclose(_dicom.mask_geometry(mask).centroid_lps, (-21.86, -120.54, -611.50), atol=0.01)
