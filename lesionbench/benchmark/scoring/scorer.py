"""The scorer: features in, a :class:`TaskResult` with bootstrap CIs out.

``evaluate(task, encoder)`` plans the sweep once (:func:`lesionbench.benchmark.scoring.sweep.plan_sweep`:
options, leakage, test split, every training and validation subset), extracts features (through the
cache), then for every (fraction, seed) fits a fresh clone of the probe on the training subset (the
run's validation rows choose C), scores every lesion, and computes the task's metrics on the test
split with a seeded percentile bootstrap (:mod:`lesionbench.benchmark.scoring.run_one`). Trainable encoders
(with ``fit``) are deep-copied and trained on each training subset first, early-stopped on the same
validation rows.

Protocols (:mod:`lesionbench.benchmark.scoring.protocols`): ``probe="knn"`` scores frozen features with the
k-NN probe; ``shots`` / ``shots_total`` replace the fractions by k-shot training sets
(:mod:`lesionbench.benchmark.scoring.shots`); ``adapt="finetune"`` fine-tunes an encoder's own network on each
training subset (:mod:`lesionbench.baselines.finetune`) before the probe.

Everything lands in ``<out_dir>/<task>/<task version>/<encoder>/<protocol folder>/``: the probe's name
for frozen features on fractions (``linear``, ``knn``), else ``<protocol>-<probe>`` (``k-shot-linear``,
``finetune-linear``, ...):

* ``result.json`` - :meth:`TaskResult.to_dict` (the schema the leaderboard and MLflow read);
  ``extra["validation"]`` says what tuned the runs (``"fraction"`` or ``"full"``);
* ``predictions/frac<f>_seed<s>.csv`` - one row per lesion of every split: ``lesion_id, patient_id,
  split``, then the scores (``score_<k>`` per class
  index for multiclass, ``score`` for binary - the probability with the operating threshold chosen
  on validation folded in, so ``score > 0.5`` is the probe's call - ``score`` = P(death within 2
  years) and ``risk`` = Cox linear predictor for survival). No labels: the results folder is public
  (``submit`` and the leaderboard read it), so a test label there would give the answers away. Metrics
  are recomputed from the ``split == "test"`` rows joined with the task's manifest (:func:`read_predictions`);
* ``subsets/frac<f>_seed<s>.csv`` - the training lesions of the run (with their hash), and
  ``subsets/frac<f>_seed<s>_val.csv`` its validation lesions (``val="fraction"``);
* k-shot runs are named ``shots<k>_seed<s>`` (k per class) or ``budget<n>_seed<s>`` (a total) instead of
  ``frac<f>_seed<s>``;
* ``runs/frac<f>_seed<s>.json`` - each finished run with the key of everything it depends on
  (:mod:`lesionbench.benchmark.scoring.saved_runs`).

MLflow logging is a separate step (:mod:`lesionbench.benchmark.tracking.mlflow_sink`).

Where lesionbench differs from the FMCIB paper's protocol, and why:

* C is searched over the paper's range (1e-6 .. 1e3) on a fixed coarse-to-fine grid (decades, then
  quarter decades around the best) instead of 100 Optuna trials: deterministic, and 16 warm-started
  fits instead of 100. Ties go to the middle of the plateau.
* The paper does not say how its limited-label subsets were drawn; ours are patient-grouped,
  label-stratified, nested and seeded (:mod:`lesionbench.benchmark.scoring.splits`), with 5 seeds per fraction
  and the seed spread reported. A limited-label run is tuned on a validation subset of its own
  fraction by default (``val="full"``: the whole validation split, as the paper).
* Binary balanced accuracy uses an operating threshold chosen on validation (or out-of-fold training)
  predictions, not 0.5.
* The 2-year label respects censoring (censored before 730 days is excluded and counted); the
  published LUNG1 labels count such patients as survivors.
* Survival adds an elastic-net Cox model on all features (C-index; penalty chosen on validation) and
  Kaplan-Meier groups split at the *training* median risk, so the test split never sets its own threshold.
* A patient in two splits is an error for our splits and reported for published ones.
* CIs and the paired test follow the paper (1,000 percentile-bootstrap resamples of the test set;
  a permutation test with 1,000 swaps plus a bootstrap CI of the difference), except that the bootstrap
  and the swaps take whole *patients* (all lesions of a drawn patient come along): lesions of one
  patient are correlated and lesion-level resampling makes the CIs too narrow and the test too eager.
  With one lesion per patient the two are identical. The test is two-sided by default and swaps
  ranks, so neither model's score scale matters (:func:`lesionbench.benchmark.scoring.metrics.paired_comparison`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, did_you_mean
from lesionbench.benchmark.host import atomic_write, environment
from lesionbench.benchmark.scoring.executor import Executor
from lesionbench.benchmark.scoring.probes import C_GRID
from lesionbench.benchmark.scoring.protocols import protocol_dir, protocol_of
from lesionbench.benchmark.scoring.run_one import FeatureProvider, FrozenFeatures, TrainedFeatures, attach_labels, fit_labels, label_columns
from lesionbench.benchmark.scoring.saved_runs import RUNS_DIR, array_digest
from lesionbench.benchmark.scoring.saved_runs import json_default as _json_default
from lesionbench.benchmark.scoring.splits import DEFAULT_FRACTIONS, DEFAULT_SEEDS
from lesionbench.benchmark.scoring.sweep import VAL_POLICIES, SweepPlan, check_options, n_classes_of, plan_sweep, run_sweep, selection_metric, task_metrics
from lesionbench.benchmark.types import EncoderMeta, TaskKind, TaskMeta, TaskResult

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"


def _path_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)) or "_"


def result_dir(out_dir: Path, task: str, version: str, encoder: str, probe: str) -> Path:
    """Where the results of (task, task version, encoder, probe) live: versions of a task (another
    cohort, another LUNG1 fold) never overwrite each other's results."""
    return Path(out_dir) / _path_part(task) / _path_part(version) / _path_part(encoder) / _path_part(probe)


