"""PyRadiomics baseline: hand-crafted shape, intensity and texture features of each lesion's region.

Registry name ``radiomics``; options ``params`` and ``default_radius_mm``::

    get_encoder("radiomics")                    # "light": original image, all classes, 107 features
    get_encoder("radiomics", params="full")     # original + LoG (1-5 mm) + wavelet: 1,316 features
    get_encoder("radiomics", params="my.yaml")  # any PyRadiomics parameter file

Both shipped parameter files (``radiomics_params_light.yaml``, ``radiomics_params.yaml``, next to
this module) resample to 1 mm isotropic, use a fixed bin width of 25 HU and no normalisation; each
file documents its choices. The SHA-256 of the parameter file is part of the encoder's fingerprint.

**The lesion's region** (PyRadiomics needs a mask), decided per lesion, first match wins:

1. ``mask_path`` (LUNG1 GTV, LIDC consensus, the synthetic masks), on the image's voxel grid (a mask
   on another grid is an error naming both, as in ``lesionbench validate``). The region is every voxel carrying the
   label in the optional ``mask_label`` column, else the label found at the seed voxel (so a
   per-image mask must give each lesion its own label value).
   If the seed voxel is background, the region is the connected component (26-connectivity, any
   label) nearest to the seed in millimetres. Sources ``"mask"`` and ``"mask_nearest_component"``.
2. ``diameter_mm``: a ball of that diameter around the seed (source ``"sphere_diameter"``).
3. otherwise a ball of radius ``default_radius_mm`` (10 mm) around the seed (``"sphere_default"``).
An empty mask file falls through to 2/3 with a warning. Every ball contains at least the seed voxel.
The region source of each lesion of the last call is in :attr:`RadiomicsEncoder.last_report`
(lesion_id, region_source, label, voxels, error), each call logs a summary at INFO level, and
:func:`region_sources` gives the rule per lesion from a manifest alone (for run summaries).

**Two ways in.** The harness calls :meth:`RadiomicsEncoder.encode_lesions` with each image once
(the features module reads the image, caches the features and runs images in a process pool when
``workers > 1``); this is the faithful path: full resolution, masks of any size. For
``check_encoder`` and other patch-based callers, :meth:`RadiomicsEncoder.encode` also accepts
patches cut with ``meta.patch`` (``with_mask=True``: channel 0 the (HU + 1024) / 3072 patch at
1 mm, channel 1 the lesion mask); there the region is clipped to the 50 mm patch and an empty mask
channel falls back to the default ball at the patch centre.

**Speed.** Each lesion's image and mask are cropped to the region's bounding box plus 15 mm before
PyRadiomics runs (about 100x faster on a full CT than handing it the whole volume). PyRadiomics
anchors its 1 mm grid at the mask's origin, so the values equal PyRadiomics on the cropped pair
exactly and PyRadiomics on the whole image only up to that sub-millimetre grid shift.

**Failures.** The feature names (and so ``meta.feature_dim``) are fixed by the parameter file, found
once by running the extractor on a small phantom. A lesion whose extraction fails (for example a
region of a single voxel) gets a row of NaN, with a warning naming the lesion. NaN, infinite and
constant features are dropped when the probe is fitted, decided on the training subset only
(the scorer's :class:`lesionbench.benchmark.scoring.probes.FeatureFilter`, which also keeps the all-NaN row
of a failed lesion from dropping every column).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from lesionbench.benchmark.errors import ConfigurationError, ImageError
from lesionbench.benchmark.encoders.plugins import ENCODERS
from lesionbench.benchmark.types import EncoderMeta, PatchSpec

logger = logging.getLogger(__name__)

__all__ = ["RadiomicsEncoder", "PARAMETER_FILES", "lesion_region", "region_sources", "REGION_SOURCES"]

_HERE = Path(__file__).resolve().parent
#: The shipped parameter files, by the name ``params`` accepts.
PARAMETER_FILES: dict[str, Path] = {
    "light": _HERE / "radiomics_params_light.yaml",
    "full": _HERE / "radiomics_params.yaml",
}
#: Every value ``region_source`` can take.
REGION_SOURCES: tuple[str, ...] = (
    "mask",
    "mask_nearest_component",
    "sphere_diameter",
    "sphere_default",
    "patch_mask",
    "patch_sphere_default",
)
#: Image margin kept around a region before PyRadiomics resamples it (its padDistance is 10 mm).
#: Cropping first makes extraction ~100x faster on a full CT (PyRadiomics' B-spline resampling
#: otherwise filters the whole volume for every lesion); the 1 mm grid is then anchored at the crop
#: corner, so values differ slightly (sub-millimetre grid shift) from PyRadiomics run on the whole image.
_CROP_MARGIN_MM = 15.0


@ENCODERS.register("radiomics")
class RadiomicsEncoder:
    """PyRadiomics features of each lesion's region (see the module docstring for the region rules).

    Parameters
    ----------
    params:
        ``"light"`` (default, 107 features), ``"full"`` (1,316 features) or the path of a PyRadiomics
        parameter file.
    default_radius_mm:
        Radius of the ball used when a lesion has neither ``mask_path`` nor ``diameter_mm``.
    """

    def __init__(self, params: str | Path = "light", *, default_radius_mm: float = 10.0):
        self.params_path = _resolve_params(params)
        self.params_name = str(params) if str(params) in PARAMETER_FILES else self.params_path.name
        try:
            radius = float(default_radius_mm)
        except (TypeError, ValueError):
            radius = float("nan")
        if not (math.isfinite(radius) and radius > 0):
            raise ConfigurationError(f"default_radius_mm must be a positive number of millimetres, got {default_radius_mm!r}.")
        self.default_radius_mm = radius
        digest = hashlib.sha256(self.params_path.read_bytes()).hexdigest()
        self.feature_names: tuple[str, ...] = _feature_names(str(self.params_path), digest)
        self.meta = EncoderMeta(
            name="radiomics",
            version="1",
            feature_dim=len(self.feature_names),
            patch=PatchSpec(size=(50, 50, 50), spacing_mm=(1.0, 1.0, 1.0), method="fmcib", with_mask=True),
            description=(
                f"PyRadiomics {_pyradiomics_version()} features ({self.params_name}: {len(self.feature_names)}) "
                "of the lesion mask, else a ball of diameter_mm, else of default_radius_mm."
            ),
            citation="van Griethuysen et al., Cancer Research 2017, doi 10.1158/0008-5472.CAN-17-0339",
            settings=(
                ("params", self.params_name),
                ("params_sha256", digest),
                ("default_radius_mm", repr(radius)),
                ("pyradiomics", _pyradiomics_version()),
            ),
        )
        #: One row per lesion of the last call: lesion_id, region_source, label, voxels, error.
        self.last_report: pd.DataFrame = _empty_report()
        self._extractor: Any = None

    # ------------------------------------------------------------------ image path (the harness)
    def encode_lesions(self, image: sitk.Image, lesions: pd.DataFrame) -> np.ndarray:
        """Features ``(len(lesions), feature_dim)`` float32 for the lesions of one image, in row order.

        ``lesions`` carries ``coordX/Y/Z`` (LPS mm) and optionally ``lesion_id``, ``mask_path`` and
        ``diameter_mm``. Raises :class:`ImageError` listing every seed outside the image.
        """
        missing = [c for c in ("coordX", "coordY", "coordZ") if c not in lesions.columns]
        if missing:
            raise ConfigurationError(f"radiomics: the lesion table lacks the column(s) {missing}; it needs coordX/Y/Z (LPS mm).")
        if image.GetDimension() != 3:
            raise ImageError(f"radiomics needs a 3D image, got a {image.GetDimension()}D image.")
        ids = lesions["lesion_id"].astype(str).tolist() if "lesion_id" in lesions.columns else [str(i) for i in range(len(lesions))]
        seeds = []
        outside = []
        for row, lid in zip(lesions.itertuples(index=False), ids):
            point = (float(row.coordX), float(row.coordY), float(row.coordZ))
            idx = _seed_index(image, point)
            if idx is None:
                outside.append(f"lesion {lid!r}: seed {point} mm is outside the image (size {image.GetSize()}, origin {image.GetOrigin()})")
            seeds.append(idx)
        if outside:
            raise ImageError(
                f"{len(outside)} seed point(s) lie outside the image; check the coordinates (LPS mm) and image_path:\n  "
                + "\n  ".join(outside)
            )
        out = np.full((len(lesions), self.meta.feature_dim), np.nan, dtype=np.float32)
        report = []
        mask_cache: dict[str, np.ndarray | None] = {}
        for i, (row, lid) in enumerate(zip(lesions.to_dict("records"), ids)):
            region, source, label = lesion_region(
                image, row, seed_index=seeds[i], default_radius_mm=self.default_radius_mm, mask_cache=mask_cache
            )
            out[i], error = self._extract(image, region, lid)
            report.append({"lesion_id": lid, "region_source": source, "label": label, "voxels": int(region.sum()), "error": error})
        self._finish_report(report)
        return out

    # ------------------------------------------------------------------ patch path (check_encoder)
    def encode(self, patches: np.ndarray) -> np.ndarray:
        """Features of patches cut per ``meta.patch`` (channel 0: (HU + 1024) / 3072, channel 1: mask)."""
        arr = np.asarray(patches, dtype=np.float32)
        if arr.ndim != 5 or arr.shape[1] not in (1, 2):
            raise ConfigurationError(
                f"radiomics.encode expects patches shaped (n, 2, D, H, W) (scaled HU, lesion mask), got {arr.shape}."
            )
        out = np.full((len(arr), self.meta.feature_dim), np.nan, dtype=np.float32)
        report = []
        sp = self.meta.patch.spacing_mm
        for i, p in enumerate(arr):
            hu = np.clip(np.rint(p[0] * 3072.0 - 1024.0), -32768, 32767).astype(np.int16)
            image = sitk.GetImageFromArray(hu)  # patch axes are (z, y, x), as SimpleITK's arrays
            image.SetSpacing(tuple(float(s) for s in sp[::-1]))
            region = p[1] > 0.5 if p.shape[0] == 2 else np.zeros(hu.shape, dtype=bool)
            source, label = "patch_mask", 1
            if not region.any():
                centre = tuple(s // 2 for s in hu.shape[::-1])
                region = _ball(image, centre, self.default_radius_mm)
                source, label = "patch_sphere_default", 0
            out[i], error = self._extract(image, region, f"patch {i}")
            report.append({"lesion_id": f"patch {i}", "region_source": source, "label": label, "voxels": int(region.sum()), "error": error})
        self._finish_report(report)
        return out

    # ------------------------------------------------------------------ internals
    def _extract(self, image: sitk.Image, region: np.ndarray, what: str) -> tuple[np.ndarray, str]:
        """One lesion: crop around the region, run PyRadiomics, map to the fixed feature order."""
        row = np.full(self.meta.feature_dim, np.nan, dtype=np.float32)
        crop_img, crop_mask = _crop(image, region)
        try:
            with _quiet_glcm():
                result = self._get_extractor().execute(crop_img, crop_mask, label=1)
        except Exception as exc:  # PyRadiomics raises bare ValueError/RuntimeError/... on bad regions
            logger.warning("radiomics: %s: extraction failed (%s: %s); its features are NaN.", what, type(exc).__name__, exc)
            return row, f"{type(exc).__name__}: {exc}"
        for j, name in enumerate(self.feature_names):
            value = result.get(name)
            try:
                row[j] = float(value)
            except (TypeError, ValueError):
                pass  # missing or non-numeric: stays NaN, handled when the probe is fitted
        return row, ""

    def _get_extractor(self) -> Any:
        if self._extractor is None:
            self._extractor = _make_extractor(str(self.params_path))
        return self._extractor

    def _finish_report(self, report: list[dict[str, Any]]) -> None:
        self.last_report = pd.DataFrame(report, columns=list(_empty_report().columns))
        if len(self.last_report):
            counts = self.last_report["region_source"].value_counts().to_dict()
            failed = int((self.last_report["error"] != "").sum())
            logger.debug("radiomics: %d lesion(s); regions %s; %d failed.", len(report), counts, failed)

    def __getstate__(self) -> dict[str, Any]:
        # The PyRadiomics extractor is rebuilt on demand (it is cheap); keeps pickling for process pools light.
        state = dict(self.__dict__)
        state["_extractor"] = None
        return state

    def __repr__(self) -> str:
        return f"RadiomicsEncoder(params={self.params_name!r}, features={self.meta.feature_dim}, default_radius_mm={self.default_radius_mm})"


# ---------------------------------------------------------------------- regions
def lesion_region(
    image: sitk.Image,
    lesion: dict[str, Any] | pd.Series,
    *,
    seed_index: tuple[int, int, int] | None = None,
    default_radius_mm: float = 10.0,
    mask_cache: dict[str, np.ndarray | None] | None = None,
) -> tuple[np.ndarray, str, int]:
    """The region of one lesion on ``image``'s grid: ``(bool array (z, y, x), source, label)``.

    ``label`` is the mask label used (0 for balls). See the module docstring for the rules.
    """
    lesion = dict(lesion)
    point = (float(lesion["coordX"]), float(lesion["coordY"]), float(lesion["coordZ"]))
    if seed_index is None:
        seed_index = _seed_index(image, point)
        if seed_index is None:
            raise ImageError(f"lesion {lesion.get('lesion_id', '?')!r}: seed {point} mm is outside the image.")
    mask_path = lesion.get("mask_path")
    if _present(mask_path):
        key = str(mask_path)
        cache = mask_cache if mask_cache is not None else {}
        if key not in cache:
            cache[key] = _read_mask(image, key)
        mask = cache[key]
        wanted = lesion.get("mask_label")
        if mask is not None and _present(wanted):
            # An explicit label (manifest column mask_label) wins over the value under the seed.
            if np.any(mask == int(wanted)):
                return mask == int(wanted), "mask", int(wanted)
            logger.warning(
                "radiomics: lesion %r: mask_label %s does not occur in %s; using the label under the seed instead.",
                lesion.get("lesion_id", "?"), wanted, key,
            )
        if mask is not None:
            x, y, z = seed_index
            label = int(mask[z, y, x])
            if label != 0:
                return mask == label, "mask", label
            region, label = _nearest_component(image, mask, point)
            return region, "mask_nearest_component", label
        logger.warning(
            "radiomics: lesion %r: mask %s is empty; using a ball around the seed instead.",
            lesion.get("lesion_id", "?"), key,
        )
    diameter = lesion.get("diameter_mm")
    if _present(diameter) and float(diameter) > 0:
        return _ball(image, seed_index, float(diameter) / 2.0), "sphere_diameter", 0
    return _ball(image, seed_index, default_radius_mm), "sphere_default", 0


def region_sources(lesions: pd.DataFrame) -> pd.Series:
    """Which rule gives each lesion its region, from the manifest alone (no image is read).

    ``"mask"`` where ``mask_path`` is set (it becomes ``"mask_nearest_component"`` in
    :attr:`RadiomicsEncoder.last_report` when the seed voxel is background), else
    ``"sphere_diameter"`` where ``diameter_mm`` is a positive number, else ``"sphere_default"``.
    For run summaries: ``region_sources(manifest).value_counts()``; the features module runs images
    in worker processes, whose per-call reports do not reach the caller.
    """
    def one(row: dict[str, Any]) -> str:
        if _present(row.get("mask_path")):
            return "mask"
        d = row.get("diameter_mm")
        return "sphere_diameter" if _present(d) and float(d) > 0 else "sphere_default"

    return pd.Series([one(r) for r in lesions.to_dict("records")], index=lesions.index, name="region_source")


def _present(value: Any) -> bool:
    """False for the ways a manifest spells "no value": None, NaN, pd.NA, an empty string."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return False
    return not (isinstance(value, str) and not value.strip())


