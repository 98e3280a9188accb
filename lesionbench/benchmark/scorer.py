"""The scorer: features in, a :class:`TaskResult` with bootstrap CIs out.

``evaluate(task, encoder)`` extracts features (through the cache), then for every seed draws the
nested limited-label subsets (:mod:`lesionbench.benchmark.splits`) and for every (fraction, seed)
fits a fresh clone of the probe on the training subset (the validation split chooses C), scores
every lesion, and computes the task's metrics on the test split with a seeded percentile bootstrap.
Trainable encoders (with ``fit``) are deep-copied and trained on each training subset first.

Everything lands in ``<out_dir>/<task>/<task version>/<encoder>/<probe>/``:

* ``result.json`` - :meth:`TaskResult.to_dict` (the schema the leaderboard and MLflow read);
* ``predictions/frac<f>_seed<s>.csv`` - one row per lesion of every split: ``lesion_id, patient_id,
  split``, the label columns (survival adds ``label_2y``), then the scores (``score_<k>`` per class
  index for multiclass, ``score`` for binary, ``score`` = P(death within 2 years) and ``risk`` = Cox
  log partial hazard for survival). Metrics are recomputed from the ``split == "test"`` rows;
* ``subsets/frac<f>_seed<s>.csv`` - the training lesions of the run (with their hash);
* ``runs/frac<f>_seed<s>.json`` - each finished run with the key of everything it depends on, so that
  a killed sweep resumes and a later sweep with more seeds reuses the runs already done.

Runs can be fitted in parallel worker processes (``jobs``); each is a pure function of its inputs, so
the numbers and files do not depend on how many run at a time.

Test labels never reach a probe or an encoder's ``fit``. The bootstrap resamples of a (fraction, seed)
depend only on (fraction, seed), so two encoders on the same task are resampled identically.
MLflow logging is a separate step (:mod:`lesionbench.benchmark.tracking`).

Where lesionbench differs from the FMCIB paper's protocol, and why:

* C is searched over the paper's range (1e-6 .. 1e3) on a fixed coarse-to-fine grid (decades, then
  quarter decades around the best) instead of 100 Optuna trials: deterministic, and 16 warm-started
  fits instead of 100.
* The paper does not say how its limited-label subsets were drawn; ours are patient-grouped,
  label-stratified, nested and seeded (:mod:`lesionbench.benchmark.splits`), with 5 seeds per fraction
  and the seed spread reported.
* The 2-year label respects censoring (censored <= 730 days is excluded and counted); the published
  LUNG1 labels count such patients as survivors.
* Survival adds a penalised Cox model (C-index) and Kaplan-Meier groups split at the *training*
  median risk, so the test split never sets its own threshold.
* A patient in two splits is an error for our splits and reported for published ones.
* CIs and the paired test follow the paper (1,000 percentile-bootstrap resamples of the test set;
  a permutation test with 1,000 swaps plus a bootstrap CI of the difference), except that the bootstrap
  and the swaps take whole *patients* (all lesions of a drawn patient come along): lesions of one
  patient are correlated and lesion-level resampling makes the CIs too narrow and the test too eager.
  With one lesion per patient the two are identical. The test is two-sided by default and swaps
  ranks, so neither model's score scale matters (:func:`lesionbench.benchmark.metrics.paired_comparison`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from tqdm.auto import tqdm

from lesionbench import __version__
from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.metrics import bootstrap_ci, canonical_metric, metrics_for
from lesionbench.benchmark.probes import C_GRID, check_probe, make_probe
from lesionbench.benchmark.splits import DEFAULT_FRACTIONS, DEFAULT_SEEDS, Subset, audit_leakage, check_sweep, draw_subsets, split_hash
from lesionbench.benchmark.types import EncoderMeta, SubsetResult, TaskKind, TaskMeta, TaskResult

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"


def _path_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)) or "_"


def result_dir(out_dir: Path, task: str, version: str, encoder: str, probe: str) -> Path:
    """Where the results of (task, task version, encoder, probe) live: versions of a task (another
    cohort, another LUNG1 fold) never overwrite each other's results."""
    return Path(out_dir) / _path_part(task) / _path_part(version) / _path_part(encoder) / _path_part(probe)


