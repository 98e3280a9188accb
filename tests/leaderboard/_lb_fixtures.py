"""Helpers for the leaderboard tests: fabricated results of known quality in a real MLflow store.

Each fabricated encoder predicts a fixed test set with a chosen signal strength, so the expected
ranking is known; every run's metrics are computed from its saved predictions, and the results are
written both as local ``result.json`` folders and to a sqlite MLflow store with the scorer's layout
(parent run ``lesionbench.level=parent`` with ``result.json``, child runs per fraction and seed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import EncoderMeta, SubsetResult, TaskKind, TaskMeta, TaskResult
from lesionbench.leaderboard import _stats


BINARY = TaskMeta(
    name="luna16_malignancy", version="test-1", kind=TaskKind.BINARY, description="Fabricated nodule malignancy task.",
    main_metric="auc", metrics=("auc", "average_precision", "balanced_accuracy"),
)
MULTI = TaskMeta(
    name="synthetic_site", version="test-1", kind=TaskKind.MULTICLASS, description="Fabricated 4-site task.",
    main_metric="balanced_accuracy", metrics=("balanced_accuracy", "map", "auc"), class_names=("lung", "liver", "bone", "kidney"),
)
SURV = TaskMeta(
    name="synthetic_survival", version="test-1", kind=TaskKind.SURVIVAL, description="Fabricated survival task.",
    main_metric="c_index", metrics=("c_index", "auc_2y"),
)
FRACTIONS = (1.0, 0.5, 0.2)
SEEDS = (0, 1, 2)
N_TEST = 120


def make_manifest(meta: TaskMeta, *, n_train: int = 60, n_val: int = 30, n_test: int = N_TEST, seed: int = 0) -> pd.DataFrame:
    """A lesion manifest with labels (two lesions per patient) for a fabricated task."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    df = pd.DataFrame(
        {
            "lesion_id": [f"L{i:04d}" for i in range(n)],
            "patient_id": [f"P{i // 2:04d}" for i in range(n)],
            "image_path": [f"/data/img{i // 2:04d}.nii.gz" for i in range(n)],
            "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0,
            "split": ["train"] * n_train + ["val"] * n_val + ["test"] * n_test,
        }
    )
    if meta.kind is TaskKind.SURVIVAL:
        df["time"] = np.round(rng.exponential(900, n) + 30, 1)
        df["event"] = (rng.random(n) < 0.7).astype(int)
    elif meta.kind is TaskKind.BINARY:
        df["label"] = (rng.random(n) < 0.4).astype(int)
    else:
        df["label"] = rng.integers(0, meta.n_classes, n)
    return df


def fake_scores(meta: TaskMeta, test: pd.DataFrame, quality: float, rng: np.random.Generator) -> pd.DataFrame:
    """Score columns of a model whose signal strength is ``quality``."""
    n = len(test)
    if meta.kind is TaskKind.BINARY:
        z = quality * (2 * test["label"].to_numpy() - 1) + rng.normal(0, 1.0, n)
        return pd.DataFrame({"score": 1 / (1 + np.exp(-z))})
    if meta.kind is TaskKind.MULTICLASS:
        logits = quality * np.eye(meta.n_classes)[test["label"].to_numpy()] + rng.normal(0, 1.0, (n, meta.n_classes))
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return pd.DataFrame(p, columns=[f"score_{c}" for c in meta.class_names])
    risk = -quality * np.log(test["time"].to_numpy()) + rng.normal(0, 1.0, n)
    # Like the scorer: a 2-year death probability ('score') besides the risk.
    return pd.DataFrame({"score": 1 / (1 + np.exp(-(risk - np.median(risk)))), "risk": risk})


