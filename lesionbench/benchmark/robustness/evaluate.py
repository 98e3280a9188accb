"""The robustness protocol: how stable an encoder's features and predictions are under controlled perturbations.

For one (task, encoder): every test lesion is re-extracted under ``repeats`` seeded draws of each
perturbation (:mod:`lesionbench.benchmark.robustness.perturb`) and compared with its unperturbed extraction through
the same crop. Reported per perturbation:

* **feature stability**: the distribution over features of ICC(2,1) (absolute agreement; ICC(3,1), consistency, beside it) across the test lesions (the
  unperturbed extraction and each draw are the ``k`` measurements; :mod:`lesionbench.benchmark.robustness.stability`),
  and the mean cosine similarity of each perturbed embedding to the unperturbed one;
* **prediction stability**: the linear probe is fitted once, at 100% of the training labels with seed 0 and
  its validation subset, on unperturbed training features (extracted and cached as ``run`` does; a
  trainable encoder is trained on that subset first, and its trained network is the one perturbed), then
  scores the unperturbed and the perturbed test lesions: the share of test predictions that change class
  (binary: ``score > 0.5``, which carries the validation threshold; multiclass: argmax; survival: the risk
  group at the training median risk) and the drop of the main metric (unperturbed minus perturbed, mean
  over draws).

Every interval is a percentile bootstrap with the result's ``bootstrap_unit`` (patients by default), the
same resamples for every perturbation and encoder. The result is ``robustness.json`` beside the encoder's
probe folders, ``<results>/<task>/<task version>/<encoder>/robustness.json``, written atomically.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.scoring.probes.linear import C_GRID
from lesionbench.benchmark.scoring.probes.base import ProbeError
from lesionbench.benchmark.scoring.metrics import bootstrap_weights, compute_metrics, resampled_values
from lesionbench.benchmark.robustness.result import RobustnessResult, robustness_path, write_robustness
from lesionbench.benchmark.robustness.perturb import PERTURBATIONS, PerturbationSettings, check_perturbations, perturbed_features
from lesionbench.benchmark.scoring.endpoints import truth
from lesionbench.benchmark.scoring.run_one import fit_labels, fit_predict, select
from lesionbench.benchmark.robustness.stability import PriorProbe, ci_from, classes_of, cosine_to_reference, mean_ci, predict, stability_block
from lesionbench.benchmark.types import TaskKind

logger = logging.getLogger(__name__)

#: The bootstrap stream of the protocol: resamples depend only on the test patients, not on the encoder.
_BOOT_STREAM = 9


def evaluate_robustness(
    task: Any,
    encoder: Any,
    *,
    perturbations: Sequence[str] = PERTURBATIONS,
    settings: PerturbationSettings | None = None,
    out_dir: Path = Path("lesionbench-results"),
    cache_dir: Path | None = None,
    n_boot: int = 1000,
    bootstrap_unit: str = "patient",
    progress: bool = True,
    write: bool = True,
    retest: str | Path | pd.DataFrame | None = None,
) -> RobustnessResult:
    """Run the robustness protocol of ``encoder`` on ``task`` (see the module docstring); write and return it.

    ``perturbations`` may include ``"retest"``: the test lesions' second scans from ``retest`` (a manifest in
    the RIDER layout of :mod:`lesionbench.benchmark.robustness.retest`), or, for the synthetic tasks, from the cohort's
    test-retest twin (generated on first use). Its block compares the two scans (k = 2) with features
    extracted as ``run`` extracts them.
    """
    from tqdm.auto import tqdm

    from lesionbench.benchmark.encoders.features import extract_features, load_patches
    from lesionbench.benchmark.scoring.sweep import plan_sweep

    settings = settings or PerturbationSettings()
    settings.check()
    requested = [str(p).strip() for p in perturbations]
    want_retest = "retest" in requested
    kinds = tuple(p for p in requested if p != "retest")
    if kinds or not want_retest:
        kinds = check_perturbations(kinds or requested)
    pairs = _retest_manifest(task, retest) if want_retest else None
    meta, emeta = task.meta, encoder.meta
    plan = plan_sweep(task.manifest(), meta, fractions=[1.0], seeds=[0], probe="linear", n_boot=n_boot, c_grid=C_GRID, bootstrap_unit=bootstrap_unit)
    manifest, kind = plan.manifest, plan.kind
    (run,) = plan.runs
    train_mask = np.isin(plan.lesion_ids, run.subset.lesion_ids)
    val_mask = plan.val_mask(run)
    notes: list[str] = []
    if callable(getattr(encoder, "fit", None)):
        # a trainable encoder: the network trained on the 100% / seed 0 subset is the one whose robustness counts
        patches = np.asarray(load_patches(manifest, emeta.patch, progress=progress))
        labels = fit_labels(manifest, kind)
        model = copy.deepcopy(encoder)
        if hasattr(model, "n_classes") and model.n_classes is None:
            model.n_classes = plan.n_classes if kind == TaskKind.MULTICLASS else 2
        idx = np.flatnonzero(train_mask & np.isfinite(labels))
        vidx = np.flatnonzero(val_mask & np.isfinite(labels))
        model.fit(patches[idx], labels[idx].astype(int), val=(patches[vidx], labels[vidx].astype(int)) if len(vidx) else None)
        X = np.asarray(model.encode(patches), dtype=np.float32)
        notes.append("trainable encoder: trained once on the 100% / seed 0 training subset (early stopping on its validation subset); that network is perturbed")
    else:
        model = encoder
        X = extract_features(manifest, encoder, cache_dir=cache_dir, progress=progress)
    est = clone(plan.template)
    try:
        fit_predict(est, kind, manifest, X, train_mask, val_mask, plan.groups)
    except ProbeError as exc:
        # an encoder with no usable feature predicts the training prior: its predictions cannot change
        est = PriorProbe(kind, manifest[train_mask], plan.n_classes)
        notes.append(f"no probe could be fitted ({exc}); predictions are the training prior")
    threshold = getattr(est, "risk_threshold_", None)

    test = manifest[plan.test_mask].reset_index(drop=True)
    groups = plan.test_groups
    seed = [settings.seed, _BOOT_STREAM]
    W = bootstrap_weights(len(test), n_boot, seed, groups) if n_boot > 0 else np.zeros((0, len(test)))
    main = meta.main_metric
    total = len(test) * (1 + settings.repeats * len(kinds)) if kinds else 0
    with tqdm(total=total, desc=f"robustness {emeta.name}", unit="lesion", disable=not progress) as bar:
        base = perturbed_features(test, model, "none", 0, settings, progress=bar) if kinds else select(X, plan.test_mask)
        base_scores = predict(est, kind, base)
        base_cls = classes_of(kind, base_scores, threshold)
        base_metric = compute_metrics(kind, plan.y_test, base_scores, [main])[main]
        base_boot = resampled_values(kind, plan.y_test, base_scores, main, n_boot=n_boot, seed=seed, groups=groups) if n_boot > 0 else np.zeros(0)
        std_scores = select(predict(est, kind, X), plan.test_mask)
        reference = {
            "main_metric": main,
            "value": float(base_metric),
            # the same probe on the standard (whole-image) extraction, as `run` scores it: how much the crop itself moves things
            "value_standard_extraction": float(compute_metrics(kind, plan.y_test, std_scores, [main])[main]),
            "cosine_crop_vs_standard": float(np.mean(cosine_to_reference(X[plan.test_mask], base))),
        }
        if not kinds:
            reference["value"] = reference["value_standard_extraction"]
        out: dict[str, dict[str, Any]] = {}
        for k in kinds:
            draws = [perturbed_features(test, model, k, r, settings, progress=bar) for r in range(settings.repeats)]
            block = stability_block(base, draws, W, groups, n_boot=n_boot, seed=seed)
            scores = [predict(est, kind, x) for x in draws]
            changed = np.mean([classes_of(kind, s, threshold) != base_cls for s in scores], axis=0)
            values = [compute_metrics(kind, plan.y_test, s, [main])[main] for s in scores]
            drop_boot = base_boot - np.mean([resampled_values(kind, plan.y_test, s, main, n_boot=n_boot, seed=seed, groups=groups) for s in scores], axis=0) if n_boot > 0 else np.zeros(0)
            block["prediction_change"] = mean_ci(changed.astype(float), W)
            block["metric_perturbed"] = float(np.mean(values))
            block["metric_drop"] = ci_from(base_metric - float(np.mean(values)), drop_boot)
            out[k] = block
            logger.info("%s %s on %s: median ICC %.3f, cosine %.4f, %.1f%% predictions changed, %s drop %.4f",
                        emeta.name, k, meta.name, block["icc"]["median"], block["cosine"]["value"], 100 * block["prediction_change"]["value"], main, block["metric_drop"]["value"])  # fmt: skip
    if pairs is not None:
        def features_of(rows: pd.DataFrame) -> np.ndarray:
            if model is not encoder:  # the trained network
                return np.asarray(model.encode(np.asarray(load_patches(rows, emeta.patch, progress=False))), dtype=np.float32)
            return extract_features(rows, encoder, cache_dir=cache_dir, progress=progress)

        out["retest"] = _retest_block(pairs, features_of, est, plan, threshold, n_boot=n_boot, seed=seed)
        kinds = (*kinds, "retest")
    result = RobustnessResult(
        task={"name": meta.name, "version": meta.version, "kind": str(meta.kind), "main_metric": main},
        encoder={"name": emeta.name, "version": emeta.version, "fingerprint": emeta.fingerprint(), "feature_dim": int(emeta.feature_dim),
                 "weights_sha256": emeta.weights_sha256 or None, "trainable": bool(callable(getattr(encoder, "fit", None)))},  # fmt: skip
        settings={**settings.to_dict(), "perturbations": list(kinds), "probe": "linear", "fraction": 1.0, "subset_seed": 0,
                  "validation": run.validation, "subset_hash": run.subset.hash},  # fmt: skip
        perturbations=out, reference=reference, bootstrap_unit=bootstrap_unit, n_boot=int(n_boot), n_test=int(len(test)),
        n_test_patients=int(test["patient_id"].nunique()), notes=tuple(notes),
    )  # fmt: skip
    if write:
        write_robustness(result, robustness_path(out_dir, meta.name, meta.version, emeta.name))
    return result


def _retest_manifest(task: Any, retest: str | Path | pd.DataFrame | None) -> pd.DataFrame:
    """The checked test-retest manifest: the one given, else the task's own second scans (a task offers them
    with a ``retest_manifest()`` method, as the synthetic cohort's twin does), else a clear error."""
    from lesionbench.benchmark.robustness.retest import read_retest_manifest

    if retest is not None:
        return read_retest_manifest(retest)
    own = getattr(task, "retest_manifest", None)
    source = own() if callable(own) else None
    if source is not None:
        return read_retest_manifest(source)
    raise ConfigurationError(f"Task {task.meta.name!r} has no test-retest data of its own. Pass the second scans as a manifest in the RIDER "
                             "layout (--retest-manifest FILE; see lesionbench.benchmark.robustness.retest), or leave 'retest' out of --perturb.")  # fmt: skip


