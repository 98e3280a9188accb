"""DICOM -> NIfTI conversion shared by the NSCLC survival tasks (private: not a task module).

What it does, and with which library:

* :func:`scan_dicom` indexes a raw download folder (any layout: IDC, NBIA, flat) by reading only
  the header tags it needs with pydicom.
* :func:`read_ct_series` reads one CT series with SimpleITK's ``ImageSeriesReader`` after sorting the
  slices along the slice normal (the cross product of ImageOrientationPatient), and checks that the
  image geometry SimpleITK built reproduces every slice's ImagePositionPatient, so oblique, flipped
  or gantry-tilted series are either right or refused, never silently wrong.
* :func:`rtstruct_mask` rasterises an RTSTRUCT ROI (pydicom reads ``ContourSequence``) onto the CT
  grid: every contour's physical points are mapped to continuous voxel indices with the CT image's
  own index<->physical transform, then filled with ``skimage.draw.polygon`` on its slice; contours of
  one ROI on one slice are combined by XOR so an inner contour is a hole, as the DICOM RT convention
  intends (separate islands are unaffected).
* :func:`seg_mask` maps a DICOM SEG (``highdicom.seg.segread``) onto the CT grid by the SOP Instance
  UIDs of the source CT slices, falling back to the frames' PlanePositionSequence when the SEG does
  not reference its source instances.
* :func:`mask_geometry` gives the seed (physical centroid of the mask, LPS mm), the volume and the
  equivalent-sphere diameter ``(6 V / pi) ** (1/3)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.host import atomic_write

logger = logging.getLogger(__name__)

#: Header tags :func:`scan_dicom` reads (no pixel data).
SCAN_TAGS: tuple[str, ...] = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SeriesDescription",
    "AcquisitionNumber",
)
#: Largest tolerated distance (mm) between a slice's ImagePositionPatient and the position the
#: assembled volume gives it. Beyond it the series is not a regular grid (tilt, gaps, mixed series).
POSITION_TOLERANCE_MM = 0.05


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # an optional extra
        raise DataPreparationError(
            "Reading DICOM needs pydicom and highdicom: pip install 'lesionbench[dicom]'."
        ) from exc
    return pydicom


def _optional(module: str, package: str):
    """Import an optional dependency of the DICOM path, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DataPreparationError(f"Preparing from DICOM needs {package}: pip install 'lesionbench[dicom]'.") from exc


def scan_dicom(root: str | Path, *, progress: bool = True) -> pd.DataFrame:
    """Index every DICOM file under ``root`` (recursively) by its identifying header tags.

    Returns one row per file with ``path`` and the :data:`SCAN_TAGS` (positions as tuples, missing
    tags as ``None``). Files that are not DICOM are skipped.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise DataPreparationError(f"Raw DICOM folder {root} does not exist. Download it with `lesionbench download ...`.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    rows = []
    for path in tqdm(files, desc=f"scanning {root.name}", unit="file", disable=not progress, leave=False):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(SCAN_TAGS))
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue  # READMEs, manifests, partial downloads: not DICOM
        if "SOPInstanceUID" not in ds:
            continue
        row = {"path": str(path)}
        for tag in SCAN_TAGS:
            val = ds.get(tag)
            if tag in ("ImagePositionPatient", "ImageOrientationPatient"):
                row[tag] = tuple(float(v) for v in val) if val is not None else None
            else:
                row[tag] = str(val) if val is not None else None
        rows.append(row)
    return pd.DataFrame(rows, columns=["path", *SCAN_TAGS])


@dataclass(frozen=True)
class CTSeries:
    """A CT volume read from DICOM, with the SOP Instance UID of each slice in volume (k) order."""

    image: object  # SimpleITK.Image (kept untyped so importing this module does not import SimpleITK)
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str
    frame_of_reference_uid: str


def _slice_normal(iop: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return np.cross(row, col)


def read_ct_series(files: pd.DataFrame) -> CTSeries:
    """Read one CT series (rows of :func:`scan_dicom` of a single SeriesInstanceUID) as a SimpleITK image.

    Slices are sorted by their position along the slice normal (GDCM's IPP sorter rule), so the
    volume's third axis is the normal and SimpleITK's direction matrix is right-handed. The result
    is checked slice by slice against ImagePositionPatient (see :data:`POSITION_TOLERANCE_MM`).
    """
    import SimpleITK as sitk

    if files["SeriesInstanceUID"].nunique() != 1:
        raise DataPreparationError(f"read_ct_series got {files['SeriesInstanceUID'].nunique()} series; pass one.")
    uid = str(files["SeriesInstanceUID"].iloc[0])
    files = files.dropna(subset=["ImagePositionPatient", "ImageOrientationPatient"])
    if len(files) < 2:
        raise DataPreparationError(f"CT series {uid} has {len(files)} slice(s) with a position; a volume needs at least 2.")
    iops = np.array(files["ImageOrientationPatient"].tolist(), float)
    if np.abs(iops - iops[0]).max() > 1e-4:
        raise DataPreparationError(f"CT series {uid} mixes slice orientations; it is not one volume.")
    normal = _slice_normal(iops[0])
    pos = np.array(files["ImagePositionPatient"].tolist(), float)
    order = np.argsort(pos @ normal, kind="stable")
    files = files.iloc[order]
    pos = pos[order]
    if len(np.unique(np.round(pos @ normal, 3))) != len(pos):
        raise DataPreparationError(f"CT series {uid} has several slices at the same position (duplicates or several acquisitions).")

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in files["path"]])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataPreparationError(f"SimpleITK could not read CT series {uid} ({exc}).") from exc
    # The volume must put every slice where its header says; otherwise (tilt, gaps) refuse it.
    got = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(len(pos))])
    err = float(np.abs(got - pos).max())
    if err > POSITION_TOLERANCE_MM:
        raise DataPreparationError(
            f"CT series {uid}: slices are not on a regular grid (largest position error {err:.3f} mm: "
            "gantry tilt, missing or unevenly spaced slices). Resample it before preparing."
        )
    # SimpleITK widens rescaled CT to int32 or float; HU fit int16, which halves the files.
    if image.GetPixelID() != sitk.sitkInt16:
        arr = sitk.GetArrayViewFromImage(image)
        if np.array_equal(arr, np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767:
            image = sitk.Cast(image, sitk.sitkInt16)
    return CTSeries(
        image=image,
        sop_instance_uids=tuple(str(u) for u in files["SOPInstanceUID"]),
        series_instance_uid=uid,
        frame_of_reference_uid=str(files["FrameOfReferenceUID"].iloc[0]),
    )


def _physical_to_index_matrix(image) -> tuple[np.ndarray, np.ndarray]:
    """(A, origin) with continuous index (i, j, k) = A @ (p - origin), from the image's own geometry."""
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), float)
    return np.linalg.inv(direction * spacing), np.array(image.GetOrigin(), float)


