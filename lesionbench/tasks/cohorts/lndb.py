"""LNDb lung nodules (CHUSJ Porto): texture (``lndb_texture``, 3 classes) and rated malignancy (``lndb_malignancy``).

Data: LNDb, 294 chest CTs read by up to three of five radiologists (LIDC-IDRI-like protocol: nodules >= 3 mm
segmented and rated, nodules < 3 mm and non-nodules marked by their centroid). Not in IDC: Zenodo record
6613714 (:data:`IMAGES`: ``data0.rar`` ... ``data5.rar`` with ``LNDb-XXXX.mhd/.raw``, ``trainset_csv.zip``
with ``trainNodules.csv``, ``trainNodules_gt.csv``, ``trainFleischner.csv``). ``lesionbench download lndb
--out RAW`` fetches and verifies them against the record (sizes and md5 from Zenodo's API; offline against
the saved record JSON, else the sha256 digests shipped here); extract the ``.rar`` parts into RAW yourself
(``unrar x``, ``7z x`` or ``bsdtar -xf``), then ``lesionbench prepare lndb_texture --raw RAW``. The
malignancy ratings are per radiologist in ``chars_trainNodules.csv`` of the LNDb v4 record 8348419
(:data:`V4`); the download fetches it too when the record lists it (that name is from third-party listings of
the v4 files: the download says so if the record does not hold it).

Citation: Pedrosa J, Aresta G, Ferreira C, et al. LNDb: A Lung Nodule Database on Computed Tomography.
arXiv:1911.08434 (2019); the challenge: Pedrosa J et al., Med Image Anal 70:102027 (2021),
doi:10.1016/j.media.2021.102027; LNDb v4: Ferreira CA et al., Sci Data 11:482 (2024), doi:10.1038/s41597-024-03345-6.

Licence: CC BY-NC-ND 4.0 (non-commercial, no derivatives), as the Zenodo record's description states; its
licence field reads CC BY 4.0, and the stricter terms are the ones to honour. lesionbench redistributes
nothing: the manifest points at the user's own copy.

Lesions: the merged findings of ``trainNodules_gt.csv`` (one row per nodule, readers' findings joined by the
LNDb authors) with ``Nodule == 1`` (``Nodule == 0``: non-nodules, listed in ``excluded.csv``); seed = its
``x, y, z``, which are the ``.mhd`` file's physical coordinates, i.e. ITK's LPS, the frame lesionbench's
manifests use (the headers say ``AnatomicalOrientation = RAI``, ITK's name for that frame; the LNDb scripts
map them to voxels with the ``.mhd`` origin, spacing and TransformMatrix, as SimpleITK does; LUNA16's ``.mhd``
world coordinates are read the same way in :mod:`lesionbench.tasks.luna16`). Every seed is checked to lie inside its image. ``diameter_mm`` is the
equivalent-sphere diameter of ``Volume`` (mm^3; empty when 0). Labels:

* ``lndb_texture``: the readers' mean texture rating ``Text`` (LIDC scale, 1 ground-glass ... 3 part-solid ...
  5 solid) in the LNDb challenge's three classes, with the thresholds of its own ``calcNodTexClass``:
  0 GGO (``Text < 7/3``), 1 part-solid (``7/3 <= Text < 11/3``), 2 solid (``Text >= 11/3``); ``Text == 0``
  (not rated) excluded.
* ``lndb_malignancy``: each reader's ``malignancy`` rating (1-5) of ``chars_trainNodules.csv`` joined to the
  merged finding through its ``RadID``/``RadFindingID`` pairs; ``numpy.rint`` of their mean (halves to even),
  1-2 benign 0, 4-5 malignant 1, 3 excluded, unrated findings excluded (as :mod:`lesionbench.tasks.luna16`
  does with LIDC ratings). These are radiologists' suspicion ratings, not pathology.

Splits: five patient-grouped folds (one CT per patient) stratified by the label (seed 0), fold ``k`` test,
``k + 1`` validation, the rest training, as the other cohorts.

TumorImagingBench (``data/eval/lndb/lndb_formatting.ipynb``) builds texture from ``trainNodules.csv``: one row
per reader's finding (a nodule read by three radiologists is three rows), ``Text`` 1-2 -> 0, 3 -> 1, 4-5 -> 2,
``Text == 0`` dropped, seed = ``x, y, z``; split by CT in file order (first 50% train, then 15% / 85% of the
rest val / test). lesionbench uses one row per nodule (the merged findings, so no near-duplicate rows), the
challenge's class thresholds on the readers' mean (a single reader's rating maps as TumorImagingBench maps it),
and seeded stratified patient folds. No Fleischner task: the Fleischner class (``trainFleischner.csv``) labels
a whole CT from all its nodules, not a lesion, and its class 1 has 4 CTs.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.data.manifest import resolve_paths, validate_manifest
from lesionbench.benchmark.encoders.plugins import TASKS
from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.tasks import _zenodo
from lesionbench.tasks._nsclc import assign_folds, split_for_fold
from lesionbench.tasks._prepare import image_header, write_csv, write_json
from lesionbench.tasks.cohorts._binary import FoldedCohortTask

logger = logging.getLogger(__name__)

#: The LNDb record: CTs and the challenge's training CSVs. sha256 digests of these files as pinned by the torch-em
#: project's LNDb loader (the record itself publishes md5, which is preferred whenever it can be read).
IMAGES = _zenodo.RecordSpec(
    "6613714",
    names=(*(f"data{i}.rar" for i in range(6)), "trainset_csv.zip"),
    shipped={
        "data0.rar": "sha256:2ae6b7b760f5286bde2f51b32fcdedbf4e1e35aee575cb971bbde5d1aef517d7",
        "data1.rar": "sha256:f5b33500127e09c0c320561c9c72e72a7934f02214bb091d717d95ed27977057",
        "data2.rar": "sha256:a8819b5ad36023cb85d1bf840a136c413bbac38dbd3cbc2b4bddb2ef43acf0cf",
        "data3.rar": "sha256:05a4b817c112aec650e78e6ba6908737a26550510de5a2b62d2b8c0dbc3059e7",
        "data4.rar": "sha256:ffa1a2de6525a1409c7d5a0d0bbdf9ce758219cca7914c08471adf3cb4405d15",
        "data5.rar": "sha256:6e94ebcc2650879feb6928b30f8bd6f8675a1c0557d9e7c06852fba81e5cea6d",
        "trainset_csv.zip": "sha256:cda2e6377344dd90b7926f2c10da29d5260ca59337bd8f1c1490639ffa8fbb94",
    },
)
#: LNDb v4: the per-reader characteristics, malignancy among them.
V4 = _zenodo.RecordSpec("8348419", names=("chars_trainNodules.csv",))
FINDINGS_CSV = "trainNodules_gt.csv"
CHARS_CSV = "chars_trainNodules.csv"
FINDING_COLUMNS = ("LNDbID", "RadID", "RadFindingID", "FindingID", "x", "y", "z", "AgrLevel", "Nodule", "Volume", "Text")
CHARS_COLUMNS = ("LNDbID", "RadID", "FindingID", "malignancy")
TEXTURE_CLASSES = ("GGO", "part-solid", "solid")
#: The LNDb challenge's texture-class thresholds on the mean rating (7/3 and 11/3); the tolerance absorbs a CSV
#: that rounds the means (the nearest possible means, 2 and 2.5, 3.5 and 4, are far from it).
TEXTURE_THRESHOLDS = (7 / 3, 11 / 3)
_TOL = 1e-3
MALIGNANCY_LABEL = {1: 0, 2: 0, 4: 1, 5: 1}
_MHD = re.compile(r"LNDb-(\d{4})\.mhd")
CITATION = (
    "Pedrosa J et al. LNDb: A Lung Nodule Database on Computed Tomography. arXiv:1911.08434 (2019); Pedrosa J et al. "
    "Med Image Anal 70:102027 (2021), doi:10.1016/j.media.2021.102027; Ferreira CA et al. Sci Data 11:482 (2024)."
)
LICENCE = "CC BY-NC-ND 4.0 (Zenodo record 6613714's description; its licence field reads CC BY 4.0)"
_HOW = ("Run `lesionbench download lndb --out RAW` (Zenodo), extract data0.rar ... data5.rar into RAW "
        "(unrar x / 7z x / bsdtar -xf), then `lesionbench prepare {name} --raw RAW --out {data_dir}`.")  # fmt: skip


# ------------------------------------------------------------------------------------------- tables
def _locate(raw: Path, name: str, *, zip_name: str | None = None, record: _zenodo.RecordSpec) -> tuple[bytes, str]:
    """The bytes of ``name`` found anywhere under ``raw`` (or inside ``raw/zip_name``), and where it was."""
    found = sorted(raw.rglob(name))
    if found:
        return found[0].read_bytes(), str(found[0])
    if zip_name and (raw / zip_name).is_file():
        try:
            with zipfile.ZipFile(raw / zip_name) as z:
                member = next((m for m in z.namelist() if Path(m).name == name), None)
                if member is not None:
                    return z.read(member), f"{raw / zip_name}:{member}"
        except zipfile.BadZipFile as exc:
            raise DataPreparationError(f"{raw / zip_name} is not a readable zip ({exc}); `lesionbench download lndb --out {raw}` checks and re-fetches it.") from exc
    where = f" (or in {zip_name})" if zip_name else ""
    raise DataPreparationError(f"{name} is not under {raw}{where}. It is in Zenodo record {record.record_id} ({record.page}): "
                               f"`lesionbench download lndb --out {raw}` fetches it.")  # fmt: skip


def _read(data: bytes, source: str, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataPreparationError(f"{source} could not be read as CSV ({exc}); download it again.") from exc
    # the v4 tables capitalise differently (allNods.csv has "Malignancy"): match the names case-insensitively
    canonical = {c.lower(): c for c in columns}
    df.columns = [canonical.get(str(c).strip().lower(), str(c).strip()) for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataPreparationError(f"{source} has no column(s) {missing} (found {list(df.columns)}); it is not LNDb's file. Download it again.")
    return df


def read_findings(raw: Path) -> tuple[pd.DataFrame, str]:
    """``trainNodules_gt.csv`` (the merged findings) from ``raw`` or its ``trainset_csv.zip``, and where it was read."""
    data, source = _locate(raw, FINDINGS_CSV, zip_name="trainset_csv.zip", record=IMAGES)
    df = _read(data, source, FINDING_COLUMNS)
    for c in ("LNDbID", "FindingID", "x", "y", "z", "AgrLevel", "Nodule", "Volume", "Text"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = df[["LNDbID", "FindingID", "x", "y", "z", "Nodule"]].isna().any(axis=1).to_numpy()
    if bad.any():
        raise DataPreparationError(f"{source}: row(s) {list(np.flatnonzero(bad)[:5] + 2)} have no LNDbID, FindingID, x, y, z or Nodule; download it again.")
    df[["LNDbID", "FindingID"]] = df[["LNDbID", "FindingID"]].astype(int)
    dup = df.duplicated(["LNDbID", "FindingID"])
    if dup.any():
        raise DataPreparationError(f"{source} lists finding(s) {df.loc[dup, ['LNDbID', 'FindingID']].values.tolist()[:3]} twice; use the original file.")
    return df, source


def lesions(findings: pd.DataFrame) -> pd.DataFrame:
    """One row per merged finding: ids, seed, readers, diameter, and why it is not a lesion (``reason``, empty if it is)."""
    pid = findings["LNDbID"].map("LNDb-{:04d}".format)
    vol = findings["Volume"].to_numpy(float)
    diam = np.where(vol > 0, np.cbrt(6.0 * np.clip(vol, 0, None) / np.pi), np.nan)
    return pd.DataFrame({
        "lesion_id": pid + "_" + findings["FindingID"].map("{:02d}".format), "patient_id": pid,
        "LNDbID": findings["LNDbID"], "FindingID": findings["FindingID"],
        "coordX": findings["x"].astype(float), "coordY": findings["y"].astype(float), "coordZ": findings["z"].astype(float),
        "diameter_mm": diam, "n_readers": findings["AgrLevel"], "RadID": findings["RadID"], "RadFindingID": findings["RadFindingID"],
        "reason": np.where(findings["Nodule"].to_numpy() == 1, "", "not a nodule (Nodule 0: a non-nodule finding)"),
    })  # fmt: skip


def texture_class(text: np.ndarray) -> np.ndarray:
    """0 GGO, 1 part-solid, 2 solid from mean texture ratings (LNDb's thresholds 7/3 and 11/3); NaN where unrated (0)."""
    t = np.asarray(text, dtype=float)
    out = np.where(t >= TEXTURE_THRESHOLDS[1] - _TOL, 2.0, np.where(t >= TEXTURE_THRESHOLDS[0] - _TOL, 1.0, 0.0))
    return np.where(np.isfinite(t) & (t > 0), out, np.nan)


def texture_labels(findings: pd.DataFrame, raw: Path) -> pd.DataFrame:
    """The lesion table with ``label`` (texture class) and ``texture_rating``; reasons for the unrated."""
    df = lesions(findings)
    df["texture_rating"] = findings["Text"].to_numpy(float)
    df["label"] = texture_class(df["texture_rating"].to_numpy())
    df.loc[(df["reason"] == "") & df["label"].isna(), "reason"] = "no texture rating (Text 0)"
    return df


def reader_malignancy(findings: pd.DataFrame, chars: pd.DataFrame) -> pd.Series:
    """Per merged finding, the mean ``malignancy`` of the readers' findings it joins (NaN when none is rated)."""
    chars = chars.assign(malignancy=pd.to_numeric(chars["malignancy"], errors="coerce"))
    rated = {(int(float(r.LNDbID)), str(r.RadID).strip(), int(float(r.FindingID))): float(r.malignancy)
             for r in chars.itertuples() if np.isfinite(r.malignancy) and r.malignancy > 0}  # fmt: skip
    means = []
    for f in findings.itertuples():
        rads = str(f.RadID).split(",")
        ids = str(f.RadFindingID).split(",")
        if len(rads) != len(ids):
            raise DataPreparationError(f"{FINDINGS_CSV}: LNDb {f.LNDbID} finding {f.FindingID} pairs RadID {f.RadID!r} with RadFindingID {f.RadFindingID!r}; use the original file.")
        vals = [rated.get((int(f.LNDbID), r.strip(), int(float(i)))) for r, i in zip(rads, ids, strict=True)]
        vals = [v for v in vals if v is not None]
        means.append(float(np.mean(vals)) if vals else np.nan)
    return pd.Series(means, index=findings.index)


def malignancy_labels(findings: pd.DataFrame, raw: Path) -> pd.DataFrame:
    """The lesion table with ``label`` (rint of the readers' mean malignancy: 1-2 -> 0, 4-5 -> 1) and ``malignancy``."""
    data, source = _locate(raw, CHARS_CSV, record=V4)
    chars = _read(data, source, CHARS_COLUMNS)
    df = lesions(findings)
    mean = reader_malignancy(findings, chars).to_numpy()
    rating = np.where(np.isfinite(mean), np.rint(mean), np.nan)
    df["malignancy_mean"] = mean
    df["malignancy"] = rating
    df["label"] = [MALIGNANCY_LABEL.get(int(r), np.nan) if np.isfinite(r) else np.nan for r in rating]
    todo = df["reason"] == ""
    df.loc[todo & np.isnan(rating), "reason"] = f"no reader's malignancy rating in {CHARS_CSV}"
    df.loc[todo & (rating == 3), "reason"] = "malignancy 3 (indeterminate)"
    return df


# ------------------------------------------------------------------------------------------ prepare
def find_images(raw: Path) -> dict[int, Path]:
    """``LNDbID -> LNDb-XXXX.mhd`` anywhere under ``raw`` (the extracted data*.rar parts; masks are not matched)."""
    images: dict[int, Path] = {}
    for p in sorted(raw.rglob("LNDb-*.mhd")):
        m = _MHD.fullmatch(p.name)
        if m is None:
            continue
        images.setdefault(int(m.group(1)), p)
    return images


def _seeds_inside(df: pd.DataFrame, images: dict[int, Path]) -> None:
    outside = []
    for lndb_id, rows in df.groupby("LNDbID"):
        try:
            ref, size = image_header(images[lndb_id])
        except RuntimeError as exc:
            raise DataPreparationError(f"{images[lndb_id]} could not be read ({exc}). Extract its data*.rar part again.") from exc
        for r in rows.itertuples():
            idx = ref.TransformPhysicalPointToContinuousIndex((r.coordX, r.coordY, r.coordZ))
            if not all(-0.5 <= c <= s - 0.5 for c, s in zip(idx, size)):
                outside.append(f"{r.lesion_id}: seed ({r.coordX:.1f}, {r.coordY:.1f}, {r.coordZ:.1f}) mm is voxel "
                               f"({', '.join(f'{c:.1f}' for c in idx)}) of {images[lndb_id].name}, size {size}")  # fmt: skip
    if outside:
        raise DataPreparationError(
            f"{len(outside)} LNDb seed(s) fall outside their image:\n  - " + "\n  - ".join(outside[:10])
            + "\nThe images do not match the CSV: extract data0.rar ... data5.rar of Zenodo record 6613714 again."
        )


def prepare_lndb(task: str, classes: tuple[str, ...], labels: Callable[[pd.DataFrame, Path], pd.DataFrame],
                 raw: str | Path | None, out: str | Path) -> Path:  # fmt: skip
    """Write ``manifest.csv``, ``excluded.csv`` and ``label_counts.json`` for an LNDb task into ``out``."""
    if raw is None or not Path(raw).is_dir():
        raise DataPreparationError(f"{task} needs the LNDb download (--raw DIR); {raw} is not a folder. " + _HOW.format(name=task, data_dir="OUT"))
    raw, out = Path(raw), Path(out)
    findings, source = read_findings(raw)
    table = labels(findings, raw)
    images = find_images(raw)
    if not images:
        raise DataPreparationError(f"No LNDb-XXXX.mhd under {raw}: extract data0.rar ... data5.rar (Zenodo record 6613714) into it.")
    no_image = (table["reason"] == "") & ~table["LNDbID"].isin(list(images))
    table.loc[no_image, "reason"] = [f"LNDb-{i:04d}.mhd is not under the raw folder" for i in table.loc[no_image, "LNDbID"]]
    keep = table["reason"] == ""
    df = table[keep].drop(columns=["reason"]).reset_index(drop=True)
    if df.empty:
        raise DataPreparationError(f"No usable {task} lesion in {source} with an image under {raw}; reasons: {table['reason'].value_counts().head(3).to_dict()}.")
    if df["label"].nunique() < 2:
        raise DataPreparationError(f"{task}: every usable lesion under {raw} has class {classes[int(df['label'].iloc[0])]!r}; prepare the whole download.")
    _seeds_inside(df, images)
    df["label"] = df["label"].astype(int)
    df.insert(2, "image_path", [str(images[i].resolve()) for i in df["LNDbID"]])
    df["cohort"] = "LNDb"
    df["fold"] = assign_folds(df.assign(event=df["label"]))
    df["split"] = split_for_fold(df["fold"].to_numpy(), 0)
    validate_manifest(resolve_paths(df, out), kind=TaskKind.MULTICLASS if len(classes) > 2 else TaskKind.BINARY, source=f"{task} manifest being written")
    path = write_csv(df, out / "manifest.csv")
    excluded = table.loc[~keep, ["lesion_id", "patient_id", "reason"]]
    write_csv(excluded, out / "excluded.csv")
    counts = {"n_lesions": len(df), "n_patients": int(df["patient_id"].nunique()), "n_excluded": len(excluded),
              "classes": {name: int((df["label"] == k).sum()) for k, name in enumerate(classes)}}  # fmt: skip
    write_json(counts, out / "label_counts.json")
    logger.info("%s: %d lesions on %d CTs %s, %d findings excluded (see %s)", task, len(df), counts["n_patients"], counts["classes"], len(excluded), out / "excluded.csv")
    return path


# ----------------------------------------------------------------------------------------- download
def download(out: str | Path | None, *, dry_run: bool = False, progress: bool = True) -> str:
    """Fetch and verify the LNDb files into ``out`` (or, ``dry_run``, only list them); returns what to do next.

    Offline (``LESIONBENCH_OFFLINE=1``) nothing is fetched: the files already in ``out`` are verified against the
    saved record (``zenodo-6613714.json``) or the shipped digests, and a missing file is named with its address.
    """
    folder = Path(out) if out is not None else None
    if folder is None and not dry_run:
        raise DataPreparationError("lesionbench download lndb needs --out DIR (or --dry-run to only list what it would fetch).")
    lines = []
    for spec, needed_by in ((IMAGES, "lndb_texture, lndb_malignancy"), (V4, "lndb_malignancy")):
        try:
            record = _zenodo.load_record(spec, folder)
        except DataPreparationError as exc:
            if spec is IMAGES:
                raise
            logger.warning("%s: %s", CHARS_CSV, exc)
            lines.append(f"not checked: {CHARS_CSV} ({needed_by}) of {spec.page}: {exc}")
            continue
        absent = [n for n in spec.names if n not in record.files]
        if absent and spec is V4:  # the v4 file name comes from third-party listings
            lines.append(f"Zenodo record {spec.record_id} lists no {absent}; {needed_by} needs {CHARS_CSV}: find it on {spec.page}.")
            continue
        if dry_run:
            lines += [f"{f.name:<24} {f.size if f.size is not None else '?':>14} {f.checksum}  {f.url}" for f in (record.files[n] for n in spec.names)]
            continue
        _zenodo.download(record, folder, progress=progress)
        lines.append(f"verified {', '.join(spec.names)} against {record.source}")
    if dry_run:
        return "\n".join(lines + ["dry run, nothing downloaded."]) + "\n"
    return "\n".join(lines + [
        f"next: extract the CTs, e.g. `for f in {folder}/data?.rar; do unrar x -o+ \"$f\" {folder}/; done` (or 7z x / bsdtar -xf), "
        f"then `lesionbench prepare lndb_texture --raw {folder}` (trainset_csv.zip is read as it is).",
    ]) + "\n"  # fmt: skip


# --------------------------------------------------------------------------------------------- tasks
def _meta(name: str, kind: TaskKind, classes: tuple[str, ...], what: str, derivation: str, metrics: tuple[str, ...]) -> TaskMeta:
    return TaskMeta(
        name=name, version="1.0", kind=kind, description=f"LNDb: {what} of lung nodules (one row per merged finding); patient-grouped 5-fold protocol.",
        main_metric=metrics[0], metrics=metrics, class_names=classes, citation=CITATION, licence=LICENCE,
        label_derivation=derivation + " StratifiedGroupKFold(5, shuffle, seed 0) by CT on the label; fold k test, fold k+1 val, rest train.",
    )  # fmt: skip


@TASKS.register("lndb_texture")
class LndbTexture(FoldedCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("LNDb",)
    meta = _meta("lndb_texture", TaskKind.MULTICLASS, TEXTURE_CLASSES, "texture (GGO, part-solid, solid)",
                 "trainNodules_gt.csv findings with Nodule 1; mean Text < 7/3 GGO, < 11/3 part-solid, else solid; Text 0 excluded.",
                 ("balanced_accuracy", "auc", "map"))  # fmt: skip

    @classmethod
    def prepare(cls, raw: str | Path | None, out: str | Path) -> Path:
        """Prepare from the LNDb download (see the module docstring); returns the manifest path."""
        return prepare_lndb("lndb_texture", TEXTURE_CLASSES, texture_labels, raw, out)


@TASKS.register("lndb_malignancy")
class LndbMalignancy(FoldedCohortTask):
    __doc__ = __doc__
    how_to_prepare = _HOW
    data_sources = ("LNDb",)
    meta = _meta("lndb_malignancy", TaskKind.BINARY, ("benign", "malignant"), "radiologist-rated malignancy",
                 "readers' malignancy (chars_trainNodules.csv, LNDb v4) joined to trainNodules_gt.csv findings with Nodule 1; "
                 "rint of the mean: 1-2 benign, 4-5 malignant, 3 and unrated excluded.", ("auc", "average_precision", "balanced_accuracy"))  # fmt: skip

    @classmethod
    def prepare(cls, raw: str | Path | None, out: str | Path) -> Path:
        """Prepare from the LNDb download plus LNDb v4's chars_trainNodules.csv; returns the manifest path."""
        return prepare_lndb("lndb_malignancy", ("benign", "malignant"), malignancy_labels, raw, out)

