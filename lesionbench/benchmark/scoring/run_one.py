"""One (fraction, seed) or (k, seed) run of a planned sweep: features, probe fit, bootstrap CIs, prediction and subset files.

Runs can be fitted in parallel worker processes (``jobs``); each is a pure function of its inputs, so
the numbers and files do not depend on how many run at a time. Test labels never reach a probe or an
encoder's ``fit``; the validation rows of a run are the ones its plan names (its own subsample by
default). The bootstrap resamples of a (fraction, seed) depend only on (fraction, seed), so two
encoders on the same task are resampled identically.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.scoring.metrics import bootstrap_ci
from lesionbench.benchmark.scoring.saved_runs import drop_stale_record
from lesionbench.benchmark.scoring.executor import Executor
from lesionbench.benchmark.scoring.plan import PlannedRun, SweepPlan
from lesionbench.benchmark.scoring.splits import Subset
from lesionbench.benchmark.types import SubsetResult, TaskKind


#: (subset, training-row mask, validation-row mask) -> features for every manifest row, and the encoder's own scores or None.
FeatureProvider = Callable[[Subset, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    last: float = 0.0

    def add(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.last = now - t0
        self.seconds[key] = self.seconds.get(key, 0.0) + self.last
        return now


@dataclass(frozen=True)
class FrozenFeatures:
    """Feature provider of a frozen encoder: the same features for every run."""

    X: np.ndarray

    def __call__(self, subset: Subset, train_mask: np.ndarray, val_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.X, None


@dataclass(frozen=True)
class TrainedFeatures:
    """Feature provider of a trainable encoder: a fresh copy fitted on each run's training lesions
    (labels NaN where undecided, e.g. censored before 2 years), early-stopped on the run's validation
    rows, then encoding every lesion. An encoder whose ``fit`` takes ``seed`` gets the run's seed."""

    encoder: Any
    patches: np.ndarray
    labels: np.ndarray
    head_classes: int

    def __call__(self, subset: Subset, train_mask: np.ndarray, val_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        idx = np.flatnonzero(train_mask & np.isfinite(self.labels))
        val_idx = np.flatnonzero(val_mask & np.isfinite(self.labels))
        val = (self.patches[val_idx], self.labels[val_idx].astype(int)) if len(val_idx) else None
        model = copy.deepcopy(self.encoder)
        if hasattr(model, "n_classes") and model.n_classes is None:
            model.n_classes = self.head_classes
        # the run's seed reaches the training (initialisation, batch order, augmentation) where fit takes one
        seed_arg = {"seed": subset.seed} if "seed" in inspect.signature(model.fit).parameters else {}
        model.fit(self.patches[idx], self.labels[idx].astype(int), val=val, **seed_arg)
        X = np.asarray(model.encode(self.patches), dtype=np.float32)
        head = np.asarray(model.predict_proba(self.patches), dtype=float) if callable(getattr(model, "predict_proba", None)) else None
        return X, head


def fit_labels(manifest: pd.DataFrame, kind: TaskKind) -> np.ndarray:
    """Labels a trainable encoder learns from (survival: the 2-year label, NaN when censored early)."""
    if kind == TaskKind.SURVIVAL:
        return two_year_label(manifest["time"].to_numpy(float), manifest["event"].to_numpy(float))
    return manifest["label"].to_numpy(float)


def score_runs(
    plan: SweepPlan, provider: FeatureProvider, rdir: Path, todo: list[tuple[int, PlannedRun]], jobs: int, *, executor: Executor | None = None, key: str | None = None
) -> Iterator[tuple[int, SubsetResult, int, dict[str, float]]]:
    """(slot, run, feature_dim, seconds per stage) of each run in ``todo``: in order in this process, or
    as they finish in ``jobs`` worker processes (joblib/loky; large arrays are shared by memory map), or
    wherever an ``executor`` runs them (e.g. :class:`lesionbench.scaleout.sweep.DaskExecutor`). ``key``: the
    sweep's key for saved runs (:func:`~lesionbench.benchmark.scoring.saved_runs.drop_stale_record`)."""
    one = partial(_score_one_slot, key=key)
    if executor is not None and todo:
        yield from executor.score_runs(plan, provider, rdir, todo, one)
        return
    if jobs <= 1 or len(todo) <= 1:
        yield from (one(plan, provider, rdir, *job) for job in todo)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=min(int(jobs), len(todo)), return_as="generator_unordered")
    yield from parallel(delayed(one)(plan, provider, rdir, *job) for job in todo)


def _score_one_slot(
    plan: SweepPlan, provider: FeatureProvider, rdir: Path, slot: int, run: PlannedRun, *, key: str | None = None
) -> tuple[int, SubsetResult, int, dict[str, float]]:
    return (slot, *score_run(plan, provider, rdir, run, key=key))


