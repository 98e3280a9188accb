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


@dataclass(frozen=True)
class PatchSpec:
    """How the harness cuts the input patch an encoder sees around each seed point.

    ``method`` names the cropping recipe: ``"fmcib"`` is the FMCIB reference ``get_features`` chain
    (1 mm linear resampling with aligned corners, (HU + 1024) / 3072 with no clipping, ``int()`` seed
    truncation, clamped crop, centred zero padding, (z, y, x) axes). ``with_mask`` adds the lesion
    mask as a second channel, for encoders that need the region (radiomics).
    """

    size: tuple[int, int, int] = (50, 50, 50)
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    method: str = "fmcib"
    with_mask: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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

    def fingerprint(self) -> str:
        """A stable hex digest of everything that determines the features."""
        import hashlib
        import json

        payload = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["settings"] = [list(kv) for kv in self.settings]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderMeta:
        d = dict(d)
        p = d.get("patch") or {}
        d["patch"] = PatchSpec(
            size=tuple(p.get("size", (50, 50, 50))),
            spacing_mm=tuple(p.get("spacing_mm", (1.0, 1.0, 1.0))),
            method=p.get("method", "fmcib"),
            with_mask=bool(p.get("with_mask", False)),
        )
        d["settings"] = tuple(tuple(kv) for kv in d.get("settings", ()))
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
