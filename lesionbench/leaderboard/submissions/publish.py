"""A team's public entry: always its ledger's best, with the public part's predictions only.

``submit`` records every scored submission in the organiser store first (the ledger quotas count), then
publishes the team's best public score. Two rules keep the public entry equal to the ledger's best:

- before the record is written (before the quota is charged), the public outputs are checked: the
  results folder must be writable and the MLflow store reachable and writable (:func:`check_outputs`);
  a submission that could not be published is refused with nothing recorded;
- every accepted submission republishes the ledger's best when the public entry is not it
  (:func:`publish_best`): a best submission whose publishing was cut short by a crash or an outage is
  published at the team's next submission.

The public predictions hold the public part's lesions only, and no labels: a team that copied another
team's published predictions gains nothing on the private part, which ranks the challenge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.types import EncoderMeta, MetricValue, SubsetResult, TaskMeta, TaskResult

logger = logging.getLogger(__name__)

#: The MLflow experiment of the public store (the scorer's; see ``lesionbench.benchmark.tracking.mlflow_sink``).
EXPERIMENT = "lesionbench"


@dataclass(frozen=True)
class Published:
    """The public entry of a team: its result, and where it was written (None: not written)."""

    result: TaskResult
    result_path: Path | None
    run_id: str | None


def public_team_dir(results_dir: Path, meta: TaskMeta, slug: str) -> Path:
    """``<results>/<task>/<version>/submission-<slug>``: the team's public folder."""
    from lesionbench.benchmark.scoring.scorer import result_dir

    return result_dir(results_dir, meta.name, meta.version, f"submission-{slug}", "_").parent


def predictions_digest(preds: pd.DataFrame) -> str:
    """The sha256 of a submission's predictions in canonical form (rows by lesion id, columns by name, values
    to 9 significant digits): the same predictions give the same digest however the file was written."""
    cols = ["lesion_id", *sorted(c for c in preds.columns if c != "lesion_id")]
    table = preds[cols].sort_values("lesion_id").reset_index(drop=True)
    text = table.to_csv(index=False, float_format="%.9g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def check_outputs(folder: Path | None, tracking_uri: str | None) -> None:
    """Refuse a submission whose public entry could not be written: ``folder`` (the team's public result
    folder) not writable, or the MLflow store at ``tracking_uri`` not reachable or (sqlite) not writable."""
    if folder is not None:
        existing = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), Path("."))
        try:
            if not existing.is_dir():
                raise NotADirectoryError(20, "not a folder", str(existing))
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):  # nothing is left behind
                pass
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot write the public results at {folder} ({exc.strerror or exc}); nothing was recorded and no submission "
                "was counted. Fix the --results folder and submit again."
            ) from None
    if tracking_uri is None:
        return
    from lesionbench.benchmark.tracking.mlflow_sink import redact_uri

    m = re.match(r"sqlite:///(.+)$", tracking_uri)
    db = Path(m.group(1)).expanduser() if m and not m.group(1).startswith("file:") else None
    if db is not None and ((db.exists() and not os.access(db, os.W_OK)) or not os.access(db.parent if db.parent.exists() else db.parent.parent, os.W_OK)):
        raise ConfigurationError(f"The MLflow store {db} is not writable; nothing was recorded and no submission was counted. Fix it, or submit with --no-mlflow.")
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure of the store: the submission must not be charged for it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigurationError(
            f"The MLflow store at {redact_uri(tracking_uri)} cannot be reached ({type(exc).__name__}: {redact_uri(first)}); nothing was "
            "recorded and no submission was counted. Try again when it is up, or submit with --no-mlflow."
        ) from None


def _metrics(d: dict[str, Any]) -> dict[str, MetricValue]:
    def num(x: Any) -> float:
        return float("nan") if x is None else float(x)

    return {m: MetricValue(num(v.get("value")), num(v.get("ci_low")), num(v.get("ci_high"))) for m, v in d.items()}


