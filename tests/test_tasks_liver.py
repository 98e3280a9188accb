"""The liver cohorts (Colorectal-Liver-Metastases, HCC-TACE-Seg): label derivations on tables in the published schema,
the lesion rule on multi-segment SEGs, and prepare -> validate -> label counts on DICOM laid out like the IDC download."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nsclc_fixtures import Study, write_ct  # noqa: E402

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.cli import main
from lesionbench.tasks.cohorts.crlm import CLINICAL as CRLM_CLINICAL, DAYS_PER_MONTH, crlm_outcomes
from lesionbench.tasks.cohorts.hcc_tace import CLINICAL as HCC_CLINICAL, response_labels, survival_outcomes

#: The CRLM workbook's columns, in its order (TumorImagingBench's data/eval/colorectal_liver_metastases notebook lists them).
CRLM_COLUMNS = [
    "Patient-ID", "De-identify Scout Name", "age", "sex", "major_comorbidity", "body_mass_index", "node_positive_primary",
    "synchronous_crlm", "multiple_metastases", "clinrisk_score", "clinrisk_stratified", "carcinoembryonic_antigen",
    "max_tumor_size", "bilobar_disease", "extrahep_disease", "chemo_before_liver_resection", "preoperative_pve",
    "steatosis_yesno", "presence_sinusoidal_dilata", "NASH_score", "NASH_yesno", "NASH_greater_4", "total_response_percent",
    "necrosis_percent", "fibrosis_percent", "fibrosis_greater_40_percent", "mucin_percent", "overall_survival_months",
    "vital_status", "progression_or_recurrence", "months_to_DFS_progression", "vital_status_DFS",
    "progression_or_recurrence_liveronly", "months_to_liver_DFS_progression", "vital_status_liver_DFS", "relevant_notes",
]  # fmt: skip
#: The HCC-TACE-Seg workbook's columns the tasks read, and neighbours as public analyses of it name them.
HCC_COLUMNS = ["TCIA_ID", "age", "Sex", "BCLC", "1_mRECIST", "2_mRECIST", "3_mRECIST", "1_mRECIST_BL", "1_mRECIST_FU", "1_EASL",
               "1_RECIST", "TTP", "Censored_0_progressed_1", "OS", "Death_1_StillAliveorLostToFU_0"]  # fmt: skip


def _crlm_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c, "0") for c in CRLM_COLUMNS} for r in rows], columns=CRLM_COLUMNS).astype(str)


def _hcc_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c, "1") for c in HCC_COLUMNS} for r in rows], columns=HCC_COLUMNS).astype(str)


def test_crlm_outcomes_convert_months_and_exclude_missing_codes() -> None:
    t = _crlm_table([
        {"Patient-ID": "CRLM-CT-1001", "overall_survival_months": "117.4", "vital_status": "0", "months_to_DFS_progression": "117.4", "vital_status_DFS": "0"},
        {"Patient-ID": "CRLM-CT-1002", "overall_survival_months": "26.8", "vital_status": "1", "months_to_DFS_progression": "13.8", "vital_status_DFS": "1"},
        {"Patient-ID": "CRLM-CT-1003", "overall_survival_months": "-999", "vital_status": "1", "months_to_DFS_progression": "3.2", "vital_status_DFS": "2"},
    ])  # fmt: skip
    os_, dfs = crlm_outcomes(t, "os"), crlm_outcomes(t, "dfs")
    np.testing.assert_allclose(os_["time"].iloc[:2], [117.4 * 365.25 / 12, 26.8 * 365.25 / 12])
    assert os_["event"].tolist()[:2] == [0.0, 1.0] and os_[["time", "event"]].iloc[2].isna().all()
    assert os_["reason"].iloc[2] == "overall_survival_months is '-999' (months >= 0 expected; -999 means missing)"
    np.testing.assert_allclose(dfs["time"].iloc[1], 13.8 * DAYS_PER_MONTH)  # DFS: its own columns, not OS
    assert dfs["reason"].iloc[2] == "vital_status_DFS is '2' (0 or 1 expected)"
    # 24 months alive is a 2-year survivor (0), death at 13.8 months a 2-year death (1)
    assert two_year_label(dfs["time"].iloc[:2].to_numpy(), dfs["event"].iloc[:2].to_numpy()).tolist() == [0.0, 1.0]
    with pytest.raises(DataPreparationError, match=r"lists patient\(s\) \['CRLM-CT-1001'\] more than once"):
        crlm_outcomes(pd.concat([t, t.iloc[:1]]), "os")


def test_hcc_response_is_the_majority_of_three_mrecist_readers() -> None:
    reads = [("1", "2", "3"), ("3", "4", "1"), ("2", "2", ""), ("1", "", "4"), ("CR", "PD", "SD"), ("1.0", "2.0", "4.0"), ("", "", "")]
    t = _hcc_table([{"TCIA_ID": f"HCC_{i:03d}", "1_mRECIST": a, "2_mRECIST": b, "3_mRECIST": c} for i, (a, b, c) in enumerate(reads, 1)])
    out = response_labels(t)
    assert out["patient_id"].tolist()[0] == "HCC_001"
    np.testing.assert_array_equal(out["label"].to_numpy(), [1.0, 0.0, 1.0, np.nan, 0.0, 1.0, np.nan])
    assert out["reason"].iloc[3] == "1_mRECIST/2_mRECIST/3_mRECIST are '1 /  / 4': no two readers agree on CR/PR (1/2) vs SD/PD (3/4)"
    assert out["reason"].iloc[0] == ""


def test_hcc_survival_reads_os_in_weeks() -> None:
    t = _hcc_table([{"TCIA_ID": "HCC_001", "OS": "104", "Death_1_StillAliveorLostToFU_0": "1"},
                    {"TCIA_ID": "HCC_002", "OS": "150.5", "Death_1_StillAliveorLostToFU_0": "0"},
                    {"TCIA_ID": "HCC_003", "OS": "", "Death_1_StillAliveorLostToFU_0": "1"}])  # fmt: skip
    out = survival_outcomes(t)
    np.testing.assert_allclose(out["time"].iloc[:2], [728.0, 1053.5])
    assert out["event"].tolist()[:2] == [1.0, 0.0] and np.isnan(out["time"].iloc[2])
    assert out["reason"].iloc[2] == "OS is '' (weeks >= 0 expected)"


def test_clinical_workbooks_say_how_to_read_xlsx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = tmp_path / "HCC-TACE-Seg_clinical_data-V2.csv"
    _hcc_table([{"TCIA_ID": "HCC_001"}]).to_csv(csv, index=False)
    assert HCC_CLINICAL.read(csv)["TCIA_ID"].tolist() == ["HCC_001"]  # a CSV export of the sheet is read as CSV
    book = tmp_path / "HCC-TACE-Seg_clinical_data-V2.xlsx"
    book.write_bytes(b"PK")  # read_excel is stubbed below: pandas would need openpyxl

    def no_openpyxl(*args: object, **kwargs: object) -> None:
        raise ImportError("Missing optional dependency 'openpyxl'.")

    monkeypatch.setattr(pd, "read_excel", no_openpyxl)
    with pytest.raises(DataPreparationError, match=r"needs openpyxl: pip install openpyxl .* pass --clinical FILE.csv"):
        HCC_CLINICAL.read(book)
    monkeypatch.setattr(pd, "read_excel", lambda *a, **k: pd.DataFrame({"Patient-ID": ["CRLM-CT-1001"]}))
    with pytest.raises(DataPreparationError, match=r"lacks column\(s\) \['overall_survival_months'.* in its first sheet"):
        CRLM_CLINICAL.read(tmp_path / "Colorectal-Liver-Metastases-Clinical-data-April-2023.xlsx")


def test_clinical_workbook_round_trip_with_openpyxl(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl")
    book = tmp_path / "Colorectal-Liver-Metastases-Clinical-data-April-2023.xlsx"
    _crlm_table([{"Patient-ID": "CRLM-CT-1001", "overall_survival_months": "117.4"}]).to_excel(book, index=False)
    assert CRLM_CLINICAL.read(book)["overall_survival_months"].tolist() == ["117.4"]


def _write_multi_seg(st: Study, path: Path, segments: list[tuple[str, str, np.ndarray]], *, sources: list | None = None) -> Path:
    """A binary SEG with one segment per (label, kind, mask); kind "organ" or "tumour" sets the coded property type."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    coded = {"organ": (codes.SCT.Organ, codes.SCT.Liver), "vein": (codes.SCT.Tissue, codes.SCT.PortalVein),
             "tumour": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm)}  # fmt: skip
    descs = [hd.seg.SegmentDescription(segment_number=n, segment_label=label, segmented_property_category=coded[kind][0],
                                       segmented_property_type=coded[kind][1], algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
             for n, (label, kind, _) in enumerate(segments, 1)]  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=sources or st.datasets, pixel_array=np.stack([m for _, _, m in segments], axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs, series_instance_uid=generate_uid(),
        series_number=2, sop_instance_uid=generate_uid(), instance_number=1, manufacturer="lesionbench-tests",
        manufacturer_model_name="fixture", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(path)
    return path


def _second_phase(st: Study, folder: Path, orientation: str, *, shift_hu: float = 500.0) -> list:
    """Add a second acquisition to ``st``'s series at the same positions (AcquisitionNumber 2, HU + ``shift_hu``), as
    HCC-TACE-Seg's multiphase series hold; returns one source dataset per slice, alternating between the acquisitions."""
    import pydicom

    other = write_ct(folder, st.patient_id, orientation=orientation)  # the same grid: the same positions
    phase2 = []
    for f, kk in zip(sorted(folder.glob("*.dcm")), range(len(st.datasets))):  # names are shuffled; positions decide below
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = st.study_uid, st.series_uid, st.frame_uid
        ds.AcquisitionNumber, ds.RescaleIntercept = 2, str(-1024 + shift_hu)
        ds.save_as(st.ct_dir / f"phase2_{kk:03d}.dcm")
        f.unlink()
        phase2.append(ds)
    for ds in st.datasets:
        ds.AcquisitionNumber = 1
    for f in st.ct_dir.glob("slice_*.dcm"):
        ds = pydicom.dcmread(f)
        ds.AcquisitionNumber = 1
        ds.save_as(f)
    assert other.truth.shape == st.truth.shape
    at = {tuple(ds.ImagePositionPatient): ds for ds in phase2}
    # the SEG references slices of both acquisitions: phase 1 on even slices (the majority), phase 2 on odd ones
    return [ds if k % 2 == 0 else at[tuple(ds.ImagePositionPatient)] for k, ds in enumerate(st.datasets)]


def _box(st: Study, z: slice, y: slice, x: slice) -> np.ndarray:
    m = np.zeros_like(st.truth)
    m[z, y, x] = True
    return m


def _check_masks(out: Path, df: pd.DataFrame, studies: dict[str, Study]) -> None:
    import SimpleITK as sitk

    for _, row in df.iterrows():  # the planted ball (the largest tumour), not the liver, vessels or the small tumour
        st = studies[row["patient_id"]]
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["mask_path"]))).astype(bool), st.truth)
        z, y, x = np.nonzero(st.truth)
        sx, sy, sz = st.spacing
        centroid = (st.origin + np.stack([x * sx, y * sy, z * sz], -1) @ st.R.T).mean(axis=0)
        np.testing.assert_allclose(row[["coordX", "coordY", "coordZ"]].to_numpy(float), centroid, atol=1e-3)


