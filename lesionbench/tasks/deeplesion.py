"""DeepLesion lesion anatomical site (FMCIB task 1): ``deeplesion_site``, 8 classes.

Citation
    Yan K, Wang X, Lu L, Summers RM. DeepLesion: automated mining of large-scale lesion annotations and
    universal lesion detection with deep learning. J Med Imaging 2018;5(3):036501, doi:10.1117/1.JMI.5.3.036501.
    Task as defined by Pai S et al., Foundation model for cancer imaging biomarkers, Nat Mach Intell 2024,
    doi:10.1038/s42256-024-00807-9 (published lesion lists: AIM-Harvard/foundation-cancer-image-biomarker,
    data/preprocessing/deeplesion/annotations, MIT licence).

Licence
    DeepLesion is distributed by the NIH Clinical Center (https://nihcc.app.box.com/v/DeepLesion) for free
    use with attribution: cite Yan et al. 2018 and acknowledge the NIH Clinical Center as the data
    provider (see the README in the download). lesionbench ships none of its data.

Raw data (``--raw DIR``)
    ``DIR/DL_info.csv`` and ``DIR/Images_png/<patient>_<study>_<series>/<slice:03d>.png`` (the 56
    ``Images_png_*.zip`` parts unzipped into one folder). PNGs are 16-bit, HU = value - 32768.

Lesions and labels (exactly)
    1. Rows of ``DL_info.csv`` with ``Train_Val_Test`` 2 or 3 (DeepLesion's validation and test sets, the
       only labelled ones; rows with ``Coarse_lesion_type`` -1 are unlabelled and skipped).
    2. Slice interval (third value of ``Spacing_mm_px_``) <= 3 mm. The reference notebook's code says
       ``<= 5`` but its comment says 3 mm, and the published lists contain no lesion above 3 mm while
       DeepLesion's sets 2 and 3 are mostly 5-mm series (the notebook's own counts with ``<= 5`` are
       4,877 and 4,907 lesions, against the 2,610 and 2,441 published): the published lists were made
       with 3 mm, and this task reproduces them.
    3. The RECIST long and short axes (``Measurement_coordinates``: x11, y11, x12, y12 long axis, then
       the short axis; 0-based pixel column x, row y) must cross; lesions whose axis segments do not
       intersect are dropped, as in the reference. Their intersection is the seed.
    4. Label = ``Coarse_lesion_type - 1``: 0 bone, 1 abdomen, 2 mediastinum, 3 liver, 4 lung, 5 kidney,
       6 soft tissue, 7 pelvis.
    5. Split: ``Train_Val_Test`` 2 -> train. Set 3 -> val / test: ``--split fmcib`` reproduces the published
       lesion-level 50/50 split (scikit-learn ``train_test_split(test_size=0.5, random_state=21)`` over the
       set-3 lesions in ``DL_info.csv`` row order; 291 patients end up in both val and test);
       ``--split grouped`` (default) splits the set-3 patients 50/50, stratified by label (seed 21).
       DeepLesion's sets 2 and 3 share no patient.

Volumes and seeds
    Each lesion's sub-volume is the run of slices ``Slice_range`` (the context DeepLesion provides around
    the key slice), written once per (series, slice range) to ``OUT/images/<folder>_<start>-<end>.nii.gz``
    as int16 HU. Geometry: spacing (x, y, z) from ``Spacing_mm_px_``; image x = PNG column, y = PNG row,
    direction diag(1, 1, -1) with slices stacked in increasing file number (DeepLesion's own convention:
    slice numbers run head to feet); origin (0, 0, -(start - 1) * z spacing) so that all sub-volumes of a
    series share one frame. DeepLesion carries no patient position, so the origin is arbitrary; only
    positions relative to the image matter. The seed is the RECIST intersection on the key slice,
    converted to physical LPS mm with the written file's own geometry (continuous index
    ``(x, y, Key_slice_index - start)``).

    The published FMCIB coordinates differ in two ways (measured on the published files): coordX/coordY are
    swapped (the column/row of the RECIST point were passed as ITK i/j of DeepLesion's NIfTI, whose first
    axis is the PNG row), and the z index used is ``end - Key_slice_index + 1``, which is not the key slice
    of DeepLesion's NIfTI (``Key_slice_index - start``). Seeds here are on the key slice at the RECIST point.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._prepare import (
    SPLIT_SEED,
    VariantManifestTask,
    check_split_variant,
    grouped_split,
    image_header,
    split_counts,
    write_csv,
    write_task_json,
)

logger = logging.getLogger(__name__)

DOWNLOAD_URL = "https://nihcc.app.box.com/v/DeepLesion"
#: Offset of DeepLesion's 16-bit PNGs: HU = stored value - 32768.
PNG_OFFSET = 32768
#: Largest slice interval kept (see the module docstring for why 3 mm).
MAX_SLICE_INTERVAL_MM = 3.0
CLASS_NAMES: tuple[str, ...] = ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft_tissue", "pelvis")
#: ``DL_info.csv`` columns this task reads (the file has more: Bounding_boxes, Normalized_lesion_location ...).
DL_INFO_COLUMNS: tuple[str, ...] = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Lesion_diameters_Pixel_",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Train_Val_Test",
)
#: The direction of every written volume (LPS): x = PNG column, y = PNG row, slices head to feet.
DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

CITATION = (
    "Yan K, Wang X, Lu L, Summers RM. DeepLesion: automated mining of large-scale lesion annotations and universal "
    "lesion detection with deep learning. J Med Imaging 2018;5(3):036501. doi:10.1117/1.JMI.5.3.036501. "
    "Task: Pai S et al. Foundation model for cancer imaging biomarkers. Nat Mach Intell 2024. doi:10.1038/s42256-024-00807-9."
)
LICENCE = "DeepLesion (NIH Clinical Center): free use with attribution (cite Yan et al. 2018, acknowledge the NIH Clinical Center)."
LABEL_DERIVATION = (
    "DL_info.csv rows with Train_Val_Test 2/3, slice interval <= 3 mm and crossing RECIST axes; "
    "label = Coarse_lesion_type - 1; seed = RECIST axes' intersection on the key slice (LPS mm, true x/y)."
)


# --------------------------------------------------------------------------------- DL_info.csv
def read_dl_info(path: str | Path) -> pd.DataFrame:
    """Read ``DL_info.csv`` and check the columns this task needs; row order is kept (it defines the split)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataPreparationError(
            f"{path} could not be read as CSV ({type(exc).__name__}: {exc}). Download DL_info.csv again from {DOWNLOAD_URL}."
        ) from exc
    missing = [c for c in DL_INFO_COLUMNS if c not in df.columns]
    if missing:
        raise DataPreparationError(
            f"{path} lacks the DeepLesion column(s) {missing} (found {list(df.columns)[:20]}). "
            f"Is it DeepLesion's DL_info.csv? Download it from {DOWNLOAD_URL}."
        )
    return df