def score_run(plan: SweepPlan, provider: FeatureProvider, rdir: Path, run: PlannedRun, *, key: str | None = None) -> tuple[SubsetResult, int, dict[str, float]]:
    """One (fraction, seed) run: features, probe fit, bootstrap CIs, prediction and subset files."""
    timer = Timer()
    kind, manifest, subset = plan.kind, plan.manifest, run.subset
    t0 = time.perf_counter()
    train_mask = np.isin(plan.lesion_ids, subset.lesion_ids)
    val_mask = plan.val_mask(run)
    X, head = provider(subset, train_mask, val_mask)
    t0 = timer.add("features", t0)
    est = clone(plan.template)
    scores = fit_predict(est, kind, manifest, X, train_mask, val_mask, plan.groups)
    t0 = timer.add("probe", t0)
    boot = {"n_boot": plan.n_boot, "seed": [run.seed, int(round(run.fraction * 1_000_000))], "groups": plan.test_groups}
    values = bootstrap_ci(kind, plan.y_test, select(scores, plan.test_mask), plan.metric_names, **boot)
    params: dict[str, Any] = {
        **est.report(),
        "n_values_imputed": _n_imputed(est, X, ~train_mask),
        "subset_hash": subset.hash,
        "n_patients_train": subset.n_patients,
        "validation": run.validation,
        "n_val": int(val_mask.sum()),
        "val_subset_hash": run.val_subset.hash if run.val_subset is not None else None,
        "probe_seconds": round(timer.last, 3),
    }
    if run.note:
        params["validation_note"] = run.note
    if run.shots:
        params["shots"], params["shots_per"] = run.shots, subset.shots_per
    if kind == TaskKind.SURVIVAL:
        params.update(_survival_extras(manifest, scores, plan.test_mask, est.risk_threshold_))
    head_frame = None
    if head is not None:
        head_scores = _head_scores(head, kind)
        head_values = bootstrap_ci(kind, plan.y_test, select(head_scores, plan.test_mask), plan.metric_names, **boot)
        params["head_metrics"] = {k: v.to_dict() for k, v in head_values.items()}
        head_frame = predictions_frame(manifest, kind, head_scores)
    t0 = timer.add("metrics", t0)
    pred_rel = f"predictions/{subset.name}.csv"
    sub_rel = f"subsets/{subset.name}.csv"
    drop_stale_record(rdir, subset.name, key)
    # atomic: a record this sweep kept (same key) never points at a half-written file of a killed rerun
    atomic_write(rdir / pred_rel, lambda tmp: predictions_frame(manifest, kind, scores).to_csv(tmp, index=False))
    subset.write(rdir / sub_rel)
    if run.val_subset is not None:
        params["val_subset_path"] = f"subsets/{run.val_subset.name}.csv"
        run.val_subset.write(rdir / params["val_subset_path"])
    if head_frame is not None:
        params["head_predictions_path"] = f"predictions/{subset.name}_head.csv"
        atomic_write(rdir / params["head_predictions_path"], lambda tmp: head_frame.to_csv(tmp, index=False))
    timer.add("write", t0)
    result = SubsetResult(run.fraction, run.seed, int(train_mask.sum()), values, params, pred_rel, sub_rel, shots=run.shots or None)
    return result, int(X.shape[1]), timer.seconds


def select(scores: Any, mask: np.ndarray) -> Any:
    if isinstance(scores, dict):
        return {k: v[mask] for k, v in scores.items()}
    return scores[mask]


def fit_predict(est: Any, kind: TaskKind, manifest: pd.DataFrame, X: np.ndarray, train: np.ndarray, val: np.ndarray, groups: np.ndarray) -> Any:
    """Fit ``est`` on the training rows (validation rows choose hyper-parameters) and score every row."""
    if kind == TaskKind.SURVIVAL:
        t, e = manifest["time"].to_numpy(float), manifest["event"].to_numpy(float)
        val_args = {"X_val": X[val], "time_val": t[val], "event_val": e[val]} if val.any() else {}
        est.fit(X[train], t[train], e[train], groups=groups[train], **val_args)
        return est.predict(X)
    y = manifest["label"].to_numpy().astype(int)
    val_args = {"X_val": X[val], "y_val": y[val]} if val.any() else {}
    est.fit(X[train], y[train], groups=groups[train], **val_args)
    return est.predict_proba(X)


def _n_imputed(est: Any, X: np.ndarray, rows: np.ndarray) -> int:
    """NaN/inf values in kept feature columns of the scored non-training rows (set to the training mean)."""
    filt = est.classifier_.filter_ if hasattr(est, "classifier_") else est.filter_
    return int(np.count_nonzero(~np.isfinite(X[rows][:, filt.keep_])))


def _head_scores(head: np.ndarray, kind: TaskKind) -> Any:
    """A trainable encoder's own ``predict_proba`` output in the scorer's score format."""
    if kind == TaskKind.SURVIVAL:
        p = head[:, -1] if head.ndim == 2 else head
        return {"score": p, "risk": p}
    if kind == TaskKind.BINARY and head.ndim == 1:
        return np.column_stack([1 - head, head])
    return head