def _seed_index(image: sitk.Image, point: tuple[float, float, float]) -> tuple[int, int, int] | None:
    cont = image.TransformPhysicalPointToContinuousIndex(point)
    idx = tuple(int(math.floor(c + 0.5)) for c in cont)
    if all(0 <= i < n for i, n in zip(idx, image.GetSize())):
        return idx  # type: ignore[return-value]
    return None


def _read_mask(image: sitk.Image, path: str) -> np.ndarray | None:
    """The label mask at ``path`` on ``image``'s grid, as an int array (z, y, x); None when empty."""
    from lesionbench.benchmark.encoders.features import read_image

    try:
        mask = read_image(path)  # the same checks as images: missing, unreadable, truncated .gz
    except ImageError as exc:
        raise ImageError(f"Cannot use the lesion mask: {exc} Check the manifest's mask_path.") from None
    if mask.GetNumberOfComponentsPerPixel() != 1 or mask.GetDimension() != 3:
        raise ImageError(f"The lesion mask {path} must be a 3D single-component label image.")
    from lesionbench.benchmark.data._image_checks import MASK_GRID_FIX, grid_mismatch
    from lesionbench.benchmark.data.geometry import ImageGeometry

    # a mask off its image's grid is most often another scan's mask: named, not silently resampled
    if (diff := grid_mismatch(ImageGeometry.of(mask), ImageGeometry.of(image))) is not None:
        raise ImageError(f"The lesion mask {path} is not on the grid of its image ({diff}). {MASK_GRID_FIX}")
    arr = sitk.GetArrayFromImage(mask)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = arr.astype(np.int32)
    return arr if arr.any() else None