def result_folder(out_dir: Path, result: TaskResult) -> Path:
    """The result folder of ``result`` (its protocol included)."""
    return result_dir(out_dir, result.task.name, result.task.version, result.encoder.name, protocol_dir(protocol_of(result), result.probe))


def _shots(shots: Sequence[int] | None, shots_total: Sequence[int] | None) -> tuple[Sequence[int] | None, str]:
    if shots is not None and shots_total is not None:
        raise ConfigurationError("Give k shots per class (shots=, --shots) or a total budget (shots_total=, --shots-total), not both.")
    return (shots, "class") if shots_total is None else (shots_total, "total")


def task_versions(out_dir: Path, task: str) -> list[str]:
    """The task versions with results under ``out_dir``."""
    base = Path(out_dir) / _path_part(task)
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


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
    val: str = "fraction",
    shots: Sequence[int] | None = None,
    shots_total: Sequence[int] | None = None,
    adapt: str | None = None,
    adapt_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
    trainer: Callable[..., Any] | None = None,
) -> TaskResult:
    """Score ``encoder`` on ``task`` over every (fraction, seed); write and return the :class:`TaskResult`.

    Frozen encoders: features come from ``features`` (precomputed, manifest row order) or
    :func:`lesionbench.benchmark.encoders.features.extract_features` (cached). Trainable encoders (a ``fit``
    method): per (fraction, seed) a deep copy is fitted on the training subset's patches (``patches``
    or :func:`load_patches`), with the run's validation rows as ``val``, then encodes every lesion;
    if it has ``predict_proba`` its own predictions are scored too (``params["head_metrics"]``).
    ``bootstrap_unit``: resample test ``"patient"``s (default) or single ``"lesion"``s for the CIs.
    ``resume``: reuse the (fraction, seed) runs finished earlier into the same result folder with the same
    task data, features (or patches), encoder and settings (a killed sweep restarts where it stopped;
    more seeds later add to the ones done); ``False`` recomputes every run.
    ``jobs``: (fraction, seed) runs fitted in parallel processes (probe fits; a trainable encoder's
    training); the results are the same as with 1 and come in the same order.
    ``val``: ``"fraction"`` (default) tunes each run (C, threshold, Cox penalty, early stopping) on a
    validation subset drawn with the run's fraction; ``"full"`` on the whole validation split.
    ``shots`` (k per class) or ``shots_total`` (budgets over all classes): k-shot runs instead of the
    fractions, tuned on as many shots from the validation split (``val="full"``: the whole split).
    ``adapt="finetune"``: fine-tune the encoder's own network on each training subset with ``trainer``
    (``trainer(encoder, **adapt_options)`` returns the trainable encoder; the CLI and :func:`lesionbench.evaluate`
    hand in :func:`lesionbench.baselines.finetune.finetune`).
    ``executor``: where extraction and the runs happen when not in this process, e.g.
    :class:`lesionbench.scaleout.sweep.DaskExecutor` (features extracted on its workers image by image, every
    run a task of its own); the numbers are the same as without it.
    """
    meta: TaskMeta = task.meta
    shot_counts, shots_per = _shots(shots, shots_total)
    # everything that can fail cheaply fails here, before hours of extraction
    plan = plan_sweep(task.manifest(), meta, fractions=fractions, seeds=seeds, probe=probe, n_boot=n_boot, c_grid=c_grid,
                      refine=refine, bootstrap_unit=bootstrap_unit, val=val, jobs=jobs, shots=shot_counts, shots_per=shots_per, adapt=adapt)  # fmt: skip
    if adapt is not None:
        if trainer is None:
            raise ConfigurationError(f"adapt={adapt!r} needs a trainer: pass trainer=lesionbench.baselines.finetune.finetune "
                                     "(the CLI's --protocol finetune and lesionbench.evaluate do).")  # fmt: skip
        encoder = trainer(encoder, **(adapt_options or {}))
    manifest = plan.manifest
    emeta: EncoderMeta = encoder.meta
    trainable = callable(getattr(encoder, "fit", None))
    if not trainable:
        if features is None:
            if executor is not None:
                features = executor.extract_features(manifest, encoder, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
            else:
                from lesionbench.benchmark.encoders.features import extract_features

                features = extract_features(manifest, encoder, cache_dir=cache_dir, batch_size=batch_size, workers=workers, progress=progress)
        return _execute(plan, emeta, FrozenFeatures(_checked_features(features, manifest)), out_dir=out_dir, data_digest=array_digest(np.asarray(features)),
                        progress=progress, resume=resume, jobs=jobs, executor=executor, env=environment(encoder))  # fmt: skip

    if jobs > 1 and str(getattr(encoder, "device", "cpu")).startswith("cuda"):
        # parallel trainings would share (and could exhaust) one GPU's memory; one at a time is what a GPU is fast at
        logger.info("%s trains on %s: its (fraction, seed) runs go one at a time instead of %d in parallel.", emeta.name, encoder.device, jobs)
        jobs = 1
    if patches is None:
        from lesionbench.benchmark.encoders.features import load_patches

        patches = load_patches(manifest, emeta.patch, progress=progress)
    if len(patches) != len(manifest):
        raise ConfigurationError(f"{len(patches)} patches for {len(manifest)} manifest rows; pass one patch per lesion in manifest order.")
    # a head sized from the task, not from whichever classes the (small) subset happens to hold
    head_classes = plan.n_classes if meta.kind == TaskKind.MULTICLASS else 2
    provider = TrainedFeatures(encoder, np.asarray(patches), fit_labels(manifest, meta.kind), head_classes)
    return _execute(plan, emeta, provider, out_dir=out_dir, data_digest=array_digest(patches), progress=progress, resume=resume, jobs=jobs, executor=executor,
                    env=environment(encoder))  # fmt: skip


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
    val: str = "fraction",
    shots: Sequence[int] | None = None,
    shots_total: Sequence[int] | None = None,
) -> TaskResult:
    """Score precomputed features ``X`` (one row per manifest row, in order) of a frozen encoder
    (``resume``, ``jobs``, ``val``, ``shots``, ``shots_total``: see :func:`evaluate`)."""
    manifest = manifest.reset_index(drop=True)
    X = _checked_features(X, manifest)
    shot_counts, shots_per = _shots(shots, shots_total)
    plan = plan_sweep(manifest, meta, fractions=fractions, seeds=seeds, probe=probe, n_boot=n_boot, c_grid=c_grid,
                      refine=refine, bootstrap_unit=bootstrap_unit, val=val, jobs=jobs, shots=shot_counts, shots_per=shots_per)  # fmt: skip
    return _execute(plan, encoder, FrozenFeatures(X), out_dir=out_dir, data_digest=array_digest(X), progress=progress, resume=resume, jobs=jobs)


