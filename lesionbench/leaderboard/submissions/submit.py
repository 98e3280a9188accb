"""Kaggle-style submissions: validate an untrusted file, score it with the harness's labels, record it.

Validation is :mod:`lesionbench.leaderboard.submissions.submission_file`. A valid file is scored on a **public** and a
**private** part of the test set: a 50/50 division grouped by patient and stratified by label
(survival: by the 2-year label, censored-early as its own stratum), drawn by scikit-learn's
``StratifiedGroupKFold`` with a seed derived from the task name and version, so it is fixed per task
version.

Kaggle's integrity rules:

- private scores stay private: they, the whole-test-set scores and the labelled predictions go to the
  organiser store only (:mod:`lesionbench.leaderboard.submissions.organiser`); the public store (results folder,
  MLflow experiment ``lesionbench``) gets public scores and label-free predictions, and the leaderboard
  shows private scores only when the organiser builds it with ``--reveal``;
- the name is the team: names that map to the same folder (``My Team``, ``my-team``) are one team's,
  and a second spelling is refused, naming the team that owns the folder;
- quotas per team and UTC day and in total (:mod:`lesionbench.leaderboard.submissions.challenge`, Kaggle-like
  defaults: 5 a day), counted from the organiser store;
- the team's public entry is its best public score so far (as on Kaggle's public leaderboard; equal
  scores keep the earlier submission), always the ledger's best, with the public part's predictions only
  (:mod:`lesionbench.leaderboard.submissions.publish`); the final ranking is on the private part of the submissions
  the team selected (``lesionbench select``), by default its 2 best public scores;
- the organiser store is private and apart (:mod:`lesionbench.leaderboard.submissions.private_dir`), and a submission
  with the same file or predictions as another team's is flagged in its record (``same_file_as``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench._version import __version__
from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError, SubmissionError
from lesionbench.benchmark.tracking.mlflow_sink import absolute_sqlite_uri
from lesionbench.benchmark.types import EncoderMeta, MetricValue, SubsetResult, TaskKind, TaskMeta, TaskResult
from lesionbench.leaderboard import _stats
from lesionbench.leaderboard.submissions.challenge import ChallengeConfig, Limits, as_utc, resolve_challenge, utc_now
from lesionbench.leaderboard.submissions.organiser import EXPERIMENT as ORGANISER_EXPERIMENT
from lesionbench.leaderboard.submissions.organiser import RECORD, OrganiserStore, check_apart, collision_problem, log_run, metric_dict, metrics_flat, quota_problem, resolve_organiser_dir
from lesionbench.leaderboard.submissions.publish import check_outputs, predictions_digest, public_team_dir, publish_best
from lesionbench.leaderboard.submissions.submission_file import (  # noqa: F401  (re-exported: the submission API in one place)
    MAX_FEATURES_BYTES,
    MAX_NAME_LENGTH,
    MAX_SUBMISSION_BYTES,
    ROW_SUM_TOLERANCE,
    _validate_features,
    _validate_predictions,
    name_problems,
    name_slug,
    validate_features,
    validate_predictions,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------- public / private
def _division_seed(meta: TaskMeta) -> int:
    return int.from_bytes(hashlib.sha256(f"lesionbench-public-private:{meta.name}:{meta.version}".encode()).digest()[:4], "big")


def outcome_strata(meta: TaskMeta, rows: pd.DataFrame) -> np.ndarray:
    """The stratum of each row for stratified draws of test cases: its class, or for survival its 2-year
    outcome (event by 2 years 1, followed past them 0, censored earlier 2)."""
    if meta.kind is TaskKind.SURVIVAL:
        lab = two_year_label(rows["time"].to_numpy(dtype=float), rows["event"].to_numpy(dtype=float))
        return np.where(np.isnan(lab), 2, lab).astype(int)
    return rows["label"].to_numpy(dtype=float).astype(int)


def public_private_split(meta: TaskMeta, manifest: pd.DataFrame) -> pd.Series:
    """True for test lesions in the public part, False for the private part (indexed by lesion_id).

    Patient-grouped and stratified by label, seeded by the task name and version (module docstring).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if len(test) < 4 or test["patient_id"].nunique() < 2:
        raise ConfigurationError(f"Task {meta.name!r} has {len(test)} test lesions from {test['patient_id'].nunique()} patients; a public/private division needs at least 4 lesions from 2 patients.")
    strata = outcome_strata(meta, test)
    if np.bincount(np.unique(strata, return_inverse=True)[1]).max() < 2:
        # every class occurs once (a tiny test split of a multiclass task): nothing to stratify, and
        # scikit-learn refuses; the division is then grouped by patient alone
        strata = np.zeros(len(test), dtype=int)
    cv = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=_division_seed(meta) % (2**32 - 1))
    public_idx, _ = next(cv.split(np.zeros(len(test)), strata, groups=test["patient_id"].astype(str).to_numpy()))
    public = np.zeros(len(test), dtype=bool)
    public[public_idx] = True
    return pd.Series(public, index=test["lesion_id"].astype(str).to_numpy(), name="public")


