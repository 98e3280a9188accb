"""Fabricated tasks with structured random features, for the scorer's tests and speed benchmark.

The features carry a planted signal (class means, or a risk direction for survival) plus shared
low-rank structure and noise, so probes have something real to find and metrics land away from chance.
No images exist: these tasks are for scoring only (pass the features to ``evaluate(features=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import EncoderMeta, TaskKind, TaskMeta


@dataclass
class FabricatedTask:
    """A task object (``meta`` + ``manifest()``) over a fabricated manifest."""

    meta: TaskMeta
    table: pd.DataFrame

    def manifest(self) -> pd.DataFrame:
        return self.table.copy()


def fabricate(
    kind: TaskKind | str = TaskKind.MULTICLASS,
    *,
    n_lesions: int = 300,
    n_patients: int | None = None,
    n_classes: int = 4,
    feature_dim: int = 32,
    signal: float = 1.0,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    name: str | None = None,
    published_split: bool = False,
) -> tuple[FabricatedTask, np.ndarray]:
    """A task with ``n_lesions`` lesions of ``n_patients`` patients (split by patient) and float32 features."""
    kind = TaskKind(kind)
    rng = np.random.default_rng(seed)
    n_patients = n_patients or max(2, n_lesions // 3)
    patient = np.sort(rng.integers(0, n_patients, n_lesions))
    patient[:n_patients] = np.arange(n_patients)  # every patient has a lesion
    pids = np.array([f"P{p:05d}" for p in patient])
    order = rng.permutation(n_patients)
    cut1, cut2 = int(split_fractions[0] * n_patients), int((split_fractions[0] + split_fractions[1]) * n_patients)
    psplit = np.empty(n_patients, dtype=object)
    psplit[order[:cut1]], psplit[order[cut1:cut2]], psplit[order[cut2:]] = "train", "val", "test"
    df = pd.DataFrame(
        {
            "lesion_id": [f"L{i:06d}" for i in range(n_lesions)],
            "patient_id": pids,
            "image_path": [f"/nonexistent/{p}.nii.gz" for p in pids],
            "coordX": 0.0,
            "coordY": 0.0,
            "coordZ": 0.0,
            "split": psplit[patient].astype(str),
        }
    )
    latent = rng.normal(size=(n_lesions, 8)) @ rng.normal(size=(8, feature_dim))
    noise = rng.normal(size=(n_lesions, feature_dim))
    if kind == TaskKind.SURVIVAL:
        z = rng.normal(size=n_lesions)
        direction = rng.normal(size=feature_dim) / np.sqrt(feature_dim)
        t_event = rng.exponential(600.0 * np.exp(-0.8 * z))
        t_cens = rng.uniform(200, 2500, n_lesions)
        df["time"] = np.round(np.minimum(t_event, t_cens), 0) + 1
        df["event"] = (t_event <= t_cens).astype(int)
        X = latent + noise + signal * 3.0 * z[:, None] * direction[None, :] * np.sqrt(feature_dim) / 4
        classes: tuple[str, ...] = ()
        metrics, main = ("auc_2y", "c_index"), "auc_2y"
    else:
        k = 2 if kind == TaskKind.BINARY else n_classes
        y = rng.integers(0, k, n_lesions)
        y[:k] = np.arange(k)
        df["label"] = y
        means = rng.normal(size=(k, feature_dim))
        X = latent + noise + signal * means[y]
        classes = tuple(f"class{c}" for c in range(k))
        metrics, main = (("auc", "average_precision"), "auc") if kind == TaskKind.BINARY else (("balanced_accuracy", "map"), "balanced_accuracy")
    meta = TaskMeta(
        name=name or f"fabricated_{kind}",
        version="1",
        kind=kind,
        description="fabricated features for scorer tests",
        main_metric=main,
        metrics=metrics,
        class_names=classes,
        published_split=published_split,
    )
    return FabricatedTask(meta, df), X.astype(np.float32)


def fabricated_encoder_meta(feature_dim: int, name: str = "fabricated") -> EncoderMeta:
    """Encoder metadata to go with fabricated features."""
    return EncoderMeta(name=name, version="0", feature_dim=feature_dim, weights_sha256="0" * 64)