def public_result(record: Any, meta: TaskMeta, manifest: pd.DataFrame) -> TaskResult:
    """The result anyone may read of an organiser ``record`` (:class:`~lesionbench.leaderboard.submissions.organiser.SubmissionRecord`):
    public metrics only; nothing about the private part or the labels."""
    raw = record.raw
    kind, name = raw["kind"], raw["team"]
    n_train = int((manifest["split"] == "train").sum()) if kind == "features" else 0
    run = SubsetResult(fraction=1.0, seed=0, n_train=n_train, metrics=_metrics(raw["public"]), params={"part": "public"}, predictions_path="predictions.csv")
    return TaskResult(
        task=meta,
        encoder=EncoderMeta(name=f"submission:{name}", version="submitted", feature_dim=int(raw.get("feature_dim", 0)), description=f"{kind} submission {name!r}"),
        probe=raw["probe"],
        runs=(run,),
        lesionbench_version=str(raw.get("lesionbench_version", "")),
        created=raw["submitted"],
        extra={"submission": {
            "name": name, "kind": kind, "submission_id": record.id, "file_sha256": raw["file_sha256"], "n_public": int(raw["n_public"]),
            "public": {m: {k: (x if x is None or math.isfinite(x) else None) for k, x in v.items()} for m, v in raw["public"].items()},
        }},
    )  # fmt: skip


def public_predictions(record: Any, meta: TaskMeta) -> pd.DataFrame:
    """The public part's rows of a record's labelled predictions, with the score columns only."""
    table = pd.read_csv(record.folder / "predictions.csv", dtype={"lesion_id": str, "patient_id": str})
    public = table[table["part"] == "public"]
    hidden = {"patient_id", "split", "part", "label_2y", *meta.label_columns}
    return public[[c for c in public.columns if c not in hidden]].reset_index(drop=True)


def publish_best(best: Any, meta: TaskMeta, manifest: pd.DataFrame, *, results_dir: str | Path | None, tracking_uri: str | None) -> Published:
    """Make ``best`` (the ledger's best record of a team and kind) the team's public entry where it is not yet."""
    from lesionbench.leaderboard.submissions.submission_file import name_slug

    result = public_result(best, meta, manifest)
    preds = public_predictions(best, meta)
    result_path = run_id = None
    if results_dir is not None:
        folder = public_team_dir(Path(results_dir), meta, name_slug(best.team)) / best.raw["probe"]
        if _local_entry(folder) != best.id:
            atomic_write(folder / "predictions.csv", lambda p: preds.to_csv(p, index=False))
            atomic_write(folder / "result.json", lambda p: p.write_text(json.dumps(result.to_dict(), indent=2) + "\n"))
        result_path = folder / "result.json"
    if tracking_uri is not None:
        run_id = _mlflow_entry(tracking_uri, best) or _log_public(result, preds, tracking_uri)
    return Published(result, result_path, run_id)


def _local_entry(folder: Path) -> str | None:
    """The submission id of the public entry in ``folder`` (None: none, or unreadable)."""
    try:
        return str(json.loads((folder / "result.json").read_text())["extra"]["submission"]["submission_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mlflow_entry(tracking_uri: str, best: Any) -> str | None:
    """The id of a finished public run of ``best`` in the public experiment (None: none, or unreadable)."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            return None
        team = best.team.replace("'", "")
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`lesionbench.submission_id` = '{best.id}'", max_results=50)
        hits = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("lesionbench.submission", "").replace("'", "") == team and r.data.tags.get("lesionbench.task") == best.task]
        return hits[0].info.run_id if hits else None
    except Exception as exc:  # a sink: a failed look logs the entry again, which the leaderboard merges
        logger.debug("MLflow look-up of %s failed: %s", best.id, exc)
        return None


def _log_public(result: TaskResult, predictions: pd.DataFrame, tracking_uri: str) -> str | None:
    """The team's public entry as an MLflow parent run: public metrics and the public part's predictions only."""
    from lesionbench.leaderboard.submissions.organiser import log_run, metrics_flat

    sub = result.extra["submission"]
    return log_run(
        tracking_uri, EXPERIMENT, run_name=f"submission {sub['name']}",
        tags={"lesionbench.level": "parent", "lesionbench.submission": sub["name"], "lesionbench.submission_id": sub["submission_id"],
              "lesionbench.task": result.task.name, "lesionbench.encoder": result.encoder.name},
        params={
            "task": result.task.name, "task_version": result.task.version, "encoder": result.encoder.name, "probe": result.probe,
            "submission_kind": sub["kind"], "submission_id": sub["submission_id"], "file_sha256": sub["file_sha256"],
            "n_public": sub["n_public"], "lesionbench_version": result.lesionbench_version,
        },
        metrics=metrics_flat({"public": result.runs[0].metrics}),
        files={"result.json": lambda p: p.write_text(json.dumps(result.to_dict(), indent=2) + "\n"), "predictions.csv": lambda p: predictions.to_csv(p, index=False)},
    )  # fmt: skip


__all__ = ["EXPERIMENT", "Published", "check_outputs", "predictions_digest", "public_predictions", "public_result", "public_team_dir", "publish_best"]