def task_versions(out_dir: Path, task: str) -> list[str]:
    """The task versions with results under ``out_dir``."""
    base = Path(out_dir) / _path_part(task)
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def task_metrics(meta: TaskMeta) -> tuple[str, ...]:
    """The metrics reported for a task: its main metric first, then its others (survival: always auc_2y and c_index)."""
    requested = [meta.main_metric, *meta.metrics] if meta.main_metric else list(meta.metrics)
    if meta.kind == TaskKind.SURVIVAL:
        requested += ["auc_2y", "c_index"]
    return metrics_for(meta.kind, requested or None)


def selection_metric(meta: TaskMeta) -> str:
    """The metric that chooses C: the task's main metric (survival: the 2-year AUC, what the probe predicts)."""
    if meta.kind == TaskKind.SURVIVAL:
        return "auc"
    return canonical_metric(meta.main_metric) if meta.main_metric else metrics_for(meta.kind)[0]


def n_classes_of(meta: TaskMeta, manifest: pd.DataFrame) -> int:
    if meta.kind == TaskKind.BINARY:
        return 2
    if meta.kind == TaskKind.MULTICLASS:
        return meta.n_classes or int(manifest["label"].max()) + 1
    return 2


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    last: float = 0.0

    def add(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.last = now - t0
        self.seconds[key] = self.seconds.get(key, 0.0) + self.last
        return now


#: (subset, training-row mask) -> features for every manifest row, and the encoder's own scores or None.
FeatureProvider = Callable[[Subset, np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def evaluate(
    task: Any,
    encoder: Any,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    probe: str = "linear",
    out_dir: Path = Path("lesionbench-results"),
    cache_dir: Path | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    features: np.ndarray | None = None,
    patches: np.ndarray | None = None,
    c_grid: Sequence[float] = C_GRID,
    refine: bool = True,
    batch_size: int | None = None,
    workers: int = 1,
    bootstrap_unit: str = "patient",
    resume: bool = True,
    jobs: int = 1,
) -> TaskResult:
    """Score ``encoder`` on ``task`` over every (fraction, seed); write and return the :class:`TaskResult`.

    Frozen encoders: features come from ``features`` (precomputed, manifest row order) or
    :func:`lesionbench.benchmark.features.extract_features` (cached). Trainable encoders (a ``fit``
    method): per (fraction, seed) a deep copy is fitted on the training subset's patches (``patches``
    or :func:`load_patches`), with the validation split as ``val``, then encodes every lesion;
    if it has ``predict_proba`` its own predictions are scored too (``params["head_metrics"]``).
    ``bootstrap_unit``: resample test ``"patient"``s (default) or single ``"lesion"``s for the CIs.
    ``resume``: reuse the (fraction, seed) runs finished earlier into the same result folder with the same
    task data, features (or patches), encoder and settings (a killed sweep restarts where it stopped;
    more seeds later add to the ones done); ``False`` recomputes every run.
    ``jobs``: (fraction, seed) runs fitted in parallel processes (probe fits; a trainable encoder's
    training); the results are the same as with 1 and come in the same order.
    """
    meta: TaskMeta = task.meta
    _check_options(fractions, seeds, probe, meta, bootstrap_unit, jobs)
    manifest = task.manifest().reset_index(drop=True)
    if not meta.published_split:
        audit_leakage(manifest, meta)  # a leak in lesionbench's own split fails before any expensive work
    for seed in seeds:  # a subset that cannot be drawn fails here, not after hours of extraction
        draw_subsets(manifest, meta, fractions=fractions, seed=seed)
    _check_test_split(manifest, meta)  # likewise
    emeta: EncoderMeta = encoder.meta
    trainable = callable(getattr(encoder, "fit", None))
    if not trainable:
        if features is None:
            from lesionbench.benchmark.features import extract_features

            features = extract_features(manifest, encoder, cache_dir=cache_dir, batch_size=batch_size, workers=workers, progress=progress)
        return evaluate_features(
            manifest, features, meta, encoder=emeta, fractions=fractions, seeds=seeds, probe=probe, out_dir=out_dir,
            n_boot=n_boot, progress=progress, c_grid=c_grid, refine=refine, bootstrap_unit=bootstrap_unit, resume=resume, jobs=jobs,
        )  # fmt: skip

    if jobs > 1 and str(getattr(encoder, "device", "cpu")).startswith("cuda"):
        # parallel trainings would share (and could exhaust) one GPU's memory; one at a time is what a GPU is fast at
        logger.info("%s trains on %s: its (fraction, seed) runs go one at a time instead of %d in parallel.", emeta.name, encoder.device, jobs)
        jobs = 1
    if patches is None:
        from lesionbench.benchmark.features import load_patches

        patches = load_patches(manifest, emeta.patch, progress=progress)
    if len(patches) != len(manifest):
        raise ConfigurationError(f"{len(patches)} patches for {len(manifest)} manifest rows; pass one patch per lesion in manifest order.")
    train_labels, _ = _fit_labels(manifest, meta)
    val_idx = np.flatnonzero((manifest["split"] == "val").to_numpy() & np.isfinite(train_labels))
    val = (patches[val_idx], train_labels[val_idx].astype(int)) if len(val_idx) else None

    # a head sized from the task, not from whichever classes the (small) subset happens to hold
    head_classes = n_classes_of(meta, manifest) if meta.kind == TaskKind.MULTICLASS else 2
    provider = _TrainedFeatures(encoder, np.asarray(patches), train_labels, val, head_classes)
    return _run(manifest, meta, emeta, provider, fractions=fractions, seeds=seeds, probe=probe, out_dir=out_dir, n_boot=n_boot,
                progress=progress, c_grid=c_grid, refine=refine, bootstrap_unit=bootstrap_unit,
                data_digest=_array_digest(patches), resume=resume, jobs=jobs)  # fmt: skip


@dataclass(frozen=True)
class _FrozenFeatures:
    """Feature provider of a frozen encoder: the same features for every run."""

    X: np.ndarray

    def __call__(self, subset: Subset, train_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.X, None


@dataclass(frozen=True)
class _TrainedFeatures:
    """Feature provider of a trainable encoder: a fresh copy fitted on each run's training lesions
    (labels NaN where undecided, e.g. censored before 2 years), then encoding every lesion."""

    encoder: Any
    patches: np.ndarray
    labels: np.ndarray
    val: tuple[np.ndarray, np.ndarray] | None
    head_classes: int

    def __call__(self, subset: Subset, train_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        idx = np.flatnonzero(train_mask & np.isfinite(self.labels))
        model = copy.deepcopy(self.encoder)
        if hasattr(model, "n_classes") and model.n_classes is None:
            model.n_classes = self.head_classes
        model.fit(self.patches[idx], self.labels[idx].astype(int), val=self.val)
        X = np.asarray(model.encode(self.patches), dtype=np.float32)
        head = np.asarray(model.predict_proba(self.patches), dtype=float) if callable(getattr(model, "predict_proba", None)) else None
        return X, head


def evaluate_features(
    manifest: pd.DataFrame,
    X: np.ndarray,
    meta: TaskMeta,
    *,
    encoder: EncoderMeta,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    probe: str = "linear",
    out_dir: Path = Path("lesionbench-results"),
    n_boot: int = 1000,
    progress: bool = True,
    c_grid: Sequence[float] = C_GRID,
    refine: bool = True,
    bootstrap_unit: str = "patient",
    resume: bool = True,
    jobs: int = 1,
) -> TaskResult:
    """Score precomputed features ``X`` (one row per manifest row, in order) of a frozen encoder
    (``resume``, ``jobs``: see :func:`evaluate`)."""
    manifest = manifest.reset_index(drop=True)
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(manifest):
        raise ConfigurationError(f"Features of shape {X.shape} for {len(manifest)} manifest rows; expected ({len(manifest)}, feature_dim) in manifest order.")
    _check_options(fractions, seeds, probe, meta, bootstrap_unit, jobs)
    return _run(manifest, meta, encoder, _FrozenFeatures(X), fractions=fractions, seeds=seeds, probe=probe,
                out_dir=out_dir, n_boot=n_boot, progress=progress, c_grid=c_grid, refine=refine, bootstrap_unit=bootstrap_unit,
                data_digest=_array_digest(X), resume=resume, jobs=jobs)  # fmt: skip


def _check_test_split(manifest: pd.DataFrame, meta: TaskMeta) -> None:
    counts = manifest["split"].value_counts().to_dict()
    if not counts.get("test"):
        raise ConfigurationError(
            f"Task {meta.name!r} has no lesion with split 'test' (its manifest has {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
            "nothing to score. Set split=test for a held-out set of patients in the manifest (a synthetic cohort needs more "
            "patients: `lesionbench synth --patients 96`)."
        )


def _check_options(fractions: Sequence[float], seeds: Sequence[int], probe: str, meta: TaskMeta, bootstrap_unit: str = "patient", jobs: int = 1) -> None:
    check_sweep(fractions, seeds)
    check_probe(probe)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigurationError(f"jobs must be a whole number >= 1 (parallel runs), got {jobs!r}.")
    task_metrics(meta)  # unknown metric names fail now
    if bootstrap_unit not in ("patient", "lesion"):
        raise ConfigurationError(f"bootstrap_unit must be 'patient' or 'lesion'; got {bootstrap_unit!r}.")


def _fit_labels(manifest: pd.DataFrame, meta: TaskMeta) -> tuple[np.ndarray, int]:
    """Labels a trainable encoder learns from (survival: the 2-year label, NaN when censored early)."""
    if meta.kind == TaskKind.SURVIVAL:
        y = two_year_label(manifest["time"].to_numpy(float), manifest["event"].to_numpy(float))
        return y, int(np.isnan(y).sum())
    return manifest["label"].to_numpy(float), 0


def _run(
    manifest: pd.DataFrame,
    meta: TaskMeta,
    emeta: EncoderMeta,
    provider: FeatureProvider,
    *,
    fractions: Sequence[float],
    seeds: Sequence[int],
    probe: str,
    out_dir: Path,
    n_boot: int,
    progress: bool,
    c_grid: Sequence[float],
    refine: bool,
    bootstrap_unit: str = "patient",
    data_digest: str,
    resume: bool = False,
    jobs: int = 1,
) -> TaskResult:
    """The sweep. Each finished run is saved under ``runs/`` with a key made of ``data_digest`` (of the
    features or patches) and everything else it depends on; ``resume`` reuses saved runs of the same key."""
    timer = _Timer()
    t0 = time.perf_counter()
    fractions = [float(f) for f in fractions]
    seeds = [int(s) for s in seeds]
    if not fractions or not seeds:
        raise ConfigurationError("Give at least one training fraction and one seed.")
    leaked = audit_leakage(manifest, meta)
    kind = meta.kind
    metric_names = task_metrics(meta)
    n_classes = n_classes_of(meta, manifest)
    template = make_probe(probe, kind, metric=selection_metric(meta), n_classes=n_classes, c_grid=c_grid, refine=refine)
    rdir = result_dir(out_dir, meta.name, meta.version, emeta.name, probe)
    for sub in ("predictions", "subsets", RUNS_DIR):
        (rdir / sub).mkdir(parents=True, exist_ok=True)

    split = manifest["split"].to_numpy()
    val_mask, test_mask = split == "val", split == "test"
    _check_test_split(manifest, meta)
    lesion_ids = manifest["lesion_id"].astype(str).to_numpy()
    groups = manifest["patient_id"].astype(str).to_numpy()
    y_test = _truth(manifest[test_mask], kind)
    # resample patients, not lesions: lesions of one patient are not independent
    test_groups = groups[test_mask] if bootstrap_unit == "patient" else None
    sweep_key = _sweep_key(manifest, meta, emeta, data_digest, probe=probe, metrics=metric_names, n_boot=n_boot,
                           bootstrap_unit=bootstrap_unit, c_grid=c_grid, refine=refine)  # fmt: skip
    finished = _finished_runs(rdir, sweep_key) if resume else {}
    t0 = timer.add("setup", t0)

    slots: list[SubsetResult | None] = []
    todo: list[tuple[int, int, float, Subset]] = []  # (slot, seed, fraction, subset) still to compute
    n_feat = 0
    for seed in seeds:
        t0 = time.perf_counter()
        subsets = draw_subsets(manifest, meta, fractions=fractions, seed=seed)
        t0 = timer.add("splits", t0)
        for fraction in fractions:
            subset = subsets[fraction]
            earlier = finished.get(subset.name)
            if earlier is not None and earlier[0].params.get("subset_hash") == subset.hash:
                slots.append(earlier[0])
                n_feat = n_feat or earlier[1]
                continue
            todo.append((len(slots), seed, fraction, subset))
            slots.append(None)
    resumed = len(slots) - len(todo)
    sweep = _Sweep(manifest, kind, metric_names, template, rdir, n_boot, val_mask, test_mask, groups, test_groups, y_test, lesion_ids)
    bar = tqdm(total=len(slots), initial=resumed, desc=f"{meta.name} / {emeta.name}", disable=not progress, unit="run")
    names = {slot: subset.name for slot, _, _, subset in todo}
    for slot, run, n_feat_run, seconds in _score_runs(sweep, provider, todo, jobs):
        slots[slot] = run
        n_feat = n_feat_run
        _save_finished(rdir, names[slot], sweep_key, run, n_feat)
        for k, v in seconds.items():
            timer.seconds[k] = timer.seconds.get(k, 0.0) + v
        bar.update(1)
        main = metric_names[0]
        bar.set_postfix_str(f"{main}={run.metrics[main].value:.3f} (f={run.fraction:g}, s={run.seed})")
    runs = [r for r in slots if r is not None]
    bar.close()
    undefined = {m for r in runs for m, v in r.metrics.items() if not np.isfinite(v.value)}
    if resumed:
        logger.info("%s / %s: %d of %d runs resumed from %s (finished earlier with the same task data, features and settings; "
                    "resume=False / --no-resume recomputes them)", meta.name, emeta.name, resumed, len(runs), rdir / RUNS_DIR)  # fmt: skip
    if undefined:
        logger.warning("%s: %s undefined (NaN) on the test split in some runs: %s", meta.name, ", ".join(sorted(undefined)), _why_undefined(manifest[test_mask], kind))

    extra: dict[str, Any] = {
        "n_lesions": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "feature_dim": n_feat,
        "metrics": list(metric_names),
        "selection_metric": selection_metric(meta),
        "c_grid": [float(c) for c in c_grid],
        "c_refine": bool(refine),
        "n_boot": int(n_boot),
        "bootstrap_unit": bootstrap_unit,
        "fractions": fractions,
        "seeds": seeds,
        "timing_s": {k: round(v, 3) for k, v in timer.seconds.items()},
        "leaked_patient_count": len(leaked),
    }
    if kind == TaskKind.SURVIVAL:
        y2 = two_year_label(manifest["time"].to_numpy(float), manifest["event"].to_numpy(float))
        extra["n_censored_2y"] = {s: int(((split == s) & np.isnan(y2)).sum()) for s in ("train", "val", "test")}
    result = TaskResult(
        task=meta,
        encoder=emeta,
        probe=probe,
        runs=tuple(runs),
        lesionbench_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        leaked_patients=tuple(leaked),
        split_hash=split_hash(manifest),
        extra=extra,
    )
    write_result(result, rdir)
    logger.info("wrote %s (%d runs)", rdir / RESULT_FILE, len(runs))
    return result


@dataclass(frozen=True)
class _Sweep:
    """What every (fraction, seed) run of a sweep shares (picklable, for parallel runs)."""

    manifest: pd.DataFrame
    kind: TaskKind
    metric_names: tuple[str, ...]
    template: Any
    rdir: Path
    n_boot: int
    val_mask: np.ndarray
    test_mask: np.ndarray
    groups: np.ndarray
    test_groups: np.ndarray | None
    y_test: Any
    lesion_ids: np.ndarray


def _score_runs(sweep: _Sweep, provider: FeatureProvider, todo: list[tuple[int, int, float, Subset]], jobs: int) -> Iterator[tuple[int, SubsetResult, int, dict[str, float]]]:
    """(slot, run, feature_dim, seconds per stage) of each run in ``todo``: in order in this process, or
    as they finish in ``jobs`` worker processes (joblib/loky; large arrays are shared by memory map)."""
    if jobs <= 1 or len(todo) <= 1:
        yield from (_score_one_slot(sweep, provider, *job) for job in todo)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=min(int(jobs), len(todo)), return_as="generator_unordered")
    yield from parallel(delayed(_score_one_slot)(sweep, provider, *job) for job in todo)


def _score_one_slot(sweep: _Sweep, provider: FeatureProvider, slot: int, seed: int, fraction: float, subset: Subset) -> tuple[int, SubsetResult, int, dict[str, float]]:
    return (slot, *_score_run(sweep, provider, seed, fraction, subset))


def _score_run(sweep: _Sweep, provider: FeatureProvider, seed: int, fraction: float, subset: Subset) -> tuple[SubsetResult, int, dict[str, float]]:
    """One (fraction, seed) run: features, probe fit, bootstrap CIs, prediction and subset files."""
    timer = _Timer()
    kind, manifest, rdir = sweep.kind, sweep.manifest, sweep.rdir
    t0 = time.perf_counter()
    train_mask = np.isin(sweep.lesion_ids, subset.lesion_ids)
    X, head = provider(subset, train_mask)
    t0 = timer.add("features", t0)
    est = clone(sweep.template)
    scores = _fit_predict(est, kind, manifest, X, train_mask, sweep.val_mask, sweep.groups)
    t0 = timer.add("probe", t0)
    boot_seed = [seed, int(round(fraction * 1_000_000))]
    boot = {"n_boot": sweep.n_boot, "seed": boot_seed, "groups": sweep.test_groups}
    values = bootstrap_ci(kind, sweep.y_test, _select(scores, sweep.test_mask), sweep.metric_names, **boot)
    params: dict[str, Any] = {
        **est.report(),
        "n_values_imputed": _n_imputed(est, X, ~train_mask),
        "subset_hash": subset.hash,
        "n_patients_train": subset.n_patients,
        "probe_seconds": round(timer.last, 3),
    }
    if kind == TaskKind.SURVIVAL:
        params.update(_survival_extras(manifest, scores, sweep.test_mask, est.risk_threshold_))
    head_frame = None
    if head is not None:
        head_scores = _head_scores(head, kind)
        head_values = bootstrap_ci(kind, sweep.y_test, _select(head_scores, sweep.test_mask), sweep.metric_names, **boot)
        params["head_metrics"] = {k: v.to_dict() for k, v in head_values.items()}
        head_frame = _predictions_frame(manifest, kind, head_scores)
    t0 = timer.add("metrics", t0)
    pred_rel = f"predictions/{subset.name}.csv"
    sub_rel = f"subsets/{subset.name}.csv"
    # a saved run of other data goes first: its prediction files are replaced now (saved anew once done)
    (rdir / RUNS_DIR / f"{subset.name}.json").unlink(missing_ok=True)
    _predictions_frame(manifest, kind, scores).to_csv(rdir / pred_rel, index=False)
    subset.write(rdir / sub_rel)
    if head_frame is not None:
        params["head_predictions_path"] = f"predictions/{subset.name}_head.csv"
        head_frame.to_csv(rdir / params["head_predictions_path"], index=False)
    timer.add("write", t0)
    run = SubsetResult(fraction, seed, int(train_mask.sum()), values, params, pred_rel, sub_rel)
    return run, int(X.shape[1]), timer.seconds


RUNS_DIR = "runs"


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _sweep_key(manifest: pd.DataFrame, meta: TaskMeta, emeta: EncoderMeta, data_digest: str, **settings: Any) -> str:
    """Everything a finished (fraction, seed) run depends on besides its subset: the task (meta and the
    manifest's ids, splits and labels), the encoder, its features or patches, the probe settings and
    the lesionbench version."""
    cols = [c for c in ("lesion_id", "patient_id", "split", *meta.label_columns) if c in manifest.columns]
    rows = pd.util.hash_pandas_object(manifest[cols].astype(str), index=False).to_numpy()
    payload = {
        "task": meta.to_dict(),
        "manifest": _array_digest(rows),
        "encoder": emeta.fingerprint(),
        "data": data_digest,
        "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in settings.items()},
        "lesionbench": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _finished_runs(rdir: Path, key: str) -> dict[str, tuple[SubsetResult, int]]:
    """Runs saved by an earlier sweep with the same key whose prediction and subset files are still there."""
    found: dict[str, tuple[SubsetResult, int]] = {}
    for path in sorted((rdir / RUNS_DIR).glob("*.json")):
        try:
            d = json.loads(path.read_text())
            if d.get("key") != key:
                continue
            run = SubsetResult.from_dict(d["run"])
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: the run is redone
            logger.warning("Ignoring unreadable saved run %s (%s); it is recomputed.", path, exc)
            continue
        if (rdir / run.predictions_path).is_file() and (rdir / run.subset_path).is_file():
            found[path.stem] = (run, int(d.get("feature_dim", 0)))
    return found


def _save_finished(rdir: Path, name: str, key: str, run: SubsetResult, feature_dim: int) -> None:
    record = json.dumps({"key": key, "feature_dim": feature_dim, "run": run.to_dict()}, default=_json_default)
    atomic_write(rdir / RUNS_DIR / f"{name}.json", lambda tmp: tmp.write_text(record))


def _why_undefined(test: pd.DataFrame, kind: TaskKind) -> str:
    if kind == TaskKind.SURVIVAL:
        n_events = int(test["event"].sum())
        return f"the test split has {len(test)} lesions and {n_events} events (a C-index needs comparable pairs, the 2-year AUC both outcomes)."
    counts = test["label"].value_counts().sort_index().to_dict()
    return f"the test split's labels are {counts} (AUC and mAP need every scored class present; use more test patients)."


def write_result(result: TaskResult, rdir: Path) -> Path:
    """Write ``result.json`` into a result folder."""
    rdir.mkdir(parents=True, exist_ok=True)
    path = rdir / RESULT_FILE
    path.write_text(json.dumps(result.to_dict(), indent=2, default=_json_default))
    return path


def load_result(rdir: Path) -> TaskResult:
    """Read ``result.json`` of a result folder."""
    path = Path(rdir) / RESULT_FILE
    if not path.is_file():
        raise ConfigurationError(f"No {RESULT_FILE} in {rdir}. Run `lesionbench run` for this task and encoder first.")
    return TaskResult.from_dict(json.loads(path.read_text()))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _truth(rows: pd.DataFrame, kind: TaskKind) -> Any:
    if kind == TaskKind.SURVIVAL:
        return rows[["time", "event"]].to_numpy(float)
    return rows["label"].to_numpy().astype(int)


def _select(scores: Any, mask: np.ndarray) -> Any:
    if isinstance(scores, dict):
        return {k: v[mask] for k, v in scores.items()}
    return scores[mask]


def _fit_predict(est: Any, kind: TaskKind, manifest: pd.DataFrame, X: np.ndarray, train: np.ndarray, val: np.ndarray, groups: np.ndarray) -> Any:
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
    """Kaplan-Meier risk groups on the test split (split at the training median risk) and their log-rank test."""
    from lifelines.statistics import logrank_test

    t, e = manifest["time"].to_numpy(float)[test], manifest["event"].to_numpy(float)[test]
    high = scores["risk"][test] > threshold
    y2 = two_year_label(t, e)
    out: dict[str, Any] = {"n_censored_2y_excluded_test": int(np.isnan(y2).sum()), "km_n_high": int(high.sum()), "km_n_low": int((~high).sum())}
    if high.any() and (~high).any():
        out["logrank_p"] = float(logrank_test(t[high], t[~high], e[high], e[~high]).p_value)
    else:
        out["logrank_p"] = float("nan")
    return out


def _predictions_frame(manifest: pd.DataFrame, kind: TaskKind, scores: Any) -> pd.DataFrame:
    df = manifest[["lesion_id", "patient_id", "split"]].copy()
    if kind == TaskKind.SURVIVAL:
        df["time"] = manifest["time"].to_numpy(float)
        df["event"] = manifest["event"].to_numpy(int)
        df["label_2y"] = two_year_label(df["time"].to_numpy(), df["event"].to_numpy())
        df["score"] = scores["score"]
        df["risk"] = scores["risk"]
        return df
    df["label"] = manifest["label"].to_numpy().astype(int)
    if kind == TaskKind.BINARY:
        df["score"] = scores[:, 1]
    else:
        for k in range(scores.shape[1]):
            df[f"score_{k}"] = scores[:, k]
    return df


def read_predictions(path: Path, kind: TaskKind | str) -> tuple[pd.DataFrame, Any, Any]:
    """Read a predictions CSV; returns (test rows, ground truth, scores) in the form :mod:`metrics` takes."""
    kind = TaskKind(kind)
    df = pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str})
    test = df[df["split"] == "test"].reset_index(drop=True)
    if kind == TaskKind.SURVIVAL:
        return test, test[["time", "event"]].to_numpy(float), {"score": test["score"].to_numpy(float), "risk": test["risk"].to_numpy(float)}
    if kind == TaskKind.BINARY:
        return test, test["label"].to_numpy(int), test["score"].to_numpy(float)
    cols = sorted((c for c in test.columns if c.startswith("score_")), key=lambda c: int(c.split("_")[1]))
    return test, test["label"].to_numpy(int), test[cols].to_numpy(float)


def _common_version(out_dir: Path, task: str, encoders: Sequence[str], probe: str) -> str:
    """The one task version under ``out_dir`` with results of every encoder in ``encoders``."""
    versions = task_versions(out_dir, task)
    both = [v for v in versions if all((result_dir(out_dir, task, v, e, probe) / RESULT_FILE).is_file() for e in encoders)]
    if len(both) == 1:
        return both[0]
    if not both and len(versions) == 1:
        return versions[0]  # the caller names the encoder that is missing
    names = " and ".join(repr(e) for e in encoders)
    if not both:
        present = "; ".join(f"{v}: {', '.join(sorted(p.name for p in (Path(out_dir) / _path_part(task) / v).iterdir() if p.is_dir())) or 'none'}" for v in versions)
        raise ConfigurationError(
            f"No version of task {task!r} under {out_dir} has {probe!r}-probe results of both {names} "
            f"(encoders by version: {present or 'no results at all'}). Run `lesionbench run --task {task} --encoder NAME` "
            "for each encoder into the same --out first."
        )
    raise ConfigurationError(
        f"Task {task!r} has results of {names} for several versions under {out_dir}: {', '.join(both)}. "
        "Pick one with --task-version (python: version=...)."
    )


def compare_saved(
    out_dir: Path,
    task: str,
    encoder_a: str,
    encoder_b: str,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    probe: str = "linear",
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    n_perm: int = 1000,
    version: str | None = None,
    alternative: str = "two-sided",
) -> list[Any]:
    """Paired comparison (A - B) of two encoders' saved predictions of one (fraction, seed), per metric.

    ``alternative``: ``"two-sided"`` (default), ``"greater"`` (A is better) or ``"less"``; the bootstrap
    and the permutations resample the results' ``bootstrap_unit`` (patients by default).

    Both results must be of the same task version and train/val/test partition; the test lesions are
    aligned by ``lesion_id``. ``version`` (the task version) may be left out when only one version of the
    task has results of both encoders.
    """
    from lesionbench.benchmark.metrics import paired_comparison

    version = version or _common_version(Path(out_dir), task, (encoder_a, encoder_b), probe)
    res, preds = [], []
    for enc in (encoder_a, encoder_b):
        rdir = result_dir(Path(out_dir), task, version, enc, probe)
        if not (rdir / RESULT_FILE).is_file():
            vdir = rdir.parent.parent
            have = sorted(p.name for p in vdir.iterdir() if p.is_dir()) if vdir.is_dir() else []
            raise ConfigurationError(
                f"No results for task {task!r} version {version!r}, encoder {enc!r}, probe {probe!r} under {out_dir} "
                f"(looked for {rdir / RESULT_FILE}). Encoders with results for this task version: {', '.join(have) or 'none'}. "
                f"Run `lesionbench run --task {task} --encoder {enc}` first."
            )
        r = load_result(rdir)
        run = next((x for x in r.runs if abs(x.fraction - fraction) < 1e-9 and x.seed == seed), None)
        if run is None:
            avail = sorted({(x.fraction, x.seed) for x in r.runs})
            raise ConfigurationError(f"{rdir}: no run with fraction {fraction:g} and seed {seed}; available (fraction, seed): {avail}.")
        res.append(r)
        preds.append(read_predictions(rdir / run.predictions_path, r.task.kind))
    a, b = res
    if (a.task.version, a.split_hash) != (b.task.version, b.split_hash):
        raise ConfigurationError(
            f"The two results are not comparable: task version {a.task.version} / split {a.split_hash} vs "
            f"{b.task.version} / {b.split_hash}. Re-run both encoders on the same prepared task."
        )
    (ta, ya, sa), (tb, yb, sb) = preds
    order = pd.Index(tb["lesion_id"]).get_indexer(ta["lesion_id"])
    if len(ta) != len(tb) or (order < 0).any():
        raise ConfigurationError("The two prediction files do not cover the same test lesions; re-run both encoders.")
    if not np.array_equal(np.asarray(ya, float), np.asarray(yb, float)[order]):
        raise ConfigurationError("The two prediction files carry different labels for the same lesions; re-run both encoders on the same task data.")
    sb = {k: v[order] for k, v in sb.items()} if isinstance(sb, dict) else sb[order]
    names = list(metrics) if metrics else list(a.runs[0].metrics)
    seed_key = int(seed) * 1_000_003 + int(round(fraction * 1_000_000))
    groups = ta["patient_id"].to_numpy() if a.extra.get("bootstrap_unit", "patient") == "patient" else None
    return [paired_comparison(ya, sa, sb, m, kind=a.task.kind, n_boot=n_boot, n_perm=n_perm, seed=seed_key, groups=groups, alternative=alternative) for m in names]