def test_largest_tumour_segment_breaks_ties_low_and_refuses_a_seg_without_tumour(tmp_path: Path) -> None:
    import highdicom as hd

    from lesionbench.tasks._dicom import largest_tumour_segment

    st = write_ct(tmp_path / "ct", "CRLM-CT-1001")
    a, b = _box(st, slice(1, 3), slice(2, 4), slice(2, 4)), _box(st, slice(4, 6), slice(30, 32), slice(26, 28))  # 8 voxels each
    liver = _box(st, slice(None), slice(0, 20), slice(0, 20))  # the largest segment, but not a tumour
    tied = hd.seg.segread(_write_multi_seg(st, tmp_path / "tied.dcm", [("Liver", "organ", liver), ("Tumor_1", "tumour", a), ("Tumor_2", "tumour", b)]))
    assert largest_tumour_segment(tied) == 2
    none = hd.seg.segread(_write_multi_seg(st, tmp_path / "none.dcm", [("Liver", "organ", liver), ("Portal", "vein", a)]))
    with pytest.raises(DataPreparationError, match=r"has no segment naming a tumour .* among \{1: 'Liver \(Liver\)', 2: 'Portal \(Portal vein\)'\}"):
        largest_tumour_segment(none)


def test_crlm_prepare_takes_the_largest_tumour_and_writes_a_survival_manifest(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw" / "colorectal_liver_metastases", tmp_path / "crlm_survival"
    studies = {}
    for i in range(6):  # the IDC layout: collection / patient / study / series
        pid = f"CRLM-CT-{1001 + i}"
        st = write_ct(raw / pid / "study" / f"CT_{i}", pid, orientation="flipped" if i % 2 else "oblique")
        small = _box(st, slice(2, 4), slice(30, 32), slice(26, 28))
        tumours = [("Tumor_1", "tumour", st.truth), ("Tumor_2", "tumour", small)]
        # liver, remnant and vessels as the descriptor lists them; the big tumour first or second in turn
        _write_multi_seg(st, raw / pid / "study" / f"SEG_{i}.dcm", [
            ("Liver", "organ", _box(st, slice(None), slice(0, 8), slice(0, 8))),
            ("Liver_Remnant", "organ", _box(st, slice(None), slice(0, 4), slice(0, 8))),
            ("Hepatic", "vein", _box(st, slice(1, 6), slice(0, 2), slice(10, 12))),
            ("Portal", "vein", _box(st, slice(1, 6), slice(34, 36), slice(0, 2))),
            *(tumours if i % 2 else tumours[::-1]),
        ])  # fmt: skip
        studies[pid] = st
    months = ["117.4", "26.8", "94.7", "13.0", "-999", "8.5"]
    status = ["0", "1", "0", "1", "1", "0"]
    _crlm_table([{"Patient-ID": pid, "overall_survival_months": m, "vital_status": s, "months_to_DFS_progression": "5.0",
                  "vital_status_DFS": str(i % 2)} for i, (pid, m, s) in enumerate(zip([*studies, "CRLM-CT-1099"], [*months, "30"], [*status, "1"]))]
                ).to_csv(raw.parent / "Colorectal-Liver-Metastases-Clinical-data-April-2023.csv", index=False)  # fmt: skip
    assert main(["prepare", "crlm_survival", "--raw", str(raw.parent), "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv")
    kept = [p for p, m in zip(studies, months) if m != "-999"]
    assert df["patient_id"].tolist() == kept and "label" not in df.columns
    assert df["event"].tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_allclose(df["time"], [float(m) * DAYS_PER_MONTH for m in months if m != "-999"])
    np.testing.assert_array_equal(df["label_2y"].to_numpy(), [0.0, 0.0, 0.0, 1.0, np.nan])  # 8.5 months censored: unknown
    assert json.loads((out / "label_counts.json").read_text()) == {"n_patients": 5, "n_events": 2, "n_2y_known": 4, "n_excluded": 2}
    reasons = pd.read_csv(out / "excluded.csv").set_index("patient_id")["reason"].to_dict()
    assert reasons == {"CRLM-CT-1005": "overall_survival_months is '-999' (months >= 0 expected; -999 means missing)",
                       "CRLM-CT-1099": "in the clinical table but not in the raw DICOM folder"}  # fmt: skip
    _check_masks(out, df, studies)
    assert main(["validate", str(out / "manifest.csv"), "--task", "crlm_survival"]) == 0
    task = get_task("crlm_survival", data_dir=out, fold=1)
    m = task.manifest()
    assert (task.meta.version, task.meta.main_metric) == ("1.0-fold1", "c_index") and set(m["split"]) == {"train", "val", "test"}
    # DFS from the same download: its own columns (all five months, events alternate)
    assert main(["prepare", "crlm_dfs", "--raw", str(raw.parent), "--out", str(tmp_path / "dfs")]) == 0
    dfs = pd.read_csv(tmp_path / "dfs" / "manifest.csv")
    assert dfs["event"].tolist() == [0, 1, 0, 1, 0, 1] and np.allclose(dfs["time"], 5.0 * DAYS_PER_MONTH)


def test_hcc_tace_prepare_response_and_survival(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    studies = {}
    for i in range(7):
        pid = f"HCC_{i + 1:03d}"
        orientation = "oblique" if i % 2 else "flipped"
        st = write_ct(raw / "hcc_tace_seg" / pid / "study" / "CT", pid, orientation=orientation)
        # every third patient: a multiphase series, two acquisitions at the same positions, the SEG referencing both
        sources = _second_phase(st, tmp_path / "phase2" / pid, orientation) if i % 3 == 0 else None
        _write_multi_seg(st, raw / "hcc_tace_seg" / pid / "study" / "SEG.dcm", sources=sources, segments=[
            ("Liver", "organ", _box(st, slice(None), slice(0, 8), slice(0, 8))),
            ("Mass", "tumour", st.truth),
            ("Portal vein", "vein", _box(st, slice(1, 6), slice(34, 36), slice(0, 2))),
            ("Abdominal aorta", "vein", _box(st, slice(1, 6), slice(0, 2), slice(28, 30))),
        ])  # fmt: skip
        studies[pid] = st
    reads = [("1", "2", "2"), ("3", "4", "3"), ("2", "2", "3"), ("4", "4", "1"), ("1", "1", "1"), ("3", "3", "4"), ("1", "", "4")]
    os_weeks = ["40", "120", "80", "30", "200", "60", "70"]
    dead = ["1", "0", "1", "1", "0", "1", "0"]
    _hcc_table([{"TCIA_ID": pid, "1_mRECIST": a, "2_mRECIST": b, "3_mRECIST": c, "OS": w, "Death_1_StillAliveorLostToFU_0": d}
                for pid, (a, b, c), w, d in zip(studies, reads, os_weeks, dead)]
               ).to_csv(raw / "HCC-TACE-Seg_clinical_data-V2.csv", index=False)  # fmt: skip
    out = tmp_path / "hcc_tace_response"
    assert main(["prepare", "hcc_tace_response", "--raw", str(raw), "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv")
    assert df["patient_id"].tolist() == list(studies)[:6] and df["label"].tolist() == [1, 0, 1, 0, 1, 0]
    assert json.loads((out / "label_counts.json").read_text()) == {"n_patients": 6, "n_positive": 3, "n_excluded": 1}
    assert "no two readers agree" in pd.read_csv(out / "excluded.csv").set_index("patient_id")["reason"]["HCC_007"]
    _check_masks(out, df, studies)
    import SimpleITK as sitk

    for pid in ("HCC_001", "HCC_004"):  # the acquisition the SEG references most (phase 1: tumour ~60 HU, not ~560)
        row = df.set_index("patient_id").loc[pid]
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["image_path"])))
        assert abs(float(ct[studies[pid].truth].mean()) - 60.0) < 5.0
    assert main(["validate", str(out / "manifest.csv"), "--task", "hcc_tace_response"]) == 0
    surv = tmp_path / "hcc_tace_survival"
    assert main(["prepare", "hcc_tace_survival", "--raw", str(raw), "--out", str(surv)]) == 0
    sdf = pd.read_csv(surv / "manifest.csv")
    assert sdf["patient_id"].tolist() == list(studies) and np.allclose(sdf["time"], [7.0 * float(w) for w in os_weeks])
    assert json.loads((surv / "label_counts.json").read_text()) == {"n_patients": 7, "n_events": 4, "n_2y_known": 6, "n_excluded": 0}
    assert main(["validate", str(surv / "manifest.csv"), "--task", "hcc_tace_survival"]) == 0


def test_liver_downloads_resolve_offline() -> None:
    pytest.importorskip("idc_index_data")
    from lesionbench.tasks import _idc

    crlm, hcc = _idc.resolve_download("crlm"), _idc.resolve_download("hcc_tace")
    assert (crlm.n_patients, crlm.counts()) == (197, {"CT": 197, "SEG": 197})
    assert (hcc.n_patients, hcc.counts()) == (105, {"CT": 289, "SEG": 105})
    for plan in (crlm, hcc):  # the collections' own SEGs, not the AI-derived ones of analysis results
        assert plan.series["analysis_result_id"].isna().all() and set(plan.series["license_short_name"]) == {"CC BY 4.0"}
    assert hcc.clinical is HCC_CLINICAL and crlm.clinical is None
