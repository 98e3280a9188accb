"""Shared value types: what a task, an encoder, a patch and a result are.

Everything here is a frozen dataclass or a closed enum so it can be hashed, logged and compared.
Results serialise to plain JSON (``to_dict``/``from_dict``) so that the local result files, MLflow
and the leaderboard all speak the same schema without depending on one another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskKind(StrEnum):
    """What a task's label is."""

    MULTICLASS = "multiclass"
    BINARY = "binary"
    SURVIVAL = "survival"


class Split(StrEnum):
    """The partitions of a manifest."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


#: Columns every lesion manifest carries, whatever its task.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "patient_id",
    "image_path",
    "coordX",
    "coordY",
    "coordZ",
    "split",
)
#: The seed point's columns (physical mm, LPS).
COORDS: tuple[str, str, str] = ("coordX", "coordY", "coordZ")


def is_missing(v: Any) -> bool:
    """Whether a manifest cell is empty: None, NaN or a blank string."""
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())
#: Label columns by task kind.
LABEL_COLUMNS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.MULTICLASS: ("label",),
    TaskKind.BINARY: ("label",),
    TaskKind.SURVIVAL: ("time", "event"),
}
#: Columns a manifest may carry; anything else passes through untouched.
OPTIONAL_COLUMNS: tuple[str, ...] = ("mask_path", "diameter_mm")


@dataclass(frozen=True)
class TaskMeta:
    """Everything the harness needs to know about a task besides its lesions.

    ``version`` changes whenever the lesions, labels or split change, so results of different
    versions are never mixed (a split variant such as ``fmcib`` is part of the version).
    """

    name: str
    version: str
    kind: TaskKind
    description: str
    main_metric: str
    metrics: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    citation: str = ""
    licence: str = ""
    label_derivation: str = ""
    #: True for published splits whose patient leaks are reported rather than refused.
    published_split: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_columns(self) -> tuple[str, ...]:
        return LABEL_COLUMNS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = str(self.kind)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskMeta:
        d = dict(d)
        d["kind"] = TaskKind(d["kind"])
        for k in ("metrics", "class_names"):
            d[k] = tuple(d.get(k, ()))
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


#: Intensity mappings the ``seed-crop`` patch method applies (after cropping and reorientation).
INTENSITY_KINDS = ("window", "zscore-positive", "piecewise")
#: Resampling of the ``seed-crop`` patch method: MONAI 1.4 ``Spacing`` linear with align_corners=True (TIB's,
#: with MONAI 1.4's half-voxel stretch), linear or nearest with align_corners=False, or none (native voxel grid).
INTERPOLATIONS = ("linear-align-corners", "linear", "nearest", "none")


@dataclass(frozen=True)
class Intensity:
    """How HU become network inputs in the ``seed-crop`` patch method.

    - ``window``: MONAI ``ScaleIntensityRange``: ``(HU - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``
      in float32, clipped to [b_min, b_max] when ``clip``;
    - ``zscore-positive``: (x - mean) / std with mean and std (``ddof``) over the voxels > 0, applied to every
      voxel (MedicalNet ddof 0, torchio ``ZNormalization(masking_method=x > 0)`` ddof 1); a std of 0 divides
      by 1, a patch without positive voxels is only cast;
    - ``piecewise``: linear interpolation between ``points`` ((HU, value), ...), constant beyond the ends.
    """

    kind: str = "window"
    a_min: float = -1024.0
    a_max: float = 2048.0
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = True
    points: tuple[tuple[float, float], ...] = ()
    ddof: int = 0

    def __post_init__(self) -> None:
        # plain floats, so that a spec written with ints fingerprints the same after a JSON round trip
        for k in ("a_min", "a_max", "b_min", "b_max"):
            object.__setattr__(self, k, float(getattr(self, k)))
        object.__setattr__(self, "points", tuple((float(a), float(b)) for a, b in self.points))
        object.__setattr__(self, "clip", bool(self.clip))
        object.__setattr__(self, "ddof", int(self.ddof))

    def label(self) -> str:
        """A short human-readable form, e.g. ``[-1024, 2048] -> [0, 1], clip``."""
        if self.kind == "window":
            return f"[{self.a_min:g}, {self.a_max:g}] -> [{self.b_min:g}, {self.b_max:g}]{', clip' if self.clip else ''}"
        if self.kind == "piecewise":
            return "piecewise " + ", ".join(f"{a:g}->{b:g}" for a, b in self.points)
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["points"] = [list(p) for p in self.points]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Intensity:
        d = dict(d)
        d["points"] = tuple(tuple(float(v) for v in p) for p in d.get("points", ()))
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


#: Patch methods the harness knows (see :class:`PatchSpec`).
PATCH_METHODS = ("fmcib", "seed-crop")


@dataclass(frozen=True)
class PatchSpec:
    """How the harness cuts the input patch an encoder sees around each seed point.

    ``method`` names the cropping recipe:

    - ``"fmcib"``: the FMCIB reference ``get_features`` chain (1 mm linear resampling with aligned corners,
      (HU + 1024) / 3072 with no clipping, ``int()`` seed truncation, clamped crop, centred zero padding,
      (z, y, x) axes); ``size`` and ``spacing_mm`` are (z, y, x).
    - ``"seed-crop"``: the MONAI 1.4 chain TumorImagingBench uses for every model (``LoadImage(ITK)`` ->
      ``Orientation("LPS")`` -> ``Spacing(spacing, linear, zeros, align_corners=True, diagonal=True)`` ->
      seed crop (``int()`` truncation, clamped) -> ``Orientation(orientation)`` -> ``intensity`` ->
      centred ``SpatialPad`` with ``pad_value``), computed crop-first by
      :mod:`lesionbench.benchmark.patches.seedcrop`. ``size`` and ``spacing_mm`` follow the axes of ``orientation``
      (e.g. ``"SPL"``: (S, P, L)), which is the array the network sees. ``interpolation="none"`` cuts on the
      image's own voxel grid (``spacing_mm`` is then ignored; ``orientation="index"`` keeps ITK's (x, y, z)
      voxel axes).

    ``with_mask`` adds the lesion mask as a second channel, for encoders that need the region (radiomics).
    """

    size: tuple[int, int, int] = (50, 50, 50)
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    method: str = "fmcib"
    with_mask: bool = False
    #: ``seed-crop`` only: axis codes of the array the network sees (e.g. "RAS", "SPL").
    orientation: str = ""
    #: ``seed-crop`` only: how HU become inputs.
    intensity: Intensity | None = None
    #: ``seed-crop`` only: the value of voxels padded beyond the image grid (in the mapped intensity, or in
    #: HU with ``pad_before_intensity``).
    pad_value: float = 0.0
    #: ``seed-crop`` only: one of :data:`INTERPOLATIONS` ("" = "linear-align-corners", TIB's).
    interpolation: str = ""
    #: ``seed-crop`` only: pad (in HU) before the intensity mapping (torchio CropOrPad then ZNormalization).
    pad_before_intensity: bool = False
    #: ``seed-crop`` only: False = MONAI ``Spacing``'s default ``diagonal=False``: reorient to ``orientation``
    #: first and resample keeping the scanner's (oblique) grid rotation, as models' own MONAI pipelines do.
    diagonal: bool = True
    #: ``seed-crop`` only: map intensities before resampling (a pointwise ``intensity``: window or piecewise),
    #: as pipelines that window the whole scan and then resample it do (SPECTRE).
    intensity_before_resample: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # fields added for seed-crop are left out at their defaults, so the fingerprints (and feature
        # caches) of encoders that predate them are unchanged
        for k, default in (("orientation", ""), ("intensity", None), ("pad_value", 0.0), ("interpolation", ""), ("pad_before_intensity", False), ("diagonal", True), ("intensity_before_resample", False)):
            if getattr(self, k) == default:
                d.pop(k)
        if self.intensity is not None:
            d["intensity"] = self.intensity.to_dict()
        return d

    @classmethod
    def from_dict(cls, p: dict[str, Any]) -> PatchSpec:
        inten = p.get("intensity")
        return cls(
            size=tuple(p.get("size", (50, 50, 50))),
            spacing_mm=tuple(p.get("spacing_mm", (1.0, 1.0, 1.0))),
            method=p.get("method", "fmcib"),
            with_mask=bool(p.get("with_mask", False)),
            orientation=str(p.get("orientation", "")),
            intensity=Intensity.from_dict(inten) if isinstance(inten, dict) else None,
            pad_value=float(p.get("pad_value", 0.0)),
            interpolation=str(p.get("interpolation", "")),
            pad_before_intensity=bool(p.get("pad_before_intensity", False)),
            diagonal=bool(p.get("diagonal", True)),
            intensity_before_resample=bool(p.get("intensity_before_resample", False)),
        )


@dataclass(frozen=True)
class EncoderMeta:
    """Identity of an encoder: everything that changes its features must be in here.

    The feature cache is keyed on :meth:`fingerprint`, so a new version, other weights or another
    patch recipe never reuses stale features.
    """

    name: str
    version: str
    feature_dim: int
    patch: PatchSpec = field(default_factory=PatchSpec)
    weights_sha256: str = ""
    description: str = ""
    citation: str = ""
    #: Trainable encoders (``fit`` on each training subset) are never cached across subsets.
    trainable: bool = False
    #: Free-form settings that change features (bf16, radiomics parameter file digest ...).
    settings: tuple[tuple[str, str], ...] = ()
    #: Descriptive model card (parameters, pre-training data, licences, recipe ...): shown on the page and
    #: in MLflow, but not part of the fingerprint (it does not change the features).
    card: tuple[tuple[str, str], ...] = ()

    def fingerprint(self) -> str:
        """A stable hex digest of everything that determines the features."""
        import hashlib
        import json

        d = self.to_dict()
        d.pop("card", None)
        payload = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch"] = self.patch.to_dict()
        d["settings"] = [list(kv) for kv in self.settings]
        if self.card:
            d["card"] = [list(kv) for kv in self.card]
        else:
            d.pop("card")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderMeta:
        d = dict(d)
        d["patch"] = PatchSpec.from_dict(d.get("patch") or {})
        d["settings"] = tuple(tuple(kv) for kv in d.get("settings", ()))
        d["card"] = tuple((str(k), str(v)) for k, v in d.get("card", ()))
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True)
class MetricValue:
    """A point estimate with its 95% percentile-bootstrap confidence interval."""

    value: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SubsetResult:
    """The outcome of one probe fitted on one limited-label subset (fraction, seed)."""

    fraction: float
    seed: int
    n_train: int
    metrics: dict[str, MetricValue]
    params: dict[str, Any] = field(default_factory=dict)
    #: Path (relative to the result folder) of the per-lesion predictions CSV.
    predictions_path: str = ""
    #: Path (relative to the result folder) of the subset file (training lesion ids).
    subset_path: str = ""
    #: k of a k-shot run (``fraction`` is then its share of the training split); None for a fraction run.
    shots: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["metrics"] = {k: v.to_dict() for k, v in self.metrics.items()}
        if self.shots is None:
            del d["shots"]  # fraction runs keep the schema they always had
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubsetResult:
        d = dict(d)
        d["metrics"] = {k: MetricValue(**v) for k, v in d["metrics"].items()}
        return cls(**d)


@dataclass(frozen=True)
class TaskResult:
    """Everything one ``evaluate(task, encoder, probe)`` produced; the unit the leaderboard ranks."""

    task: TaskMeta
    encoder: EncoderMeta
    probe: str
    runs: tuple[SubsetResult, ...]
    lesionbench_version: str
    created: str
    #: Patients found in more than one split (only ever non-empty for published splits).
    leaked_patients: tuple[str, ...] = ()
    split_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[float, dict[str, tuple[float, float]]]:
        """Per fraction, per metric: (mean, standard deviation) across seeds; see :meth:`seed_stats`."""
        return {frac: {m: (d["mean"], d["sd"]) for m, d in ms.items()} for frac, ms in self.seed_stats().items()}

    def seed_stats(self) -> dict[float, dict[str, dict[str, Any]]]:
        """Per fraction, per metric: ``mean``, ``sd``, ``n_seeds`` (runs) and ``n_defined`` (runs with a finite value).

        Mean and SD run over the defined seeds, as the low-data curve does (a seed whose test split
        cannot score a metric is left out and counted, instead of turning the mean into NaN). ``sd`` is
        NaN, with the reason in ``sd_note``, when fewer than two seeds are defined, or when every seed drew
        the same training (and validation) subset: at 100% of the labels each seed fits the same data,
        so their spread (0) says nothing about seed variability.
        """
        import numpy as np

        out: dict[float, dict[str, dict[str, Any]]] = {}
        for frac in sorted({r.fraction for r in self.runs}, reverse=True):
            rs = [r for r in self.runs if r.fraction == frac]
            same = len(rs) > 1 and len({(r.params.get("subset_hash"), r.params.get("val_subset_hash")) for r in rs}) == 1 and rs[0].params.get("subset_hash") is not None
            out[frac] = {}
            for m in rs[0].metrics:
                vals = np.array([r.metrics[m].value for r in rs if m in r.metrics], dtype=float)
                vals = vals[np.isfinite(vals)]
                mean = float(vals.mean()) if len(vals) else float("nan")
                note = ""
                if same:
                    note = "every seed drew the same subset"
                elif len(vals) < 2:
                    note = f"{len(vals)} seed(s) defined"
                sd = float("nan") if note else float(vals.std(ddof=1))
                out[frac][m] = {"mean": mean, "sd": sd, "n_seeds": len(rs), "n_defined": len(vals), "sd_note": note}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "lesionbench.task_result/1",
            "task": self.task.to_dict(),
            "encoder": self.encoder.to_dict(),
            "probe": self.probe,
            "runs": [r.to_dict() for r in self.runs],
            "lesionbench_version": self.lesionbench_version,
            "created": self.created,
            "leaked_patients": list(self.leaked_patients),
            "split_hash": self.split_hash,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskResult:
        return cls(
            task=TaskMeta.from_dict(d["task"]),
            encoder=EncoderMeta.from_dict(d["encoder"]),
            probe=d["probe"],
            runs=tuple(SubsetResult.from_dict(r) for r in d["runs"]),
            lesionbench_version=d["lesionbench_version"],
            created=d["created"],
            leaked_patients=tuple(d.get("leaked_patients", ())),
            split_hash=d.get("split_hash", ""),
            extra=dict(d.get("extra", {})),
        )