def _numbers(value: Any, n: int) -> list[float] | None:
    try:
        vals = [float(v) for v in str(value).split(",")]
    except ValueError:
        return None
    return vals if len(vals) == n and all(np.isfinite(vals)) else None


def recist_intersection(coords: list[float] | np.ndarray) -> tuple[float, float] | None:
    """Where the RECIST long axis (first 4 values) crosses the short axis (last 4); ``None`` if they do not.

    Coordinates are ``x11, y11, x12, y12, x21, y21, x22, y22`` in pixels. Segments that only touch at an
    end point count as crossing (as with shapely, which the reference used).
    """
    p1, p2, q1, q2 = (np.asarray(coords[i : i + 2], dtype=float) for i in (0, 2, 4, 6))
    r, s = p2 - p1, q2 - q1
    denom = r[0] * s[1] - r[1] * s[0]
    if abs(denom) < 1e-12:  # parallel or degenerate axes have no single crossing point
        return None
    d = q1 - p1
    t = (d[0] * s[1] - d[1] * s[0]) / denom
    u = (d[0] * r[1] - d[1] * r[0]) / denom
    eps = 1e-9
    if not (-eps <= t <= 1 + eps and -eps <= u <= 1 + eps):
        return None
    x, y = p1 + t * r
    return float(x), float(y)


