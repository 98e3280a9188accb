"""Tiny synthetic DICOM studies for the NSCLC task tests: a CT series, an RTSTRUCT and a SEG of one tumour.

The CT has an oblique or flipped ImageOrientationPatient, anisotropic pixels and thick slices; the
tumour is a dense ball planted at a known physical centre, and the truth mask is computed in
physical space, independently of the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid


def rotation(yaw_deg: float, tilt_deg: float) -> np.ndarray:
    """Columns: row direction, column direction, slice normal (right-handed)."""
    a, b = np.deg2rad(yaw_deg), np.deg2rad(tilt_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


ORIENTATIONS = {
    # oblique: rotated 30 degrees in-plane and tilted 20 degrees out of the axial plane
    "oblique": rotation(30.0, 20.0),
    # flipped: rows run right-to-left, so the slice normal (row x column) points to the feet
    "flipped": np.array([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]]),
}


@dataclass
class Study:
    patient_id: str
    ct_dir: Path
    datasets: list[Dataset]  # in slice (normal) order
    truth: np.ndarray  # (z, y, x) bool on the CT grid, slice order as datasets
    centre: np.ndarray  # physical LPS of the planted ball
    radius: float
    R: np.ndarray
    origin: np.ndarray
    spacing: tuple[float, float, float]  # (col spacing x, row spacing y, slice z)
    frame_uid: str
    study_uid: str
    series_uid: str


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def write_ct(
    folder: Path,
    patient_id: str,
    *,
    orientation: str = "oblique",
    shape: tuple[int, int, int] = (7, 36, 30),  # slices, rows, columns
    spacing: tuple[float, float, float] = (0.7, 0.9, 2.5),  # column spacing (x), row spacing (y), slice
    radius: float = 6.5,
) -> Study:
    R = ORIENTATIONS[orientation]
    nz, ny, nx = shape
    sx, sy, sz = spacing
    origin = np.array([-40.0, 25.0, -110.0])
    # a centre off the grid's middle and off voxel centres, so the centroid is a real test
    centre = origin + R @ np.array([(nx / 2 + 0.3) * sx, (ny / 2 - 1.6) * sy, (nz / 2 - 0.2) * sz])
    i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    pts = origin + (np.stack([i * sx, j * sy, k * sz], -1) @ R.T)
    inside_xyz = np.linalg.norm(pts - centre, axis=-1) <= radius
    truth = np.transpose(inside_xyz, (2, 1, 0))  # (z, y, x)

    rng = np.random.default_rng(0)
    hu = np.where(truth, 60.0, -820.0) + rng.normal(0, 5, truth.shape)
    return write_ct_volume(folder, patient_id, hu, R=R, origin=origin, spacing=spacing, truth=truth, centre=centre, radius=radius)


def write_ct_volume(
    folder: Path,
    patient_id: str,
    hu: np.ndarray,
    *,
    R: np.ndarray,
    origin: np.ndarray,
    spacing: tuple[float, float, float],
    truth: np.ndarray,
    centre: np.ndarray | None = None,
    radius: float = 0.0,
) -> Study:
    """Write a (z, y, x) HU volume as a CT series: slice k at origin + k * spacing_z * R[:, 2]."""
    nz, ny, nx = hu.shape
    sx, sy, sz = spacing
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    datasets = []
    names = np.random.default_rng(1).permutation(nz)
    for kk in range(nz):
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(CTImageStorage, sop)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.PatientID, ds.PatientName = patient_id, f"Test^{patient_id}"
        ds.PatientBirthDate, ds.PatientSex = "19500101", "M"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20000101", "120000", "1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.Manufacturer = "CT", 1, "lesionbench-tests"
        ds.InstanceNumber = nz - kk  # reversed on purpose: order must come from positions
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*R[:, 0], *R[:, 1])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + kk * sz * R[:, 2]]
        ds.PixelSpacing = [f"{sy}", f"{sx}"]  # row spacing, column spacing
        ds.SliceThickness = f"{sz}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = np.round(hu[kk] + 1024).astype(np.int16).tobytes()
        # file names do not follow slice order either
        ds.save_as(folder / f"slice_{names[kk]:03d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    return Study(patient_id, folder, datasets, truth, centre, radius, R, origin, spacing, frame_uid, study_uid, series_uid)


def write_rtstruct(study: Study, path: Path, *, roi_name: str = "GTV-1", extra_rois: tuple[str, ...] = ("Lung-Left",)) -> Path:
    """An RTSTRUCT whose ROI ``roi_name`` outlines the planted ball on every slice it cuts (64-gons)."""
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(RTStructureSetStorage, sop)
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, sop
    ds.PatientID, ds.PatientName = study.patient_id, f"Test^{study.patient_id}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, generate_uid()
    ds.Modality, ds.StructureSetLabel = "RTSTRUCT", "test"
    fr = Dataset()
    fr.FrameOfReferenceUID = study.frame_uid
    st = Dataset()
    st.ReferencedSOPInstanceUID = study.study_uid
    se = Dataset()
    se.SeriesInstanceUID = study.series_uid
    st.RTReferencedSeriesSequence = [se]
    fr.RTReferencedStudySequence = [st]
    ds.ReferencedFrameOfReferenceSequence = [fr]
    names = (*extra_rois, roi_name)
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    for number, name in enumerate(names, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, study.frame_uid
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ContourSequence = []
        if name == roi_name:
            row, col, normal = study.R[:, 0], study.R[:, 1], study.R[:, 2]
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            for kk in range(len(study.datasets)):
                ipp = np.array(study.datasets[kk].ImagePositionPatient, float)
                d = float((study.centre - ipp) @ normal)
                if abs(d) >= study.radius:
                    continue
                r = np.sqrt(study.radius**2 - d**2)
                proj = study.centre - d * normal
                pts = proj + r * (np.cos(t)[:, None] * row + np.sin(t)[:, None] * col)
                c = Dataset()
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(pts)
                c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
                rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seg(study: Study, path: Path, *, label: str = "Heart", fractional: bool = False) -> Path:
    """A highdicom binary SEG of the planted ball; its one segment is labelled ``label`` (RADIO's files do that)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=study.datasets,
        # fractional: occupancy 0.9 inside, 0.3 on a shell around it (below the 0.5 cut)
        pixel_array=(0.9 * study.truth + 0.3 * (_dilate(study.truth) & ~study.truth)).astype(np.float32) if fractional else study.truth.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="lesionbench-tests",
        manufacturer_model_name="fixture",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path


def write_rtstruct_from_mask(study: Study, path: Path, *, roi_name: str = "GTV-1") -> Path:
    """An RTSTRUCT whose contours are traced from ``study.truth`` (marching squares at 0.5; holes become inner contours)."""
    from skimage.measure import find_contours

    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(RTStructureSetStorage, sop)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTStructureSetStorage, sop, "RTSTRUCT"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = study.patient_id, study.study_uid, generate_uid()
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, roi_name
    ds.StructureSetROISequence = [roi]
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ContourSequence = []
    sx, sy, sz = study.spacing
    for k in range(study.truth.shape[0]):
        for c in find_contours(np.pad(study.truth[k], 1).astype(float), 0.5):
            rows, cols = c[:, 0] - 1, c[:, 1] - 1
            pts = study.origin + np.stack([cols * sx, rows * sy, np.full_like(rows, k * sz)], -1) @ study.R.T
            contour = Dataset()
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
            contour.ContourData = [f"{v:.3f}" for v in pts.ravel()]
            rc.ContourSequence.append(contour)
    ds.ROIContourSequence = [rc]
    ds.save_as(path, enforce_file_format=True)
    return path


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for axis in (1, 2):
        out |= np.roll(mask, 1, axis) | np.roll(mask, -1, axis)
    return out


def strip_source_references(path: Path) -> None:
    """Remove the per-frame source-image references of a SEG, leaving only frame positions."""
    ds = pydicom.dcmread(path)
    for group in ds.PerFrameFunctionalGroupsSequence:
        if "DerivationImageSequence" in group:
            del group.DerivationImageSequence
    for tag in ("ReferencedSeriesSequence", "SourceImageSequence"):
        if tag in ds:
            delattr(ds, tag)
    ds.save_as(path)