# ---------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class SubmissionScore:
    """Metrics of one submission on the public part, the private part and the whole test set."""

    public: dict[str, MetricValue]
    private: dict[str, MetricValue]
    overall: dict[str, MetricValue]
    n_public: int
    n_private: int
    predictions: pd.DataFrame  # lesion_id, patient_id, split, labels, part, scores


def _metric_values(meta: TaskMeta, y: np.ndarray, s: np.ndarray, *, n_boot: int, seed: int, groups: np.ndarray | None) -> dict[str, MetricValue]:
    return _stats.metric_values(meta.kind, y, s, _stats.task_metrics(meta), n_boot=n_boot, seed=seed, groups=groups)


def score_predictions(
    meta: TaskMeta, manifest: pd.DataFrame, predictions: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, bootstrap_unit: str = "patient"
) -> SubmissionScore:
    """Score validated predictions (``validate_predictions`` output) with the harness's labels.

    The CIs resample ``bootstrap_unit``: whole test patients (default, as the scorer) or single lesions."""
    test = manifest[manifest["split"] == "test"].copy()
    test["lesion_id"] = test["lesion_id"].astype(str)
    merged = test.merge(predictions, on="lesion_id", how="left", validate="one_to_one")
    part = public_private_split(meta, manifest)
    merged["part"] = np.where(part.loc[merged["lesion_id"]].to_numpy(), "public", "private")
    label_cols = list(meta.label_columns)
    score_cols = [c for c in predictions.columns if c != "lesion_id"]
    table = merged[["lesion_id", "patient_id", "split", *label_cols, "part", *score_cols]].reset_index(drop=True)
    _, y, s = _stats.prediction_arrays(table, meta)
    pub = (table["part"] == "public").to_numpy()
    groups = _stats.bootstrap_groups(table, bootstrap_unit)
    part_groups = (None, None) if groups is None else (groups[pub], groups[~pub])
    return SubmissionScore(
        public=_metric_values(meta, y[pub], s[pub], n_boot=n_boot, seed=seed, groups=part_groups[0]),
        private=_metric_values(meta, y[~pub], s[~pub], n_boot=n_boot, seed=seed, groups=part_groups[1]),
        overall=_metric_values(meta, y, s, n_boot=n_boot, seed=seed, groups=groups),
        n_public=int(pub.sum()),
        n_private=int((~pub).sum()),
        predictions=table,
    )


# ------------------------------------------------------------------------------------ submit
@dataclass(frozen=True)
class SubmissionOutcome:
    """What ``submit`` produced.

    ``result`` is the public result (public metrics only); ``score`` holds the private scores too and
    stays with the caller. ``on_leaderboard`` is True when this submission became the team's public
    entry (its best public score so far), and only then are ``result_path`` and ``run_id`` set.
    """

    result: TaskResult
    score: SubmissionScore
    result_path: Path | None
    run_id: str | None
    submission_id: str = ""
    on_leaderboard: bool = False
    organiser_path: Path | None = None
    organiser_run_id: str | None = None