def _normalise_roi_name(name: str) -> str:
    return "".join(str(name).split()).lower()


def rtstruct_roi_names(rtstruct_path: str | Path) -> list[str]:
    """The ROI names of an RTSTRUCT file."""
    pydicom = _pydicom()
    ds = pydicom.dcmread(rtstruct_path, stop_before_pixels=True)
    return [str(r.ROIName) for r in ds.get("StructureSetROISequence", [])]


def rtstruct_referenced_series(rtstruct_path: str | Path) -> list[str]:
    """SeriesInstanceUIDs the RTSTRUCT's contours were drawn on."""
    pydicom = _pydicom()
    ds = pydicom.dcmread(rtstruct_path, stop_before_pixels=True)
    uids = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        for st in fr.get("RTReferencedStudySequence", []):
            uids += [str(se.SeriesInstanceUID) for se in st.get("RTReferencedSeriesSequence", [])]
    return uids


def rtstruct_mask(rtstruct_path: str | Path, reference, roi_name: str) -> object:
    """Rasterise the ROI ``roi_name`` (matched ignoring case and blanks) of an RTSTRUCT onto ``reference``.

    Returns a uint8 SimpleITK image with the reference's geometry. Raises
    :class:`DataPreparationError` naming the available ROIs when the ROI is absent, and when a
    contour does not lie on one slice of the reference grid or falls outside it.
    """
    import SimpleITK as sitk

    polygon = _optional("skimage.draw", "scikit-image").polygon
    pydicom = _pydicom()
    ds = pydicom.dcmread(rtstruct_path)
    wanted = _normalise_roi_name(roi_name)
    rois = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    numbers = [n for n, name in rois.items() if _normalise_roi_name(name) == wanted]
    if not numbers:
        raise DataPreparationError(
            f"{rtstruct_path}: no ROI named {roi_name!r}; it has {sorted(rois.values())}."
        )
    contours = [
        c
        for rc in ds.get("ROIContourSequence", [])
        if int(rc.ReferencedROINumber) in numbers
        for c in rc.get("ContourSequence", [])
    ]
    if not contours:
        raise DataPreparationError(f"{rtstruct_path}: ROI {roi_name!r} has no contours.")

    size = reference.GetSize()  # (nx, ny, nz)
    mask = np.zeros(size[::-1], dtype=bool)  # (z, y, x) as SimpleITK arrays are
    A, origin = _physical_to_index_matrix(reference)
    for n, contour in enumerate(contours):
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
            continue  # points and open polylines carry no area
        pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
        ijk = (pts - origin) @ A.T
        k_float = ijk[:, 2]
        k = int(np.round(k_float.mean()))
        if np.abs(k_float - k).max() > 0.25:
            raise DataPreparationError(
                f"{rtstruct_path}: contour {n + 1} of ROI {roi_name!r} is not on a slice of the CT grid "
                f"(index along the slice axis {k_float.min():.2f}..{k_float.max():.2f}); is it the right CT series?"
            )
        if not 0 <= k < size[2]:
            raise DataPreparationError(
                f"{rtstruct_path}: contour {n + 1} of ROI {roi_name!r} lies outside the CT volume (slice {k} of {size[2]})."
            )
        rr, cc = polygon(ijk[:, 1], ijk[:, 0], shape=(size[1], size[0]))
        fill = np.zeros((size[1], size[0]), dtype=bool)
        fill[rr, cc] = True
        mask[k] ^= fill
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(reference)
    return out