def select_lesions(dl_info: pd.DataFrame, *, source: str = "DL_info.csv") -> pd.DataFrame:
    """The task's lesions from ``DL_info.csv``, one row each, in file order (see the module docstring).

    Columns: ``dl_row`` (0-based row of DL_info.csv), ``lesion_id``, ``patient_id``, ``folder``,
    ``key_slice``, ``slice_start``, ``slice_end``, ``spacing_x/y/z``, ``seed_x_px``, ``seed_y_px``,
    ``label``, ``class_name``, ``dl_split``, ``diameter_mm``, ``possibly_noisy``, ``volume``.
    Malformed values in candidate rows raise one :class:`DataPreparationError` listing them.
    """
    df = dl_info.reset_index(drop=True)
    tvt = pd.to_numeric(df["Train_Val_Test"], errors="coerce")
    ctype = pd.to_numeric(df["Coarse_lesion_type"], errors="coerce")
    noisy = pd.to_numeric(df["Possibly_noisy"], errors="coerce").fillna(-1).astype(int)
    candidates = np.flatnonzero(tvt.isin([2, 3]).to_numpy())
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    dropped = {"unlabelled": 0, "slice_interval": 0, "recist": 0}
    records = df.iloc[candidates].to_dict("records")
    for i, r in zip(candidates, records):
        where = f"row {i + 1} ({r['File_name']})"
        lt = ctype.iloc[i]
        if lt == -1:
            dropped["unlabelled"] += 1
            continue
        if not (np.isfinite(lt) and 1 <= lt <= len(CLASS_NAMES) and lt == int(lt)):
            problems.append(f"{where}: Coarse_lesion_type {r['Coarse_lesion_type']!r} is not one of -1, 1..8")
            continue
        spacing = _numbers(r["Spacing_mm_px_"], 3)
        srange = _numbers(r["Slice_range"], 2)
        coords = _numbers(r["Measurement_coordinates"], 8)
        diam = _numbers(r["Lesion_diameters_Pixel_"], 2)
        m = re.fullmatch(r"(\d+)_(\d+)_(\d+)_(\d+)\.png", str(r["File_name"]).strip())
        bad = [
            name
            for name, val in (("Spacing_mm_px_", spacing), ("Slice_range", srange), ("Measurement_coordinates", coords), ("Lesion_diameters_Pixel_", diam), ("File_name", m))
            if val is None
        ]
        if bad:
            problems.append(f"{where}: malformed {bad}")
            continue
        try:
            key = int(r["Key_slice_index"])
        except (TypeError, ValueError):
            problems.append(f"{where}: Key_slice_index {r['Key_slice_index']!r} is not an integer")
            continue
        start, end = int(srange[0]), int(srange[1])
        if not (start <= key <= end) or min(spacing) <= 0:
            problems.append(f"{where}: Key_slice_index {key} outside Slice_range {start}-{end} or non-positive spacing {spacing}")
            continue
        if spacing[2] > MAX_SLICE_INTERVAL_MM:
            dropped["slice_interval"] += 1
            continue
        seed = recist_intersection(coords)
        if seed is None:
            dropped["recist"] += 1
            continue
        folder = f"{m.group(1)}_{m.group(2)}_{m.group(3)}"
        stem = str(r["File_name"]).strip()[: -len(".png")]
        rows.append(
            {
                "dl_row": int(i),
                "lesion_id": f"{stem}_L{int(i):05d}",
                "patient_id": m.group(1),
                "folder": folder,
                "key_slice": key,
                "slice_start": start,
                "slice_end": end,
                "spacing_x": spacing[0],
                "spacing_y": spacing[1],
                "spacing_z": spacing[2],
                "seed_x_px": seed[0],
                "seed_y_px": seed[1],
                "label": int(lt) - 1,
                "class_name": CLASS_NAMES[int(lt) - 1],
                "dl_split": int(tvt.iloc[i]),
                "diameter_mm": diam[0] * spacing[0],
                "possibly_noisy": int(noisy.iloc[i]),
                "volume": f"{folder}_{start:03d}-{end:03d}.nii.gz",
            }
        )
    if problems:
        shown = "\n  - ".join(problems[:10]) + (f"\n  - ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataPreparationError(
            f"{source}: {len(problems)} malformed row(s) (rows counted from 1 after the header):\n  - {shown}\n"
            f"Download an intact DL_info.csv from {DOWNLOAD_URL}."
        )
    logger.info(
        "%s: %d lesions kept; dropped %d unlabelled, %d with slice interval > %.0f mm, %d whose RECIST axes do not cross",
        source, len(rows), dropped["unlabelled"], dropped["slice_interval"], MAX_SLICE_INTERVAL_MM, dropped["recist"],
    )
    if not rows:
        raise DataPreparationError(f"{source}: no lesion of DeepLesion's sets 2 or 3 passes the task's filters; is it the full DL_info.csv?")
    return pd.DataFrame(rows)