def _checked_features(X: Any, manifest: pd.DataFrame) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(manifest):
        raise ConfigurationError(f"Features of shape {X.shape} for {len(manifest)} manifest rows; expected ({len(manifest)}, feature_dim) in manifest order.")
    return X


def _execute(
    plan: SweepPlan, emeta: EncoderMeta, provider: FeatureProvider, *, out_dir: Path, data_digest: str, progress: bool, resume: bool, jobs: int,
    executor: Executor | None = None, env: dict[str, Any] | None = None,
) -> TaskResult:
    """Run the plan into its result folder and write ``result.json`` (``extra["environment"]``: ``env``, else this
    process's without an encoder; see :func:`lesionbench.benchmark.host.environment`)."""
    rdir = result_dir(out_dir, plan.meta.name, plan.meta.version, emeta.name, protocol_dir(plan.protocol, plan.probe))
    _check_same_checkpoint(rdir, emeta)
    _check_not_fewer(rdir, plan)
    result = run_sweep(plan, emeta, provider, rdir=rdir, data_digest=data_digest, progress=progress, resume=resume, jobs=jobs, executor=executor)
    result = dataclasses.replace(result, extra={**result.extra, "environment": env if env is not None else environment()})
    write_result(result, rdir)
    logger.info("wrote %s (%d runs)", rdir / RESULT_FILE, len(result.runs))
    return result