def seg_referenced_series(seg_path: str | Path) -> list[str]:
    """SeriesInstanceUIDs a DICOM SEG says it was derived from."""
    pydicom = _pydicom()
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    return [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])]


#: Words that mark a tumour segment when a SEG holds several segments.
TUMOUR_WORDS: tuple[str, ...] = ("tumor", "tumour", "neoplasm", "nodule", "lesion", "gtv", "mass", "cancer")


def _tumour_segments(seg) -> tuple[dict[int, str], list[int]]:
    """Every segment's ``label (property type)``, and the numbers of those that name a tumour."""
    described = {}
    for n in seg.segment_numbers:
        d = seg.get_segment_description(n)
        described[int(n)] = f"{d.segment_label} ({d.segmented_property_type.meaning})"
    return described, [n for n, text in described.items() if any(w in text.lower() for w in TUMOUR_WORDS)]


def choose_segment(seg) -> int:
    """The segment number of the tumour in a highdicom Segmentation.

    One segment: that one (the NSCLC-Radiogenomics SEGs hold one segment each, whatever its label
    says). Several: the single one whose label or segmented property type names a tumour.
    """
    numbers = list(seg.segment_numbers)
    if len(numbers) == 1:
        return int(numbers[0])
    described, hits = _tumour_segments(seg)
    if len(hits) == 1:
        return int(hits[0])
    raise DataPreparationError(
        f"SEG {seg.SOPInstanceUID} has {len(numbers)} segments {described} and "
        f"{'none' if not hits else 'several'} of them is clearly the tumour; pass segment=N."
    )


def largest_tumour_segment(seg) -> int:
    """The segment number of the largest tumour in a highdicom Segmentation (the most foreground voxels).

    For SEGs that hold one segment per tumour beside organ segments (Colorectal-Liver-Metastases:
    ``Tumor_1``, ``Tumor_2`` ... next to liver, remnant and vessels): among the segments whose label or
    property type names a tumour (:data:`TUMOUR_WORDS`), the one with most voxels; ties: the lower number.
    """
    described, hits = _tumour_segments(seg)
    if not hits:
        raise DataPreparationError(f"SEG {seg.SOPInstanceUID} has no segment naming a tumour ({TUMOUR_WORDS}) among {described}.")
    sizes = {n: sum(int(np.count_nonzero(f)) for f in _segment_frames(seg, n)) for n in hits}
    return max(hits, key=lambda n: (sizes[n], -n))


def seg_mask(seg_path: str | Path, ct: CTSeries, *, segment: int | Callable[[object], int] | None = None) -> object:
    """Map one segment of a DICOM SEG onto the CT grid; returns a uint8 SimpleITK image.

    ``segment``: a segment number, a rule that picks one from the read SEG (e.g. :func:`largest_tumour_segment`),
    or None for :func:`choose_segment`.

    By the SOP Instance UIDs of the CT slices the SEG frames reference (highdicom) when they all belong to ``ct``;
    otherwise (no references, or references into other acquisitions of a multiphase series) by each frame's
    ImagePositionPatient, which must fall on a slice of the CT with the same in-plane grid.
    """
    import SimpleITK as sitk

    _pydicom()
    hd = _optional("highdicom", "highdicom")

    try:
        seg = hd.seg.segread(seg_path)
    except Exception as exc:  # highdicom raises several types for malformed SEGs
        raise DataPreparationError(f"{seg_path}: not a readable DICOM SEG ({type(exc).__name__}: {exc}).") from exc
    number = int(segment(seg) if callable(segment) else segment) if segment is not None else choose_segment(seg)
    if seg.get("FrameOfReferenceUID") and ct.frame_of_reference_uid and str(seg.FrameOfReferenceUID) != ct.frame_of_reference_uid:
        raise DataPreparationError(
            f"{seg_path}: its FrameOfReferenceUID differs from the CT series {ct.series_instance_uid}; it was drawn on another scan."
        )
    # FRACTIONAL SEGs hold occupancy in [0, 1] after rescaling: a voxel is tumour from one half.
    threshold = 0.5 if str(seg.SegmentationType).upper() == "FRACTIONAL" else 0.0
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if referenced and referenced <= set(ct.sop_instance_uids):
        values = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(ct.sop_instance_uids),
            segment_numbers=[number],
            assert_missing_frames_are_empty=True,
        )
        arr = (np.asarray(values)[..., 0] > threshold).astype(np.uint8)
    else:
        logger.info("%s references slices outside CT %s (or none); mapping its frames by position.", seg_path, ct.series_instance_uid)
        arr = _seg_by_position(seg, number, ct, seg_path, threshold)
    size = ct.image.GetSize()
    if arr.shape != (size[2], size[1], size[0]):
        raise DataPreparationError(f"{seg_path}: frames of {arr.shape[1:]} pixels do not match the CT's {size[1::-1]}.")
    # Frames of the segment on slices outside this CT would be dropped silently: count them.
    expected = sum(int((frame > threshold).sum()) for frame in _segment_frames(seg, number))
    if int(arr.sum()) != expected:
        raise DataPreparationError(
            f"{seg_path}: segment {number} has {expected} voxels but only {int(arr.sum())} fall on CT series "
            f"{ct.series_instance_uid}; it was drawn (partly) on other slices."
        )
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ct.image)
    return out