def assign_split(lesions: pd.DataFrame, variant: str) -> np.ndarray:
    """train / val / test per lesion for a split variant (``fmcib`` or ``grouped``); rows in DL_info order."""
    from sklearn.model_selection import train_test_split

    variant = check_split_variant(variant)
    lesions = lesions.reset_index(drop=True)
    out = np.where(lesions["dl_split"].to_numpy() == 2, "train", "").astype(object)
    idx3 = np.flatnonzero(lesions["dl_split"].to_numpy() == 3)
    if len(idx3) < 2:
        raise DataPreparationError(f"Only {len(idx3)} lesion(s) of DeepLesion's set 3: cannot make val and test.")
    if variant == "fmcib":
        val, test = train_test_split(idx3, test_size=0.5, random_state=SPLIT_SEED)
        out[val], out[test] = "val", "test"
    else:
        sub = lesions.iloc[idx3]
        out[idx3] = grouped_split(sub["label"].to_numpy(), sub["patient_id"].to_numpy(), {"val": 1, "test": 1})
    return out


# ------------------------------------------------------------------------------------ volumes
@dataclass(frozen=True)
class _VolumeJob:
    png_dir: Path
    start: int
    end: int
    spacing: tuple[float, float, float]
    out: Path


def volume_origin(start: int, spacing_z: float) -> tuple[float, float, float]:
    """Origin of a sub-volume starting at slice number ``start``: slice s sits at z = -(s - 1) * spacing_z."""
    return (0.0, 0.0, -(start - 1) * spacing_z)


def png_paths(png_dir: Path, start: int, end: int) -> list[Path]:
    return [png_dir / f"{s:03d}.png" for s in range(start, end + 1)]


