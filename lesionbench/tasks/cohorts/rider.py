"""RIDER Lung CT as the real test-retest set of the robustness protocol (``rider_retest``).

Data: TCIA collection RIDER Lung CT (32 NSCLC patients, two chest CTs minutes apart on the same scanner and
protocol), in IDC as ``rider_lung_ct``. The tumour of each scan is segmented in IDC's analysis result
``rider_lungct_seg`` (one DICOM SEG per scan, series described ``<PatientID>_<date>_TEST`` and
``..._RETEST``; the SEG names the CT series it was drawn on). ``lesionbench download rider --out RAW`` takes
those SEGs and the CT series of their studies; ``lesionbench prepare rider_retest --raw RAW`` writes the
RIDER-layout manifest (:mod:`lesionbench.benchmark.robustness.retest`), and ``lesionbench robustness --retest-manifest
$LESIONBENCH_DATA/rider_retest/manifest.csv --encoder NAME`` measures feature stability on real rescans.

Citation: Zhao B, James LP, Moskowitz CS, et al. Evaluating variability in tumor measurements from same-day
repeat CT scans of patients with non-small cell lung cancer. Radiology 252(1):263-272 (2009),
doi:10.1148/radiol.2522081593; RIDER Lung CT, TCIA, doi:10.7937/K9/TCIA.2015.U1X8A5NR; segmentations:
the ``rider_lungct_seg`` analysis result in IDC.

Licence: CC BY 3.0 and CC BY 4.0, as the IDC index lists them for these series (the dry run prints them).

Derivation: per SEG whose series description ends in ``_TEST`` (scan ``test``) or ``_RETEST`` (``retest``),
its tumour segment is mapped onto the CT series it references; seed = the mask's physical centroid (LPS mm),
``diameter_mm`` = equivalent-sphere diameter; ``lesion_id`` = the patient id (one tumour per patient). A
patient needs exactly one SEG of each scan; otherwise it is left out and ``excluded.csv`` says why. There
are no labels: the set is never scored, only compared scan against scan.

TumorImagingBench reads RIDER from a prepared ``annotations.csv`` that does not ship; lesionbench derives
the seeds from the collection's own segmentations instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError

logger = logging.getLogger(__name__)

#: The IDC analysis result holding one tumour SEG per scan.
ANALYSIS_RESULT = "rider_lungct_seg"
SCAN_SUFFIXES = {"_RETEST": "retest", "_TEST": "test"}  # RETEST first: "_TEST" is its suffix too


def scan_of(description: str | None) -> str | None:
    """``test`` / ``retest`` from a SEG's series description (``RIDER-1129164940_20190220_TEST``), else None."""
    text = str(description or "").strip().upper()
    return next((scan for suffix, scan in SCAN_SUFFIXES.items() if text.endswith(suffix)), None)


def prepare_rider_retest(raw: str | Path | None, out: str | Path, *, workers: int | None = None, progress: bool = True) -> Path:
    """Write ``out/manifest.csv`` (RIDER layout), the NIfTI scans and masks, and ``excluded.csv``; returns the manifest."""
    from lesionbench.benchmark.host import atomic_write
    from lesionbench.benchmark.robustness.retest import read_retest_manifest
    from lesionbench.tasks import _dicom

    if raw is None or not Path(raw).is_dir():
        raise DataPreparationError(f"rider_retest needs the raw DICOM download (--raw DIR); {raw} is not a folder. "
                                   "Get it with `lesionbench download rider --out DIR` (IDC, via idc-index).")  # fmt: skip
    raw, out = Path(raw), Path(out)
    index = _dicom.scan_dicom(raw, progress=progress)
    segs = index[index["Modality"] == "SEG"] if not index.empty else index
    if segs.empty:
        raise DataPreparationError(f"No DICOM SEG under {raw}. Download the {ANALYSIS_RESULT} SEGs and their CTs with `lesionbench download rider --out {raw}`.")
    pydicom = _dicom._pydicom()
    rows, excluded = [], []
    found: dict[str, dict[str, list[str]]] = {}
    for path, pid in zip(segs["path"], segs["PatientID"].astype(str)):
        scan = scan_of(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesDescription"]).get("SeriesDescription"))
        if scan is not None:
            found.setdefault(pid, {}).setdefault(scan, []).append(path)
    for pid in sorted(found):
        scans = found[pid]
        problem = next((f"{len(scans.get(s, []))} {s.upper()} SEG(s); exactly one of each scan is needed" for s in ("test", "retest") if len(scans.get(s, [])) != 1), None)
        if problem:
            excluded.append({"patient_id": pid, "reason": problem})
            continue
        try:
            pair = [_convert_scan(pid, scan, scans[scan][0], index, out) for scan in ("test", "retest")]
        except (DataPreparationError, RuntimeError, OSError, ValueError, KeyError) as exc:
            logger.warning("rider_retest: patient %s excluded: %s", pid, exc)
            excluded.append({"patient_id": pid, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        rows += pair
    if not rows:
        raise DataPreparationError(f"No patient of {raw} has one TEST and one RETEST SEG with their CTs; first reasons: {[e['reason'] for e in excluded[:3]]}.")
    df = pd.DataFrame(rows)
    read_retest_manifest(df.assign(image_path=[str(out / p) for p in df["image_path"]]))  # the reader's checks, before writing
    manifest = out / "manifest.csv"
    atomic_write(manifest, lambda tmp: df.to_csv(tmp, index=False))
    pd.DataFrame(excluded, columns=["patient_id", "reason"]).to_csv(out / "excluded.csv", index=False)
    logger.info("rider_retest: %d patients with both scans, %d excluded (see %s)", len(df) // 2, len(excluded), out / "excluded.csv")
    return manifest


def _convert_scan(pid: str, scan: str, seg_path: str, index: pd.DataFrame, out: Path) -> dict[str, object]:
    from lesionbench.tasks import _dicom

    referenced = _dicom.seg_referenced_series(seg_path)
    ct_rows = index[(index["Modality"] == "CT") & index["SeriesInstanceUID"].isin(referenced)]
    if ct_rows.empty:
        raise DataPreparationError(f"{seg_path} references CT series {referenced}, which are not in the raw folder; download them.")
    ct = _dicom.read_ct_series(ct_rows[ct_rows["SeriesInstanceUID"] == ct_rows["SeriesInstanceUID"].iloc[0]])
    mask = _dicom.seg_mask(seg_path, ct)
    geom = _dicom.mask_geometry(mask)
    image_rel, mask_rel = f"images/{pid}_{scan}.nii.gz", f"masks/{pid}_{scan}.nii.gz"
    _dicom.write_image_atomic(ct.image, out / image_rel)
    _dicom.write_image_atomic(mask, out / mask_rel)
    return {"lesion_id": pid, "patient_id": pid, "scan": scan, "image_path": image_rel, "mask_path": mask_rel,
            "coordX": geom.centroid_lps[0], "coordY": geom.centroid_lps[1], "coordZ": geom.centroid_lps[2],
            "diameter_mm": geom.diameter_mm, "ct_series_uid": ct.series_instance_uid}  # fmt: skip
