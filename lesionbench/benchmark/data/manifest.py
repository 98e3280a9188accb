"""The lesion manifest: the one table every stage passes on, and its validation.

One row per lesion: ``lesion_id`` (unique), ``patient_id``, ``image_path``, ``coordX/Y/Z`` (physical
mm, LPS, as ITK and DICOM use them), ``split`` (train / val / test), the task's label columns
(``label``; or ``time`` in days and ``event`` 0/1 for survival) and optionally ``mask_path`` and
``diameter_mm``. Other columns pass through untouched.

Validation runs before any expensive work and reports every problem at once, each with its row and
column and how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ManifestError
from lesionbench.benchmark.types import LABEL_COLUMNS, REQUIRED_COLUMNS, Split, TaskKind, TaskMeta

logger = logging.getLogger(__name__)

#: Problems beyond this many per kind are summarised, so a broken 10,000-row file stays readable.
MAX_ROWS_LISTED = 10


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest from CSV or Parquet; relative image and mask paths resolve against its folder.

    The id columns are read as strings (a patient id like ``0001`` must not become ``1``).
    """
    path = Path(path)
    return resolve_paths(read_table(path), path.parent)


def read_table(path: str | Path) -> pd.DataFrame:
    """A lesion table from CSV or Parquet as written (paths not resolved), ids read as strings.

    A missing, empty or unparsable file is one :class:`ManifestError` naming it. ``attrs["source"]``
    holds the path so that later errors can name the file.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(str(path), ["file not found. Check the path, or create it with `lesionbench prepare` / `lesionbench synth`."])
    if path.is_dir():
        raise ManifestError(str(path), ["is a folder. Give the manifest file itself (e.g. manifest.csv in it)."])
    if not path.is_file():  # a FIFO or device: reading would block or never end
        raise ManifestError(str(path), ["is not a regular file (a FIFO, socket or device). Give the manifest file itself."])
    if path.stat().st_size == 0:
        raise ManifestError(str(path), ["is empty (0 bytes). A manifest is a header line (lesion_id, patient_id, image_path, coordX, coordY, coordZ, split, labels) and one row per lesion."])
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str, "image_path": str, "mask_path": str, "split": str})
    except Exception as exc:  # pandas raises many types for corrupt files
        raise ManifestError(str(path), [f"could not be read as {'Parquet' if parquet else 'CSV'} ({type(exc).__name__}: {exc}). Is it a manifest file?"]) from exc
    df.attrs["source"] = str(path)  # lets later errors name the file
    return df


def resolve_paths(df: pd.DataFrame, base: Path) -> pd.DataFrame:
    """Make relative ``image_path`` / ``mask_path`` entries absolute against ``base``."""
    df = df.copy()
    for col in ("image_path", "mask_path"):
        if col in df.columns:
            df[col] = [
                p if (not isinstance(p, str) or not p or Path(p).is_absolute()) else str((base / p).resolve())
                for p in df[col]
            ]
    return df


#: Column names people commonly write for the manifest's columns (lower-case, without _ or spaces).
_COLUMN_ALIASES = {
    "image": "image_path", "imagepath": "image_path", "img": "image_path", "path": "image_path", "file": "image_path",
    "mask": "mask_path", "maskpath": "mask_path", "x": "coordX", "y": "coordY", "z": "coordZ",
    "lesion": "lesion_id", "lesionid": "lesion_id", "id": "lesion_id", "patient": "patient_id", "patientid": "patient_id",
    "y_true": "label", "target": "label", "class": "label", "subset": "split", "fold": "split",
    "diameter": "diameter_mm", "days": "time", "status": "event", "dead": "event",
}


def column_hints(missing: Iterable[str], found: Iterable[str]) -> str:
    """A "rename X to Y" sentence for the missing columns that a found column probably meant ('' if none).

    Matches ignore case, ``_``, ``-`` and spaces (``coordx``, ``Image Path``), then common aliases
    (``image`` for ``image_path``), then close spellings.
    """
    import difflib

    def norm(name: str) -> str:
        return "".join(ch for ch in str(name).lower() if ch not in "_- ")

    found = [str(c) for c in found]
    renames: list[str] = []
    for want in missing:
        match = next((c for c in found if norm(c) == norm(want)), None)
        match = match or next((c for c in found if _COLUMN_ALIASES.get(norm(c).replace("_", "")) == want), None)
        if match is None:
            close = difflib.get_close_matches(norm(want), [norm(c) for c in found], n=1, cutoff=0.75)
            match = next((c for c in found if close and norm(c) == close[0]), None)
        if match is not None and match != want:
            renames.append(f"{match!r} to {want!r}")
    return f" Rename column {', '.join(renames)} (names are case-sensitive)." if renames else ""


@dataclass(frozen=True)
class _Problems:
    items: list[str]

    def add_rows(self, rows: Iterable[int], what: str, fix: str) -> None:
        rows = list(rows)
        if not rows:
            return
        shown = ", ".join(str(r) for r in rows[:MAX_ROWS_LISTED])
        more = f" and {len(rows) - MAX_ROWS_LISTED} more" if len(rows) > MAX_ROWS_LISTED else ""
        self.items.append(f"row{'s' if len(rows) > 1 else ''} {shown}{more}: {what}. {fix}".rstrip())


def validate_manifest(
    df: pd.DataFrame,
    *,
    kind: TaskKind | None = None,
    meta: TaskMeta | None = None,
    source: str = "manifest",
    check_files: bool = True,
    check_images: bool = False,
) -> pd.DataFrame:
    """Check a manifest and return it with normalised dtypes; raise one :class:`ManifestError` listing every problem.

    Rows are reported 1-based as data rows (row 1 is the first line after the header).
    ``kind`` (or ``meta.kind``) selects the label columns; with ``meta`` multiclass labels are also
    checked against its classes. Without either, only the common columns are checked.
    ``check_images`` also reads each image's header (not its voxels): an unreadable or incomplete
    image, and a seed point outside its image, are reported with the rest (``lesionbench validate``).
    """
    if meta is not None:
        kind = meta.kind
    problems = _Problems([])
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    label_cols = LABEL_COLUMNS[kind] if kind is not None else ()
    missing += [c for c in label_cols if c not in df.columns]
    if missing:
        problems.items.append(
            f"missing column(s) {missing}; found {list(df.columns)}. A manifest needs "
            f"{list(REQUIRED_COLUMNS) + list(label_cols)} (coordinates in LPS mm)." + column_hints(missing, df.columns)
        )
        raise ManifestError(source, problems.items)
    if len(df) == 0:
        raise ManifestError(source, ["has no rows. A manifest needs one row per lesion."])

    df = df.reset_index(drop=True).copy()
    rownum = np.arange(1, len(df) + 1)

    # ids
    for col in ("lesion_id", "patient_id"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        problems.add_rows(rownum[empty.to_numpy()], f"empty {col}", f"Give every lesion a {col}.")
        df[col] = df[col].astype(str)
    dup = df["lesion_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        ids = sorted(set(df.loc[dup, "lesion_id"]))
        problems.add_rows(
            rownum[dup], f"duplicate lesion_id {ids[:MAX_ROWS_LISTED]}", "lesion_id must be unique: rename or drop the duplicates."
        )

    # coordinates
    for col in ("coordX", "coordY", "coordZ"):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(vals.to_numpy(dtype=float))
        problems.add_rows(rownum[bad], f"{col} is not a finite number ({_examples(df[col], bad)})", "Give the seed point in physical millimetres (LPS).")
        df[col] = vals.astype(float)

    # split
    split = df["split"].astype(str).str.strip().str.lower()
    bad = ~split.isin([s.value for s in Split]).to_numpy()
    problems.add_rows(rownum[bad], f"unknown split value ({_examples(df['split'], bad)})", "Use one of train, val, test.")
    df["split"] = split

    # files
    if check_files:
        for col in ("image_path", "mask_path"):
            if col not in df.columns:
                continue
            paths = df[col]
            present = paths.notna() & (paths.astype(str).str.strip() != "")
            if col == "image_path":
                problems.add_rows(rownum[~present.to_numpy()], "empty image_path", "Every lesion needs its CT image.")
            # an image may be a folder holding one DICOM series (read_image reads it); a mask is a file
            found = (lambda q: q.is_file() or q.is_dir()) if col == "image_path" else (lambda q: q.is_file())
            missing_files = [i for i, (p, ok) in enumerate(zip(paths, present, strict=True)) if ok and not found(Path(str(p)))]
            if col == "mask_path" and (folders := [i for i in missing_files if Path(str(paths.iloc[i])).is_dir()]):
                problems.add_rows(rownum[folders], f"mask_path is a folder (first: {paths.iloc[folders[0]]})", "Give each mask as one file (NIfTI, NRRD or MetaImage) on its image's grid.")
                missing_files = [i for i in missing_files if i not in set(folders)]
            if odd := [i for i in missing_files if Path(str(paths.iloc[i])).exists()]:  # a FIFO, socket or device: never read
                problems.add_rows(rownum[odd], f"{col} is not a regular file (a FIFO, socket or device; first: {paths.iloc[odd[0]]})",
                                  "Give an image file (or a DICOM series folder); a FIFO would block the reader forever.")  # fmt: skip
                missing_files = [i for i in missing_files if i not in set(odd)]
            if missing_files:
                first = str(paths.iloc[missing_files[0]])
                problems.add_rows(
                    rownum[missing_files],
                    f"{col} file not found (first: {first})",
                    "Check the path (relative paths resolve against the manifest's folder) or re-run `lesionbench prepare`.",
                )

    if check_images and check_files:
        _check_image_headers(df, rownum, problems)

    # labels
    if kind in (TaskKind.MULTICLASS, TaskKind.BINARY):
        lab = pd.to_numeric(df["label"], errors="coerce")
        nan = lab.isna().to_numpy()
        problems.add_rows(rownum[nan], f"label is missing or not a number ({_examples(df['label'], nan)})", "Fill the label or drop the lesion.")
        labv = lab.to_numpy(dtype=float)
        nonint = ~nan & (labv != np.round(labv))
        problems.add_rows(rownum[nonint], "label is not an integer class index", "Labels are 0-based class indices.")
        n_classes = 2 if kind == TaskKind.BINARY else (meta.n_classes if meta is not None and meta.n_classes else None)
        if n_classes is not None:
            out = ~nan & ((labv < 0) | (labv >= n_classes))
            problems.add_rows(rownum[out], f"label outside 0..{n_classes - 1} ({_examples(df['label'], out)})", "Use 0-based class indices of the task.")
        if not problems.items:
            df["label"] = lab.astype(int)
    elif kind == TaskKind.SURVIVAL:
        t = pd.to_numeric(df["time"], errors="coerce")
        tv = t.to_numpy(dtype=float)
        bad_t = ~np.isfinite(tv)
        problems.add_rows(rownum[bad_t], f"time is missing or not a number ({_examples(df['time'], bad_t)})", "Give the follow-up time in days.")
        neg = np.isfinite(tv) & (tv < 0)
        problems.add_rows(rownum[neg], "negative survival time", "Follow-up time is days from baseline and cannot be negative.")
        e = pd.to_numeric(df["event"], errors="coerce")
        ev = e.to_numpy(dtype=float)
        bad_e = ~np.isin(ev, [0.0, 1.0])
        problems.add_rows(rownum[bad_e], f"event is not 0 or 1 ({_examples(df['event'], bad_e)})", "event is 1 for death observed, 0 for censored.")
        if not problems.items:
            df["time"] = tv
            df["event"] = ev.astype(int)

    if "diameter_mm" in df.columns:
        d = pd.to_numeric(df["diameter_mm"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isnan(d) & ((d <= 0) | ~np.isfinite(d))
        problems.add_rows(rownum[bad], "diameter_mm is not a positive number", "Give the lesion diameter in mm, or leave it empty.")
        df["diameter_mm"] = d

    if problems.items:
        raise ManifestError(source, problems.items)
    return df


def _check_image_headers(df: pd.DataFrame, rownum: np.ndarray, problems: _Problems) -> None:
    """Per image and mask: can its header be read, is its geometry usable, is a .gz complete; per mask: is it
    on its image's grid; per image: do its rows' seeds lie inside it."""
    from lesionbench.benchmark.data._image_checks import MASK_GRID_FIX, grid_mismatch

    coords = df[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
    images: dict[str, object] = {}  # path -> geometry of every usable image
    for path, idx in df.groupby("image_path", sort=False).indices.items():
        p = Path(str(path))
        if p.is_dir():  # a DICOM series: its slice headers (positions, orientations) and ITK's geometry
            from lesionbench.benchmark.data.dicomslices import series_header_problem

            why, geometry = series_header_problem(p)
        elif p.is_file():
            why, geometry = _header_problem(p)
        else:
            continue  # reported above
        if why is not None:
            problems.add_rows(rownum[idx], why.rstrip("."), "")
            continue
        images[str(path)] = geometry
        outside = [i for i in idx if np.all(np.isfinite(coords[i])) and not geometry.contains(coords[i])]
        if outside:
            first = tuple(round(float(v), 2) for v in coords[outside[0]])
            problems.add_rows(
                rownum[outside],
                f"seed point outside its image {p.name} (first: {first} mm; the image spans {_extent(geometry)})",
                "Check that coordX/Y/Z are physical LPS millimetres (not voxel indices, not RAS: negate X and Y) and that image_path is the right scan.",
            )
    if "mask_path" not in df.columns:
        return
    masks = df["mask_path"].where(df["mask_path"].notna(), "").astype(str)
    pairs = pd.DataFrame({"mask": masks, "image": df["image_path"].astype(str)})
    geometries: dict[str, object] = {}
    for (mask, image), idx in pairs.groupby(["mask", "image"], sort=False).indices.items():
        if not mask.strip() or not Path(mask).is_file():
            continue
        if mask not in geometries:
            why, geometries[mask] = _header_problem(Path(mask))
            if why is not None:
                rows = np.flatnonzero(masks.to_numpy() == mask)
                problems.add_rows(rownum[rows], f"mask_path: {why.rstrip('.')}", "")
        if geometries[mask] is not None and image in images and (diff := grid_mismatch(geometries[mask], images[image])) is not None:
            problems.add_rows(rownum[idx], f"mask_path {mask} is not on the grid of its image {Path(image).name} ({diff})", MASK_GRID_FIX)


def _header_problem(p: Path):
    """(why the image at ``p`` cannot be used or None, its header geometry or None)."""
    import SimpleITK as sitk

    from lesionbench.benchmark.data._image_checks import HEADER_FIX, gzip_truncation_problem, header_problem, metaimage_data_file_problem, read_fix, sitk_reason
    from lesionbench.benchmark.data.geometry import ImageGeometry

    from lesionbench.benchmark.data.rawmap import data_size_problem
    from lesionbench.benchmark.data.reading import MAX_IMAGE_BYTES_ENV, max_image_bytes

    why = metaimage_data_file_problem(p) or data_size_problem(p)
    reader = sitk.ImageFileReader()
    if why is None:
        reader.SetFileName(str(p))
        try:
            reader.ReadImageInformation()  # the header only
            if reader.GetDimension() != 3:
                why = f"{p} is a {reader.GetDimension()}D image, not a 3D volume"
            elif (bad := header_problem(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())) is not None:
                why = f"{p}: {bad}. {HEADER_FIX}"
            else:
                bytes_per_voxel = sitk.Image([1, 1, 1], reader.GetPixelID()).GetSizeOfPixelComponent()
                declared = int(np.prod(reader.GetSize(), dtype=object)) * bytes_per_voxel * reader.GetNumberOfComponents()
                why = gzip_truncation_problem(p, declared)
                if why is None and declared > max_image_bytes():
                    why = f"{p} declares {declared / 2**30:.1f} GiB of voxels in its header, more than {max_image_bytes() / 2**30:.1f} GiB ({MAX_IMAGE_BYTES_ENV}): a damaged or crafted header"
        except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
            reason = sitk_reason(exc)
            why = f"{p} is not a readable image ({reason}). {read_fix(reason)}"
    return why, (ImageGeometry.of(reader) if why is None else None)


def _extent(geometry) -> str:
    corners = np.array([[i, j, k] for i in (0, geometry.size[0] - 1) for j in (0, geometry.size[1] - 1) for k in (0, geometry.size[2] - 1)], float)
    pts = geometry.index_to_world(corners)
    lo, hi = pts.min(0), pts.max(0)
    return ", ".join(f"{a} {lo[n]:.1f}..{hi[n]:.1f}" for n, a in enumerate("XYZ")) + " mm"


def _examples(col: pd.Series, mask: np.ndarray, n: int = 3) -> str:
    vals = col[mask].head(n).tolist()
    return "got " + ", ".join(repr(v) for v in vals) + (" ..." if mask.sum() > n else "")


def load_manifest(path: str | Path, *, meta: TaskMeta | None = None, kind: TaskKind | None = None, check_files: bool = True,
                  check_images: bool = False) -> pd.DataFrame:
    """Read and validate a manifest file in one step."""
    df = read_manifest(path)
    return validate_manifest(df, meta=meta, kind=kind, source=str(path), check_files=check_files, check_images=check_images)


class ManifestTask:
    """Base class for tasks whose lesions live in a prepared manifest file.

    Subclasses set ``meta`` (and usually a ``prepare`` function). The manifest is read from
    ``manifest_path``, or ``<data_dir>/manifest.csv`` (``.parquet`` also accepted) where ``data_dir``
    defaults to ``$LESIONBENCH_DATA/<task name>``.
    """

    meta: TaskMeta
    #: What to tell a user whose data is not there yet.
    how_to_prepare: str = "Run `lesionbench prepare {name} --raw RAW_DIR --out {data_dir}`."

    def __init__(self, data_dir: str | Path | None = None, manifest_path: str | Path | None = None):
        from lesionbench.benchmark.paths import data_root

        self.data_dir = Path(data_dir) if data_dir is not None else data_root() / self.meta.name
        self.manifest_path = Path(manifest_path) if manifest_path is not None else None

    def resolve_manifest_path(self) -> Path:
        if self.manifest_path is not None:
            return self.manifest_path
        for name in ("manifest.parquet", "manifest.csv"):
            if (self.data_dir / name).exists():
                return self.data_dir / name
        return self.data_dir / "manifest.csv"

    def manifest(self) -> pd.DataFrame:
        path = self.resolve_manifest_path()
        if not path.exists():
            raise self.missing_manifest(path)
        return load_manifest(path, meta=self.meta)

    def missing_manifest(self, path: Path) -> ManifestError:
        """The error for a manifest ``path`` that is not there: the task's folder one level down when ``data_dir``
        is the folder above it (``$LESIONBENCH_DATA`` or a cohort root holding several tasks), else how to prepare it."""
        import glob

        from lesionbench.benchmark.paths import data_root

        name = self.meta.name
        below = [self.data_dir / name, *sorted(self.data_dir.glob(f"*/{glob.escape(name)}"))] if self.manifest_path is None else []
        for inner in below:  # one or two levels down: $LESIONBENCH_DATA/<task>, <root>/synthetic/<task>
            if any((inner / n).is_file() for n in ("manifest.csv", "manifest.parquet")):
                return ManifestError(str(path), [f"task {name!r} has no manifest here, but {inner} has one: use --data-dir {inner} "
                                                 f"(python: data_dir={str(inner)!r})."])  # fmt: skip
        if below and self.data_dir.resolve() == data_root().resolve():  # the data root itself, with the task not prepared yet
            return ManifestError(str(path), [f"{self.data_dir} is the data root ($LESIONBENCH_DATA); task {name!r} lives in its own folder "
                                             f"{below[0]}, which is not prepared yet. " + self.how_to_prepare.format(name=name, data_dir=below[0])])  # fmt: skip
        return ManifestError(str(path), [f"task {self.meta.name!r} has no prepared data here. " + self.how_to_prepare.format(name=self.meta.name, data_dir=self.data_dir)])