def _nearest_component(image: sitk.Image, mask: np.ndarray, point: tuple[float, float, float]) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    components, _ = ndimage.label(mask != 0, structure=np.ones((3, 3, 3), dtype=bool))
    zyx = np.argwhere(components > 0)
    phys = _index_to_physical(image, zyx[:, ::-1])
    nearest = zyx[int(np.argmin(((phys - np.asarray(point)) ** 2).sum(axis=1)))]
    comp = components[tuple(nearest)]
    region = components == comp
    return region, int(mask[tuple(nearest)])


def _index_to_physical(image: sitk.Image, xyz: np.ndarray) -> np.ndarray:
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (xyz * np.asarray(image.GetSpacing())) @ direction.T


def _ball(image: sitk.Image, centre_index: tuple[int, int, int], radius_mm: float) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of the centre voxel's centre (always includes it)."""
    size = np.asarray(image.GetSize())
    spacing = np.asarray(image.GetSpacing())
    centre = np.asarray(centre_index)
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, size)
    xs, ys, zs = (np.arange(lo[a], hi[a]) for a in range(3))
    gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
    offsets = np.stack([gx - centre[0], gy - centre[1], gz - centre[2]], axis=-1) * spacing
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    dist2 = ((offsets @ direction.T) ** 2).sum(axis=-1)
    inside = dist2 <= radius_mm**2
    region = np.zeros(tuple(size[::-1]), dtype=bool)
    region[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = inside.transpose(2, 1, 0)
    region[centre[2], centre[1], centre[0]] = True
    return region


def _crop(image: sitk.Image, region: np.ndarray) -> tuple[sitk.Image, sitk.Image]:
    """The image and a binary mask cropped to the region's bounding box plus a margin (same geometry)."""
    # Bounding box from axis projections: much cheaper than argwhere on a full-size CT mask.
    lo_zyx, hi_zyx = [], []
    for axis in range(3):
        hits = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
        lo_zyx.append(hits[0])
        hi_zyx.append(hits[-1])
    spacing = np.asarray(image.GetSpacing())
    # At least 8 voxels: SimpleITK's B-spline prefilter is global, its boundary effect decays as 0.27^n.
    margin = np.maximum(np.ceil(_CROP_MARGIN_MM / spacing).astype(int) + 1, 8)
    size = np.asarray(image.GetSize())
    lo = np.maximum(np.asarray(lo_zyx[::-1]) - margin, 0)
    hi = np.minimum(np.asarray(hi_zyx[::-1]) + margin + 1, size)
    crop_img = image[int(lo[0]) : int(hi[0]), int(lo[1]) : int(hi[1]), int(lo[2]) : int(hi[2])]
    sub = region[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]].astype(np.uint8)
    crop_mask = sitk.GetImageFromArray(sub)
    crop_mask.CopyInformation(crop_img)
    return crop_img, crop_mask


