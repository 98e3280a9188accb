"""The peer benchmark's cohorts: label derivations on tables in the published schema, and prepare + validate
on DICOM laid out like the IDC download (CT series, tumour SEG, the collection's clinical table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nsclc_fixtures import Study, write_ct, write_seg  # noqa: E402

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.cli import main
from lesionbench.tasks.cohorts.kits import malignancy_labels, subtype_labels
from lesionbench.tasks.cohorts.radiogenomics import mutation_labels


def _centroid(st: Study) -> np.ndarray:
    z, y, x = np.nonzero(st.truth)
    sx, sy, sz = st.spacing
    return (st.origin + np.stack([x * sx, y * sy, z * sz], -1) @ st.R.T).mean(axis=0)


def test_mutation_labels_keep_mutant_and_wildtype_only() -> None:
    t = pd.DataFrame({"Case ID": ["R01-001", "R01-002", "R01-003", "R01-004", "R01-005"],
                      "EGFR mutation status": ["Mutant", "Wildtype", "Unknown", "Not collected", None]})  # fmt: skip
    out = mutation_labels(t, "EGFR mutation status")
    assert out["label"].tolist()[:2] == [1.0, 0.0] and out["label"].iloc[2:].isna().all()
    assert out["reason"].iloc[3] == "EGFR mutation status is 'Not collected' (only Mutant and Wildtype are labels)"
    with pytest.raises(DataPreparationError, match=r"lists patient\(s\) \['R01-001'\] more than once"):
        mutation_labels(pd.concat([t, t.iloc[:1]]), "EGFR mutation status")


def test_kits_labels_from_the_clinical_schema() -> None:
    t = pd.DataFrame({"patient_id": ["KiTS-00000", "KiTS-00001", "KiTS-00002", "KiTS-00003"],
                      "malignant": ["True", "False", "True", ""],
                      "tumor_histologic_subtype": ["clear_cell_rcc", "oncocytoma", "papillary", ""]})  # fmt: skip
    assert malignancy_labels(t)["label"].tolist()[:3] == [1.0, 0.0, 1.0] and np.isnan(malignancy_labels(t)["label"].iloc[3])
    sub = subtype_labels(t)
    assert sub["label"].tolist()[:3] == [1.0, 0.0, 0.0] and sub["reason"].iloc[3] == "tumor_histologic_subtype is empty"


def _write_kits_seg(st: Study, path: Path) -> Path:
    """A two-segment SEG as C4KC-KiTS has: segment 1 the kidney (a slab beside the tumour), 2 the tumour."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    kidney = np.zeros_like(st.truth)
    kidney[:, :6, :6] = True
    descs = [
        hd.seg.SegmentDescription(segment_number=1, segment_label="Kidney", segmented_property_category=codes.SCT.Organ,
                                  segmented_property_type=codes.SCT.Kidney, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL),
        hd.seg.SegmentDescription(segment_number=2, segment_label="Tumor", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                  segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL),
    ]  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=st.datasets, pixel_array=np.stack([kidney, st.truth], axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs, series_instance_uid=generate_uid(),
        series_number=2, sop_instance_uid=generate_uid(), instance_number=1, manufacturer="lesionbench-tests",
        manufacturer_model_name="fixture", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(path)
    return path


def test_kits_prepare_picks_the_tumour_segment_and_validates(tmp_path: Path) -> None:
    import SimpleITK as sitk

    raw, out = tmp_path / "raw" / "c4kc_kits", tmp_path / "kits_malignancy"
    studies = {}
    for i in range(6):  # the IDC layout: collection / patient / study / series
        pid = f"KiTS-{i:05d}"
        st = write_ct(raw / pid / "study" / f"CT_{i}", pid, orientation="flipped" if i % 2 else "oblique")
        _write_kits_seg(st, raw / pid / "study" / f"SEG_{i}.dcm")
        studies[pid] = st
    pd.DataFrame({
        "patient_id": [*studies, "KiTS-00099"],
        "malignant": ["True", "False", "True", "False", "True", "False", "True"],
        "tumor_histologic_subtype": ["clear_cell_rcc", "oncocytoma", "papillary", "angiomyolipoma", "clear_cell_rcc", "", "chromophobe"],
        "vital_status": ["censored"] * 7,
    }).to_csv(raw.parent / "C4KC-KiTS_Clinical-Data_Version-1.csv", index=False)  # fmt: skip
    assert main(["prepare", "kits_malignancy", "--raw", str(raw.parent), "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv")
    assert df["patient_id"].tolist() == list(studies) and df["label"].tolist() == [1, 0, 1, 0, 1, 0]
    assert json.loads((out / "label_counts.json").read_text()) == {"n_patients": 6, "n_positive": 3, "n_excluded": 1}
    assert pd.read_csv(out / "excluded.csv").to_dict("records") == [{"patient_id": "KiTS-00099", "reason": "in the clinical table but not in the raw DICOM folder"}]
    for _, row in df.iterrows():  # the tumour segment, not the kidney
        st = studies[row["patient_id"]]
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["mask_path"]))).astype(bool), st.truth)
        np.testing.assert_allclose(row[["coordX", "coordY", "coordZ"]].to_numpy(float), _centroid(st), atol=1e-3)
    assert main(["validate", str(out / "manifest.csv"), "--task", "kits_malignancy"]) == 0
    task = get_task("kits_malignancy", data_dir=out, fold=1)
    m = task.manifest()
    assert task.meta.version == "1.0-fold1" and set(m["split"]) == {"train", "val", "test"}
    assert m.groupby("patient_id")["split"].nunique().max() == 1
    # the subtype task from the same download: the patient without a subtype is excluded, saying why
    assert main(["prepare", "kits_subtype", "--raw", str(raw.parent), "--out", str(tmp_path / "sub")]) == 0
    sub = pd.read_csv(tmp_path / "sub" / "manifest.csv")
    assert sub["label"].tolist() == [1, 0, 0, 0, 1]
    assert "tumor_histologic_subtype is empty" in set(pd.read_csv(tmp_path / "sub" / "excluded.csv")["reason"])