def submit(
    task: Any,
    path: str | Path,
    *,
    name: str,
    kind: str = "predictions",
    results_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    max_bytes: int | None = None,
    organiser_dir: str | Path | None = None,
    organiser_tracking_uri: str | None = None,
    challenge: ChallengeConfig | str | Path | None = None,
    now: datetime | None = None,
) -> SubmissionOutcome:
    """Validate, score and record one submission of team ``name`` for ``task`` (an object with ``meta`` and ``manifest()``).

    ``kind``: ``"predictions"`` (a predictions CSV) or ``"features"`` (a features CSV scored by the
    standard linear probe at 100% labels). Nothing is written unless the file is valid, the name is
    free (or already this team's) and the team's quota (``challenge``, see
    :mod:`lesionbench.leaderboard.submissions.challenge`) has room; ``now`` is the submission time (default: the clock).

    Every scored submission goes to the organiser store (``organiser_dir``, see
    :mod:`lesionbench.leaderboard.submissions.organiser`; with ``organiser_tracking_uri`` also to its own MLflow
    experiment): private scores and the labelled predictions. The public store gets the team's
    public entry, its best public score so far, when this submission improves it: ``<results_dir>/<task>/<task
    version>/submission-<slug>/<probe>/result.json`` with label-free predictions, and/or a parent run in
    the MLflow experiment ``lesionbench`` tagged ``lesionbench.submission=<name>``.
    """
    if kind not in ("predictions", "features"):
        raise ConfigurationError(f"Submission kind must be 'predictions' or 'features', got {kind!r}.")
    if results_dir is None and tracking_uri is None:
        raise ConfigurationError("A submission must be recorded somewhere: give --results DIR and/or --tracking-uri URI.")
    path = Path(path)
    meta: TaskMeta = task.meta
    organiser_root = resolve_organiser_dir(organiser_dir, results_dir=results_dir, tracking_uri=tracking_uri)
    check_apart(organiser_root, results_dir=results_dir, tracking_uri=tracking_uri, organiser_tracking_uri=organiser_tracking_uri)
    store = OrganiserStore(organiser_root)
    limits = resolve_challenge(challenge, store.root).for_task(meta.name)
    manifest = task.manifest()
    public_root = None if results_dir is None else public_team_dir(Path(results_dir), meta, name_slug(name)).parent
    problems = name_problems(name)
    if not problems:  # a cheap, read-only look before the file is read; repeated under the lock below
        problems += _gate(store, public_root, meta, name, limits, now)
    if kind == "predictions":
        preds, digest = _validate_predictions(path, meta, manifest, max_bytes=max_bytes or MAX_SUBMISSION_BYTES, problems=problems)
        probe = "submitted"
        feature_dim = 0
    else:
        features, digest = _validate_features(path, manifest, max_bytes=max_bytes or MAX_FEATURES_BYTES, problems=problems)
        preds = _probe_features(task, manifest, features)
        probe = "linear"
        feature_dim = int(features.shape[1] - 1)
    score = score_predictions(meta, manifest, preds, n_boot=n_boot, seed=seed)
    main = _stats.main_metric(meta)
    slug = name_slug(name)
    uri = None if tracking_uri is None else absolute_sqlite_uri(tracking_uri)
    with store.lock(meta.name, meta.version):
        # Another submission of this team, or a team with a colliding name, may have landed meanwhile.
        # One clock reading both checks the quota and dates the record, so both fall on the same UTC day.
        stamp = as_utc(now or utc_now())
        late = _gate(store, public_root, meta, name, limits, stamp)
        if late:
            raise SubmissionError(str(path), late)
        # the public outputs must take the entry before the quota is charged (publish.py)
        check_outputs(None if results_dir is None else public_team_dir(Path(results_dir), meta, slug) / probe, uri)
        when = stamp.isoformat(timespec="seconds")
        doc = _organiser_record(meta, score, name=name, kind=kind, probe=probe, digest=digest, when=when, main=main)
        doc["feature_dim"] = feature_dim
        doc["predictions_sha256"] = predictions_digest(preds)
        same = store.same_as(meta.name, meta.version, slug, [digest, doc["predictions_sha256"]])
        if same:  # for the organiser only: the submitter is not told whose file it matches
            doc["same_file_as"] = same
            logger.info("Submission of %r flagged for the organiser: the same predictions as an earlier submission of another team.", name)
        record = store.write_submission(meta.name, meta.version, slug, doc, score.predictions)
        same_kind = [r for r in store.records(meta.name, meta.version, slug) if r.kind == kind]
        best = max(same_kind, key=lambda r: r.score("public"))  # the first of equal scores: the earlier one stays
        on_board = best.id == record.id
        # the public entry is always the ledger's best: an earlier best a crash or an outage kept off is published now
        published = publish_best(best, meta, manifest, results_dir=results_dir, tracking_uri=uri)
        result, result_path, run_id = published.result, published.result_path, published.run_id
        if not on_board:
            result = _public_result(meta, manifest, score, name=name, kind=kind, probe=probe, digest=digest, when=when, record_id=record.id, feature_dim=feature_dim)
            result_path = run_id = None
    organiser_run_id = None
    if organiser_tracking_uri is not None:
        organiser_run_id = log_run(
            absolute_sqlite_uri(organiser_tracking_uri), ORGANISER_EXPERIMENT, run_name=f"{name} {record.id}",
            tags={"lesionbench.level": "organiser", "lesionbench.submission": name, "lesionbench.submission_id": record.id, "lesionbench.task": meta.name,
                  **({"lesionbench.same_file_as": "; ".join(same)[:4900]} if same else {})},
            params={"task": meta.name, "task_version": meta.version, "submission_kind": kind, "file_sha256": digest, "submitted": when},
            metrics=metrics_flat({"public": score.public, "private": score.private, "overall": score.overall}),
            files={RECORD: lambda p: shutil.copyfile(record.folder / RECORD, p), "predictions.csv": lambda p: score.predictions.to_csv(p, index=False)},
        )  # fmt: skip
    logger.info("Submission %s of %r scored on task %s: public %s = %.4f%s.", record.id, name, meta.name, main, score.public[main].value, "" if on_board else " (the team's better earlier score stays on the leaderboard)")
    return SubmissionOutcome(result, score, result_path, run_id, record.id, on_board, record.folder, organiser_run_id)