def build_volume(png_dir: Path, start: int, end: int, spacing: tuple[float, float, float]):
    """Stack the 16-bit PNG slices ``start..end`` into an int16 HU SimpleITK image with the task's geometry."""
    import SimpleITK as sitk

    slices = []
    for p in png_paths(png_dir, start, end):
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise DataPreparationError(f"{p} could not be read as PNG ({exc}). Re-extract it from the Images_png zip parts ({DOWNLOAD_URL}).") from exc
        if img.GetPixelID() != sitk.sitkUInt16 or img.GetNumberOfComponentsPerPixel() != 1:
            raise DataPreparationError(
                f"{p} is {img.GetPixelIDTypeAsString()} with {img.GetNumberOfComponentsPerPixel()} channel(s), not a 16-bit "
                f"grey PNG. Use DeepLesion's Images_png parts (16-bit, HU + 32768), not a windowed 8-bit copy."
            )
        arr = sitk.GetArrayFromImage(img)
        if slices and arr.shape != slices[0].shape:
            raise DataPreparationError(f"{p} is {arr.shape[::-1]} pixels, unlike the other slices of {png_dir} ({slices[0].shape[::-1]}).")
        slices.append(arr)
    vol = (np.stack(slices).astype(np.int32) - PNG_OFFSET).astype(np.int16)
    image = sitk.GetImageFromArray(vol)  # array (z, row, column) -> image (x = column, y = row, z)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(DIRECTION)
    image.SetOrigin(volume_origin(start, spacing[2]))
    return image


def _convert(job: _VolumeJob) -> Path:
    import SimpleITK as sitk

    image = build_volume(job.png_dir, job.start, job.end, job.spacing)
    return atomic_write(job.out, lambda tmp: sitk.WriteImage(image, str(tmp), True))