def test_radiogenomics_egfr_prepare_from_the_radio_download(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "egfr"
    ids = [f"R01-{i + 1:03d}" for i in range(8)]
    for i, pid in enumerate(ids):
        st = write_ct(raw / pid / "ct", pid, orientation="oblique" if i % 2 else "flipped")
        write_seg(st, raw / pid / "seg.dcm", label="Neoplasm")
    egfr = ["Mutant", "Wildtype", "Mutant", "Wildtype", "Mutant", "Wildtype", "Unknown", "Not collected"]
    pd.DataFrame({"Case ID": ids, "EGFR mutation status": egfr, "KRAS mutation status": ["Wildtype"] * 8, "Survival Status": ["Alive"] * 8}).to_csv(
        raw / "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv", index=False
    )
    assert main(["prepare", "radiogenomics_egfr", "--raw", str(raw), "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv")
    assert df["patient_id"].tolist() == ids[:6] and df["label"].tolist() == [1, 0, 1, 0, 1, 0]
    reasons = pd.read_csv(out / "excluded.csv").set_index("patient_id")["reason"].to_dict()
    assert reasons == {"R01-007": "EGFR mutation status is 'Unknown' (only Mutant and Wildtype are labels)",
                       "R01-008": "EGFR mutation status is 'Not collected' (only Mutant and Wildtype are labels)"}  # fmt: skip
    assert sorted(df["fold"].unique()) == [0, 1, 2]  # three folds: the largest class has three patients
    assert main(["validate", str(out / "manifest.csv"), "--task", "radiogenomics_egfr"]) == 0
    # KRAS: all wild type here, so no task can be made; said in one line
    assert main(["prepare", "radiogenomics_kras", "--raw", str(raw), "--out", str(tmp_path / "kras")]) == 2


def test_kits_download_resolves_offline() -> None:
    pytest.importorskip("idc_index_data")
    from lesionbench.tasks import _idc

    plan = _idc.resolve_download("kits")
    assert (plan.n_patients, plan.counts()) == (210, {"CT": 411, "SEG": 210})
    assert set(plan.series["license_short_name"]) == {"CC BY 3.0"}


def _describe(path: Path, description: str) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.SeriesDescription = description
    ds.save_as(path)


def test_rider_retest_prepare_writes_a_checked_rider_layout_manifest(tmp_path: Path) -> None:
    from lesionbench.benchmark.robustness.retest import read_retest_manifest, retest_pairs
    from lesionbench.tasks.cohorts.rider import scan_of

    assert (scan_of("RIDER-1129164940_20190220_TEST"), scan_of("RIDER-1129164940_20190402_RETEST"), scan_of("Tumor Segmentation")) == ("test", "retest", None)
    raw, out = tmp_path / "raw", tmp_path / "rider_retest"
    studies = {}
    for i, pid in enumerate(["RIDER-1", "RIDER-2", "RIDER-3"]):
        for scan, orientation in (("TEST", "oblique"), ("RETEST", "flipped")):
            if pid == "RIDER-3" and scan == "RETEST":
                continue  # one scan only: excluded, saying why
            st = write_ct(raw / pid / scan.lower(), pid, orientation=orientation)
            _describe(write_seg(st, raw / pid / f"seg_{scan}.dcm", label="Tumor"), f"{pid}_2019022{i}_{scan}")
            studies[(pid, scan.lower())] = st
        # a QIN challenge SEG of the same study is not a scan's reference segmentation
        _describe(write_seg(studies[(pid, "test")], raw / pid / "qin.dcm", label="Tumor"), "QIN CT challenge: alg01 run1segmentation result")
    assert main(["prepare", "rider_retest", "--raw", str(raw), "--out", str(out)]) == 0
    manifest = read_retest_manifest(out / "manifest.csv")
    first, second = retest_pairs(manifest)
    assert first["lesion_id"].tolist() == ["RIDER-1", "RIDER-2"] and second["scan"].eq("retest").all()
    for df, scan in ((first, "test"), (second, "retest")):
        for _, row in df.iterrows():
            np.testing.assert_allclose(row[["coordX", "coordY", "coordZ"]].to_numpy(float), _centroid(studies[(row["patient_id"], scan)]), atol=1e-3)
    assert pd.read_csv(out / "excluded.csv").to_dict("records") == [
        {"patient_id": "RIDER-3", "reason": "0 RETEST SEG(s); exactly one of each scan is needed"}]  # fmt: skip
    assert main(["prepare", "rider_retest", "--raw", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_rider_download_takes_the_scans_reference_segs() -> None:
    pytest.importorskip("idc_index_data")
    from lesionbench.tasks import _idc

    plan = _idc.resolve_download("rider")
    segs = plan.series[plan.series["Modality"] == "SEG"]
    assert (plan.n_patients, plan.counts()) == (31, {"CT": 60, "SEG": 59})
    assert set(segs["analysis_result_id"]) == {"rider_lungct_seg"} and segs["SeriesDescription"].str.upper().str.endswith(("_TEST", "_RETEST")).all()