def _segment_frames(seg, number: int):
    """The pixel arrays of the frames of segment ``number`` (rescaled to [0, 1] if fractional)."""
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if str(seg.SegmentationType).upper() == "FRACTIONAL":
        pixels = pixels / float(seg.MaximumFractionalValue)
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    for f, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        seg_id = group.get("SegmentIdentificationSequence") or (shared.get("SegmentIdentificationSequence") if shared else None)
        if seg_id and int(seg_id[0].ReferencedSegmentNumber) == number:
            yield pixels[f]


def _seg_by_position(seg, number: int, ct: CTSeries, seg_path, threshold: float) -> np.ndarray:
    image = ct.image
    size = image.GetSize()
    A, origin = _physical_to_index_matrix(image)
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if str(seg.SegmentationType).upper() == "FRACTIONAL":
        pixels = pixels / float(seg.MaximumFractionalValue)
    out = np.zeros(size[::-1], dtype=np.uint8)
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    for f, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        seg_id = group.get("SegmentIdentificationSequence") or (shared.get("SegmentIdentificationSequence") if shared else None)
        if not seg_id or int(seg_id[0].ReferencedSegmentNumber) != number:
            continue
        plane = group.get("PlanePositionSequence") or (shared.get("PlanePositionSequence") if shared else None)
        if not plane:
            raise DataPreparationError(f"{seg_path}: frame {f + 1} has neither a source image reference nor a position.")
        ijk = A @ (np.asarray(plane[0].ImagePositionPatient, float) - origin)
        k = int(np.round(ijk[2]))
        if np.abs(ijk - [0, 0, k]).max() > 0.25 or not 0 <= k < size[2]:
            raise DataPreparationError(
                f"{seg_path}: frame {f + 1} at {list(plane[0].ImagePositionPatient)} is not on a slice of CT "
                f"{ct.series_instance_uid} (index {np.round(ijk, 2).tolist()})."
            )
        if pixels[f].shape != (size[1], size[0]):
            raise DataPreparationError(f"{seg_path}: frame {f + 1} has {pixels[f].shape} pixels, the CT {(size[1], size[0])}.")
        out[k] |= (pixels[f] > threshold).astype(np.uint8)
    return out


@dataclass(frozen=True)
class MaskGeometry:
    """Seed and size of a lesion mask, in physical units."""

    centroid_lps: tuple[float, float, float]
    n_voxels: int
    volume_ml: float
    #: Diameter of the sphere of the same volume, ``(6 V / pi) ** (1/3)`` in mm.
    diameter_mm: float


def mask_geometry(mask) -> MaskGeometry:
    """Physical centroid (LPS mm), volume and equivalent-sphere diameter of a binary SimpleITK mask.

    The centroid is the mean continuous voxel index mapped through the image's transform (the
    transform is affine, so this equals the mean of the voxels' physical points).
    """
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(mask)
    idx = np.argwhere(arr > 0)
    if len(idx) == 0:
        raise DataPreparationError("The tumour mask is empty: the contour did not cover any voxel centre.")
    k, j, i = idx.mean(axis=0)
    centroid = mask.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
    volume_mm3 = len(idx) * float(np.prod(mask.GetSpacing()))
    return MaskGeometry(
        centroid_lps=tuple(float(c) for c in centroid),
        n_voxels=int(len(idx)),
        volume_ml=volume_mm3 / 1000.0,
        diameter_mm=float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)),
    )


def write_image_atomic(image, path: Path) -> None:
    """Write a SimpleITK image compressed, through a temporary file so an interrupted run leaves no half file."""
    import SimpleITK as sitk

    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))