def write_result(
    meta: TaskMeta,
    manifest: pd.DataFrame,
    encoder: str,
    quality: float,
    root: Path,
    *,
    seed: int = 0,
    weights: str = "",
    fractions: tuple[float, ...] = FRACTIONS,
    intervals: bool = True,
    created: str | None = None,
    extra: dict | None = None,
    folder: Path | None = None,
) -> Path:
    """Write ``<root>/<task>/<version>/<encoder>/linear/result.json`` (the scorer's layout, or ``folder``) with
    predictions per (fraction, seed); ``intervals=False`` is a ``--n-boot 0`` run (no CI bounds)."""
    folder = folder or root / meta.name / meta.version / encoder / "linear"
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    runs = []
    for fi, frac in enumerate(fractions):
        for s in SEEDS:
            rng = np.random.default_rng([seed, fi, s])
            # Fewer labels, weaker model (and a bit of seed-to-seed spread).
            q = quality * (0.55 + 0.45 * frac) * (1 + 0.05 * rng.normal()) if frac < 1 else quality
            rng_pred = np.random.default_rng([seed, fi, s if frac < 1 else 0])
            scores = fake_scores(meta, test, q, rng_pred)
            table = pd.concat([test[["lesion_id", "patient_id", "split", *meta.label_columns]], scores], axis=1)
            rel = f"predictions/f{frac:g}_s{s}.csv"
            table.to_csv(folder / rel, index=False)
            _, y, sc = _stats.prediction_arrays(table, meta)
            metrics = _stats.metric_values(meta.kind, y, sc, meta.metrics, n_boot=10 if intervals else 0, seed=0)
            runs.append(SubsetResult(frac, s, int(60 * frac), metrics, {"C": 1.0}, rel, ""))
    result = TaskResult(
        task=meta,
        encoder=EncoderMeta(name=encoder, version="1.0", feature_dim=16, weights_sha256=weights, description=f"fabricated q={quality}"),
        probe="linear",
        runs=tuple(runs),
        lesionbench_version="0.1.0",
        created=created or f"2026-11-27T12:00:0{seed}+00:00",
        split_hash="abc123def4567890",
        # the provenance `lesionbench run` writes (the leaderboard requires it)
        extra={"n_boot": 10 if intervals else 0, "bootstrap_unit": "patient", "fractions": list(fractions), "seeds": list(SEEDS), **(extra or {})},
    )
    (folder / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return folder


def log_to_mlflow(folder: Path, tracking_uri: str, experiment_id: str, *, predictions_on_parent: bool = True) -> str:
    """Log one result folder with the scorer's layout; returns the parent run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    result = TaskResult.from_dict(json.loads((folder / "result.json").read_text()))
    parent = client.create_run(experiment_id, tags={"lesionbench.level": "parent", "mlflow.runName": result.encoder.name})
    pid = parent.info.run_id
    client.log_param(pid, "task", result.task.name)
    client.log_artifact(pid, str(folder / "result.json"))
    if predictions_on_parent:
        client.log_artifacts(pid, str(folder / "predictions"), "predictions")
    for run in result.runs:
        child = client.create_run(experiment_id, tags={"lesionbench.level": "child", "mlflow.parentRunId": pid})
        cid = child.info.run_id
        client.log_batch(
            cid,
            metrics=[Metric(m, mv.value, 0, 0) for m, mv in run.metrics.items()],
            params=[Param("fraction", str(run.fraction)), Param("seed", str(run.seed))],
        )
        client.log_artifact(cid, str(folder / run.predictions_path))
        client.set_terminated(cid)
    client.set_terminated(pid)
    return pid


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    results: Path
    manifests: dict[str, pd.DataFrame]
    qualities: dict[str, dict[str, float]]
    run_ids: dict[tuple[str, str], str]


# ------------------------------------------------------------------------------ headless Chromium
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)")


def _chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    # A fresh profile, no network at all: any attempt to fetch something fails instead of leaking.
    with tempfile.TemporaryDirectory(prefix="lesionbench-chromium-") as profile:
        cmd = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--proxy-server=http://127.0.0.1:9", "--hide-scrollbars",
            f"--user-data-dir={profile}", *args,
        ]
        env = {**os.environ, "HOME": profile}
        return subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, env=env)


#: Chromium's own background services (updates, time, accounts), not requests of the page.
_BROWSER_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")


def _page_requests(url: str, tmp: Path) -> set[str]:
    """http(s) URLs Chromium tried to fetch while loading ``url`` (from its network log)."""
    from urllib.parse import urlparse

    log = tmp / f"netlog-{abs(hash(url))}.json"
    res = _chromium(f"--log-net-log={log}", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    urls = set(re.findall(r'"url":"(https?://[^"]+)"', log.read_text(errors="replace")))
    return {u for u in urls if not (urlparse(u).hostname or "").endswith(_BROWSER_HOSTS)}