# ---------------------------------------------------------------------- PyRadiomics plumbing
def _resolve_params(params: str | Path) -> Path:
    if str(params) in PARAMETER_FILES:
        return PARAMETER_FILES[str(params)]
    path = Path(params).expanduser()
    if path.is_file():
        return path.resolve()
    raise ConfigurationError(
        f"radiomics: params={str(params)!r} is neither a shipped parameter set ({', '.join(PARAMETER_FILES)}) "
        "nor an existing PyRadiomics parameter file. Pass 'light', 'full' or the path of a .yaml file."
    )


def _make_extractor(params_path: str) -> Any:
    from radiomics import featureextractor

    try:
        return featureextractor.RadiomicsFeatureExtractor(params_path)
    except Exception as exc:  # pykwalify schema errors and YAML errors have no common base
        raise ConfigurationError(
            f"radiomics: the parameter file {params_path} is not a valid PyRadiomics parameter file: {exc}"
        ) from exc


@functools.lru_cache(maxsize=8)
def _feature_names(params_path: str, digest: str) -> tuple[str, ...]:
    """The ordered feature names a parameter file produces, from one run on a small phantom.

    ``digest`` is part of the cache key so an edited file is re-read.
    """
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:32, :32, :32]
    ball = (zz - 16) ** 2 + (yy - 16) ** 2 + ((xx - 16) / 1.3) ** 2 < 8**2
    arr = (-800 + rng.normal(0, 30, ball.shape)).astype(np.int16)
    arr[ball] = (40 + rng.normal(0, 60, int(ball.sum()))).astype(np.int16)
    image = sitk.GetImageFromArray(arr)
    mask = sitk.GetImageFromArray(ball.astype(np.uint8))
    with _quiet_glcm():
        result = _make_extractor(params_path).execute(image, mask, label=1)
    names = tuple(k for k in result if not k.startswith("diagnostics_"))
    if not names:
        raise ConfigurationError(f"radiomics: the parameter file {params_path} enables no features.")
    return names


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _quiet_glcm() -> Iterator[None]:
    """Drop PyRadiomics' per-call "GLCM is symmetrical ..." warning (it is a note, not a problem)
    for the duration of one extraction; the filter is removed afterwards and nothing else is hidden."""
    target = logging.getLogger("radiomics.glcm")
    flt = _DropMessage("GLCM is symmetrical")
    target.addFilter(flt)
    try:
        yield
    finally:
        target.removeFilter(flt)


def _pyradiomics_version() -> str:
    try:
        import radiomics

        return str(radiomics.__version__)
    except ImportError:  # pragma: no cover - a declared dependency
        return "unknown"


def _empty_report() -> pd.DataFrame:
    return pd.DataFrame(columns=["lesion_id", "region_source", "label", "voxels", "error"])