def _survival_extras(manifest: pd.DataFrame, scores: dict[str, np.ndarray], test: np.ndarray, threshold: float) -> dict[str, Any]:
    """Kaplan-Meier risk groups on the test split (split at the training median risk) and their log-rank
    test, one row per patient (:func:`logrank_by_patient`)."""
    t, e = manifest["time"].to_numpy(float)[test], manifest["event"].to_numpy(float)[test]
    y2 = two_year_label(t, e)
    patients = manifest["patient_id"].astype(str).to_numpy()[test]
    out: dict[str, Any] = {"n_censored_2y_excluded_test": int(np.isnan(y2).sum())}
    out.update(logrank_by_patient(t, e, scores["risk"][test], patients, threshold=threshold))
    return out


def logrank_by_patient(time: np.ndarray, event: np.ndarray, risk: np.ndarray, patients: Any, *, threshold: float | None = None) -> dict[str, Any]:
    """Log-rank test of high- against low-risk patients, one row per patient.

    A patient's lesions share one survival time and event, so lesion rows are not independent:
    testing them as rows made the logged p reject 17-21% of the time under the null with 2.2 lesions
    per patient (``benchmarks/stats_calibration.py``). Each patient counts once, with the time and
    event of its first row and the mean risk of its lesions, split at ``threshold`` (default: the
    median patient risk). Returns ``logrank_p`` (NaN with an empty group) and the patients per group.
    """
    from lifelines.statistics import logrank_test

    frame = pd.DataFrame({"patient": np.asarray(patients), "time": time, "event": event, "risk": risk})
    per = frame.groupby("patient", sort=False).agg(time=("time", "first"), event=("event", "first"), risk=("risk", "mean"))
    cut = float(np.median(per["risk"])) if threshold is None else threshold
    high = per["risk"].to_numpy() > cut
    t, e = per["time"].to_numpy(float), per["event"].to_numpy(float)
    p = float(logrank_test(t[high], t[~high], e[high], e[~high]).p_value) if high.any() and (~high).any() else float("nan")
    return {"logrank_p": p, "km_n_high": int(high.sum()), "km_n_low": int((~high).sum()), "km_unit": "patient"}


def predictions_frame(manifest: pd.DataFrame, kind: TaskKind, scores: Any) -> pd.DataFrame:
    """The per-lesion scores of a run: ``lesion_id, patient_id, split`` and the score columns, without labels.

    The results folder and the MLflow store are public (``submit`` and the leaderboard read them): a test
    label there would let anyone build a perfect submission. Labels stay with the task's manifest and
    are joined back by :func:`attach_labels` where a metric is recomputed."""
    df = manifest[["lesion_id", "patient_id", "split"]].copy()
    if kind == TaskKind.SURVIVAL:
        df["score"] = scores["score"]
        df["risk"] = scores["risk"]
        return df
    if kind == TaskKind.BINARY:
        df["score"] = scores[:, 1]
    else:
        for k in range(scores.shape[1]):
            df[f"score_{k}"] = scores[:, k]
    return df


def label_columns(kind: TaskKind | str) -> list[str]:
    """The manifest columns that hold a task kind's labels."""
    return ["time", "event"] if TaskKind(kind) == TaskKind.SURVIVAL else ["label"]


def attach_labels(frame: pd.DataFrame, labels: pd.DataFrame, kind: TaskKind | str, *, source: str = "predictions") -> pd.DataFrame:
    """``frame`` (rows with ``lesion_id``) with its label columns taken from ``labels`` (the task's manifest,
    or its test rows): whatever labels ``frame`` carried are dropped, so a file never supplies its own
    ground truth. Survival adds ``label_2y``. A lesion that ``labels`` lacks is a :class:`ConfigurationError`."""
    from lesionbench.benchmark.errors import ConfigurationError

    cols = label_columns(kind)
    missing_cols = [c for c in ("lesion_id", *cols) if c not in labels.columns]
    if missing_cols:
        raise ConfigurationError(f"The task's labels lack the column(s) {missing_cols}; give the task's manifest.")
    truth = labels[["lesion_id", *cols]].astype({"lesion_id": str}).drop_duplicates("lesion_id")
    out = frame.drop(columns=[c for c in (*cols, "label_2y") if c in frame.columns]).astype({"lesion_id": str})
    out = out.merge(truth, on="lesion_id", how="left", validate="many_to_one")
    unknown = out.loc[out[cols].isna().all(axis=1), "lesion_id"].tolist()
    if unknown:
        raise ConfigurationError(
            f"{source}: {len(unknown)} lesion(s) without a label in the task's manifest (e.g. {unknown[:3]}); "
            "the predictions are of another task version. Re-run on the prepared task."
        )
    if TaskKind(kind) == TaskKind.SURVIVAL:
        out["label_2y"] = two_year_label(out["time"].to_numpy(float), out["event"].to_numpy(float))
    return out