def _retest_block(pairs: pd.DataFrame, features_of: Any, est: Any, plan: Any, threshold: float | None, *, n_boot: int, seed: list[int]) -> dict[str, Any]:
    """Stability between the two scans of the task's test lesions (all pairs when none is a test lesion: features only)."""
    from lesionbench.benchmark.robustness.retest import retest_pairs

    first, second = retest_pairs(pairs)
    test_ids = plan.lesion_ids[plan.test_mask]
    scored = first["lesion_id"].isin(test_ids).to_numpy()
    if scored.any():
        first, second = first[scored].reset_index(drop=True), second[scored].reset_index(drop=True)
    a, b = features_of(first), features_of(second)
    groups = first["patient_id"].astype(str).to_numpy() if plan.bootstrap_unit == "patient" else None
    W = bootstrap_weights(len(first), n_boot, seed, groups) if n_boot > 0 else np.zeros((0, len(first)))
    block = stability_block(a, [b], W, groups, n_boot=n_boot, seed=seed)
    block["n_pairs"] = int(len(first))
    if not scored.any():
        block["prediction_change"] = block["metric_drop"] = None
        block["note"] = "no pair is a test lesion of the task: feature stability only"
        return block
    kind, main = plan.kind, plan.meta.main_metric
    rows = pd.Series(np.arange(len(plan.lesion_ids)), index=plan.lesion_ids).loc[first["lesion_id"]].to_numpy()
    y = truth(plan.manifest.iloc[rows], kind)
    sa, sb = predict(est, kind, a), predict(est, kind, b)
    block["prediction_change"] = mean_ci((classes_of(kind, sa, threshold) != classes_of(kind, sb, threshold)).astype(float), W)
    ma, mb = (compute_metrics(kind, y, s, [main])[main] for s in (sa, sb))
    boot = (resampled_values(kind, y, sa, main, n_boot=n_boot, seed=seed, groups=groups) - resampled_values(kind, y, sb, main, n_boot=n_boot, seed=seed, groups=groups)) if n_boot > 0 else np.zeros(0)
    block["metric_test_scan"], block["metric_perturbed"] = float(ma), float(mb)
    block["metric_drop"] = ci_from(ma - mb, boot)
    return block