def write_result(result: TaskResult, rdir: Path) -> Path:
    """Write ``result.json`` into a result folder (atomically: a killed run leaves the old file or none)."""
    text = json.dumps(result.to_dict(), indent=2, default=_json_default)
    return atomic_write(Path(rdir) / RESULT_FILE, lambda tmp: tmp.write_text(text))


def load_result(rdir: Path) -> TaskResult:
    """Read ``result.json`` of a result folder."""
    path = Path(rdir) / RESULT_FILE
    if not path.is_file():
        raise ConfigurationError(f"No {RESULT_FILE} in {rdir}. Run `lesionbench run` for this task and encoder first.")
    try:
        return TaskResult.from_dict(json.loads(path.read_bytes().decode("utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # truncated, not JSON, or not a result
        raise ConfigurationError(f"{path} is not a readable lesionbench result ({type(exc).__name__}: {str(exc)[:200]}). "
                                 "Re-run `lesionbench run` for this task and encoder to write it again.") from None  # fmt: skip


def _check_same_checkpoint(rdir: Path, emeta: EncoderMeta) -> None:
    """Two checkpoints under one encoder name would share ``rdir``: the second would replace the first's result."""
    path = rdir / RESULT_FILE
    try:
        old = json.loads(path.read_bytes()).get("encoder", {}).get("weights_sha256", "") if path.is_file() else ""
    except (ValueError, AttributeError):  # an unreadable earlier result is simply replaced
        old = ""
    if old and isinstance(old, str) and emeta.weights_sha256 and old != emeta.weights_sha256:
        raise ConfigurationError(
            f"{rdir} holds the results of encoder {emeta.name!r} with other weights (sha256 {old[:12]}...; these are "
            f"{emeta.weights_sha256[:12]}...). Give this checkpoint its own --results folder, or remove {rdir} to replace those results."
        )


def _check_not_fewer(rdir: Path, plan: SweepPlan) -> None:
    """A run with fewer resamples, fractions (shots) or seeds than the result already in ``rdir`` would replace
    it (a scratch ``--seeds 0 --n-boot 10`` over the full sweep): refused before anything is computed."""
    path = rdir / RESULT_FILE
    try:
        old = json.loads(path.read_bytes()) if path.is_file() else None
        if not isinstance(old, dict):
            return
        old_boot = int(old.get("extra", {}).get("n_boot", 0))
        old_levels = {float(r["shots"]) if r.get("shots") else float(r["fraction"]) for r in old["runs"]}
        old_seeds = {int(r["seed"]) for r in old["runs"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # an unreadable earlier result is simply replaced
        return
    levels = {float(r.shots) if r.shots else float(r.fraction) for r in plan.runs}
    seeds = {int(r.seed) for r in plan.runs}
    fewer = [what for what, less in (("bootstrap resamples", plan.n_boot < old_boot), ("fractions or shots", not levels >= old_levels), ("seeds", not seeds >= old_seeds)) if less]
    if fewer:
        raise ConfigurationError(
            f"{path} holds a result with {old_boot} bootstrap resamples, fractions/shots {sorted(old_levels)} and seeds {sorted(old_seeds)}; "
            f"this run has fewer {' and '.join(fewer)} and would replace it. Give it its own --results folder, or remove {rdir} to replace that result."
        )


def read_predictions(path: Path, kind: TaskKind | str, labels: pd.DataFrame | None = None) -> tuple[pd.DataFrame, Any, Any]:
    """Read a predictions CSV; returns (test rows, ground truth, scores) in the form :mod:`metrics` takes.

    ``labels``: the task's manifest (or its test rows), where the ground truth comes from; the predictions
    files of ``lesionbench run`` hold no labels (:func:`~lesionbench.benchmark.scoring.run_one.predictions_frame`).
    Without it, label columns of the file itself are used (files written before they were left out)."""
    kind = TaskKind(kind)
    df = pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str})
    test = df[df["split"] == "test"].reset_index(drop=True)
    if labels is not None:
        test = attach_labels(test, labels, kind, source=str(path))
    elif not set(label_columns(kind)) <= set(test.columns):
        raise ConfigurationError(
            f"{path} holds no test labels (the public results never do); give the task's manifest "
            "(python: labels=task.manifest()) to score it."
        )
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
        tasks = sorted(p.name for p in Path(out_dir).iterdir() if p.is_dir()) if not versions and Path(out_dir).is_dir() else []
        raise ConfigurationError(
            f"No version of task {task!r} under {out_dir} has {probe!r}-probe results of both {names} "
            f"(encoders by version: {present or 'no results at all'}).{did_you_mean(task, tasks)} Run `lesionbench run --task {task} --encoder NAME` "
            "for each encoder into the same --results folder first."
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
    labels: pd.DataFrame | Callable[[], pd.DataFrame] | None = None,
) -> list[Any]:
    """Paired comparison (A - B) of two encoders' saved predictions of one (fraction, seed), per metric.

    ``labels``: the task's manifest, the ground truth (the saved predictions hold none; see :func:`read_predictions`),
    or a function that loads it (called once both results have been found and read).

    ``alternative``: ``"two-sided"`` (default), ``"greater"`` (A is better) or ``"less"``; the bootstrap
    and the permutations resample the results' ``bootstrap_unit`` (patients by default).

    Both results must be of the same task version and train/val/test partition; the test lesions are
    aligned by ``lesion_id``. ``version`` (the task version) may be left out when only one version of the
    task has results of both encoders.
    """
    from lesionbench.benchmark.scoring.metrics import paired_comparison

    version = version or _common_version(Path(out_dir), task, (encoder_a, encoder_b), probe)
    res, runs = [], []
    for enc in (encoder_a, encoder_b):
        rdir = result_dir(Path(out_dir), task, version, enc, probe)
        if not (rdir / RESULT_FILE).is_file():
            vdir = rdir.parent.parent
            have = sorted(p.name for p in vdir.iterdir() if p.is_dir()) if vdir.is_dir() else []
            raise ConfigurationError(
                f"No results for task {task!r} version {version!r}, encoder {enc!r}, probe {probe!r} under {out_dir} "
                f"(looked for {rdir / RESULT_FILE}). Encoders with results for this task version: {', '.join(have) or 'none'}.{did_you_mean(enc, have)} "
                f"Run `lesionbench run --task {task} --encoder {enc}` first."
            )
        r = load_result(rdir)
        run = next((x for x in r.runs if abs(x.fraction - fraction) < 1e-9 and x.seed == seed), None)
        if run is None:
            avail = sorted({(x.fraction, x.seed) for x in r.runs})
            raise ConfigurationError(f"{rdir}: no run with fraction {fraction:g} and seed {seed}; available (fraction, seed): {avail}.")
        res.append(r)
        runs.append(rdir / run.predictions_path)
    truth = labels() if callable(labels) else labels
    preds = [read_predictions(path, r.task.kind, truth) for path, r in zip(runs, res)]
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


__all__ = [
    "RESULT_FILE", "RUNS_DIR", "VAL_POLICIES", "check_options", "compare_saved", "evaluate", "evaluate_features", "load_result",
    "n_classes_of", "read_predictions", "result_dir", "selection_metric", "task_metrics", "task_versions", "write_result",
]  # fmt: skip