def _gate(store: OrganiserStore, public_root: Path | None, meta: TaskMeta, name: str, limits: Limits, now: datetime | None) -> list[str]:
    """Why the team may not submit now: a name taken by another team, or a used-up quota."""
    slug = name_slug(name)
    public_folder = None if public_root is None else public_root / f"submission-{slug}"
    clash = collision_problem(store, public_folder, task=meta.name, version=meta.version, name=name, slug=slug)
    if clash:
        return [clash]
    quota = quota_problem(store.records(meta.name, meta.version, slug), limits, team=name, task=meta.name, now=now or utc_now())
    return [quota] if quota else []


def _organiser_record(meta: TaskMeta, score: SubmissionScore, *, name: str, kind: str, probe: str, digest: str, when: str, main: str) -> dict[str, Any]:
    public_ids = score.predictions.loc[score.predictions["part"] == "public", "lesion_id"]
    return {
        "team": name, "task": meta.name, "version": meta.version, "kind": kind, "probe": probe, "submitted": when,
        "file_sha256": digest, "main_metric": main, "n_public": score.n_public, "n_private": score.n_private,
        "public": metric_dict(score.public), "private": metric_dict(score.private), "overall": metric_dict(score.overall),
        "public_ids_sha256": hashlib.sha256("\n".join(public_ids).encode()).hexdigest(), "lesionbench_version": __version__,
    }  # fmt: skip


def _public_result(meta: TaskMeta, manifest: pd.DataFrame, score: SubmissionScore, *, name: str, kind: str, probe: str, digest: str, when: str, record_id: str, feature_dim: int) -> TaskResult:
    """The result anyone may read: public metrics only; nothing about the private part or the labels."""
    n_train = int((manifest["split"] == "train").sum()) if kind == "features" else 0
    run = SubsetResult(fraction=1.0, seed=0, n_train=n_train, metrics=score.public, params={"part": "public"}, predictions_path="predictions.csv")
    return TaskResult(
        task=meta,
        encoder=EncoderMeta(name=f"submission:{name}", version="submitted", feature_dim=feature_dim, description=f"{kind} submission {name!r}"),
        probe=probe,
        runs=(run,),
        lesionbench_version=__version__,
        created=when,
        extra={"submission": {"name": name, "kind": kind, "submission_id": record_id, "file_sha256": digest, "n_public": score.n_public, "public": metric_dict(score.public)}},
    )


def _probe_features(task: Any, manifest: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Test-lesion predictions of the standard probe fitted on submitted features (100% labels, seed 0).

    Uses the scorer's :func:`lesionbench.benchmark.scoring.scorer.evaluate_features` (C chosen on the
    validation split, exactly as for any encoder) in a scratch folder, so nothing of a failed
    submission is left behind.
    """
    import tempfile

    try:
        from lesionbench.benchmark.scoring.scorer import evaluate_features, result_dir
    except ImportError as exc:
        raise ConfigurationError(
            "Feature submissions are scored by the standard probe of lesionbench.benchmark.scoring.scorer, which this installation "
            f"does not have ({exc}). Submit predictions instead, or update lesionbench."
        ) from exc
    meta: TaskMeta = task.meta
    X = features.drop(columns=["lesion_id"]).to_numpy(dtype=np.float32)
    enc = EncoderMeta(name="submitted-features", version="submitted", feature_dim=X.shape[1])
    with tempfile.TemporaryDirectory(prefix="lesionbench-submit-") as tmp:
        result = evaluate_features(
            manifest.reset_index(drop=True), X, meta, encoder=enc, fractions=(1.0,), seeds=(0,), out_dir=Path(tmp), n_boot=0, progress=False, resume=False
        )
        run = result.runs[0]
        folder = result_dir(Path(tmp), meta.name, meta.version, enc.name, result.probe)
        table = pd.read_csv(folder / run.predictions_path, dtype={"lesion_id": str, "patient_id": str})
    test = table[table["split"] == "test"]
    cols = _stats.score_columns(meta, list(test.columns))
    return test[["lesion_id", *cols]].reset_index(drop=True)


#: The MLflow experiment the scorer logs runs to; submissions' public entries join them there.
EXPERIMENT = "lesionbench"