def _volume_ok(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        image_header(path)
    except RuntimeError:
        logger.warning("%s exists but is unreadable; converting it again", path)
        return False
    return True


# --------------------------------------------------------------------------------------- task
@TASKS.register("deeplesion_site")
class DeepLesionSite(VariantManifestTask):
    """DeepLesion lesion site, 8 classes (FMCIB task 1). See the module docstring for the exact derivation."""

    #: Datasets its data come from (the leaderboard marks encoders pre-trained on them).
    data_sources = ("DeepLesion",)
    base_version = "1.0"

    @classmethod
    def meta_for(cls, split: str) -> TaskMeta:
        split = check_split_variant(split)
        return TaskMeta(
            name="deeplesion_site",
            version=f"{cls.base_version}+{split}",
            kind=TaskKind.MULTICLASS,
            description="DeepLesion lesion anatomical site, 8 classes (FMCIB task 1)"
            + (", published lesion-level split" if split == "fmcib" else ", patient-grouped split"),
            main_metric="balanced_accuracy",
            metrics=("balanced_accuracy", "map", "auc"),
            class_names=CLASS_NAMES,
            citation=CITATION,
            licence=LICENCE,
            label_derivation=LABEL_DERIVATION,
            published_split=split == "fmcib",
        )

    how_to_prepare = (
        "Download DL_info.csv and the Images_png zip parts from " + DOWNLOAD_URL + ", then run "
        "`lesionbench prepare {name} --raw RAW_DIR --out {data_dir}`."
    )

    @staticmethod
    def prepare(raw: str | Path | None, out: str | Path, *, split: str | None = None, workers: int | None = None) -> Path:
        """Build the NIfTI sub-volumes and the manifest from DeepLesion's raw download; returns the manifest path.

        Resumable: volumes already in ``out/images`` are kept. Missing raw files raise one
        :class:`DataPreparationError` naming them and where to download them.
        """
        from tqdm.auto import tqdm

        variant = check_split_variant(split)
        out = Path(out)
        dl_info_path, png_root = check_raw(raw)
        lesions = select_lesions(read_dl_info(dl_info_path), source=str(dl_info_path))
        lesions["split"] = assign_split(lesions, variant)

        images = out / "images"
        volumes = lesions.drop_duplicates("volume")
        jobs = [
            _VolumeJob(png_root / v.folder, int(v.slice_start), int(v.slice_end), (v.spacing_x, v.spacing_y, v.spacing_z), images / v.volume)
            for v in volumes.itertuples()
            if not _volume_ok(images / v.volume)
        ]
        missing = [p for j in jobs for p in png_paths(j.png_dir, j.start, j.end) if not p.is_file()]
        if missing:
            raise DataPreparationError(
                f"{len(missing)} DeepLesion PNG slice(s) needed for {len(jobs)} volume(s) are missing under {png_root}, "
                f"e.g. {', '.join(str(p) for p in missing[:5])}. Download the Images_png_*.zip parts from {DOWNLOAD_URL} "
                f"and unzip them all into {png_root} (one folder per series: <patient>_<study>_<series>/<slice>.png)."
            )
        logger.info("%d volume(s) to convert, %d already present", len(jobs), len(volumes) - len(jobs))
        if jobs:
            workers = max(1, int(workers or 1))
            if workers == 1:
                for job in tqdm(jobs, desc="deeplesion volumes", unit="vol"):
                    _convert(job)
            else:
                # spawn: ITK's thread pool in this process must not be forked
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    for _ in tqdm(pool.map(_convert, jobs), total=len(jobs), desc="deeplesion volumes", unit="vol"):
                        pass

        coords = np.empty((len(lesions), 3))
        headers: dict[str, Any] = {}
        for n, les in enumerate(lesions.itertuples()):
            if les.volume not in headers:
                headers[les.volume] = image_header(images / les.volume)
            ref, size = headers[les.volume]
            index = (les.seed_x_px, les.seed_y_px, float(les.key_slice - les.slice_start))
            if not all(-0.5 <= c <= s - 0.5 for c, s in zip(index, size)):
                raise DataPreparationError(
                    f"{images / les.volume}: seed of lesion {les.lesion_id} at index {index} is outside the image {size}. "
                    "Delete the file and re-run prepare."
                )
            coords[n] = ref.TransformContinuousIndexToPhysicalPoint(index)

        meta = DeepLesionSite.meta_for(variant)
        manifest = pd.DataFrame(
            {
                "lesion_id": lesions["lesion_id"],
                "patient_id": lesions["patient_id"],
                "image_path": "images/" + lesions["volume"],
                "coordX": coords[:, 0],
                "coordY": coords[:, 1],
                "coordZ": coords[:, 2],
                "split": lesions["split"],
                "label": lesions["label"],
                "class_name": lesions["class_name"],
                "diameter_mm": lesions["diameter_mm"],
                "dl_info_row": lesions["dl_row"],
                "dl_split": lesions["dl_split"],
                "key_slice": lesions["key_slice"],
                "spacing_z": lesions["spacing_z"],
                "possibly_noisy": lesions["possibly_noisy"],
            }
        )
        path = write_csv(manifest, out / "manifest.csv")
        write_task_json(out, meta, variant, raw=str(Path(raw).resolve()), counts=split_counts(manifest), max_slice_interval_mm=MAX_SLICE_INTERVAL_MM)
        logger.info("deeplesion_site (%s): %d lesions %s -> %s", variant, len(manifest), split_counts(manifest), path)
        return path


DeepLesionSite.meta = DeepLesionSite.meta_for("grouped")


def check_raw(raw: str | Path | None) -> tuple[Path, Path]:
    """``(DL_info.csv, Images_png/)`` of a raw DeepLesion folder, or a :class:`DataPreparationError` saying what to download."""
    if raw is None:
        raise DataPreparationError(
            f"deeplesion_site needs the raw DeepLesion download: give --raw DIR with DIR/DL_info.csv and DIR/Images_png/ (from {DOWNLOAD_URL})."
        )
    raw = Path(raw)
    info, pngs = raw / "DL_info.csv", raw / "Images_png"
    missing = [str(p) for p in (info, pngs) if not p.exists()]
    if missing:
        raise DataPreparationError(
            f"DeepLesion raw folder {raw} lacks {missing}. Download DL_info.csv and the Images_png_*.zip parts from "
            f"{DOWNLOAD_URL} and unzip the parts into {pngs} (so that e.g. {pngs}/000001_01_01/103.png exists)."
        )
    return info, pngs
