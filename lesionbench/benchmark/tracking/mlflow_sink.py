"""MLflow sink: log a finished :class:`TaskResult` (and its result folder) as parent + nested child runs.

Logging is separate from scoring: :func:`lesionbench.benchmark.scoring.scorer.evaluate` writes ``result.json``
and the predictions; :func:`log_result` copies them into MLflow. A failed MLflow call warns and
returns ``None``; the local result stays the record.

Layout in the experiment (default ``lesionbench``):

* parent run per (task, encoder, protocol, probe), tag ``lesionbench.level=parent``: params (task, encoder,
  probe, protocol, split hash, lesionbench version, validation policy; k-shot: the shot counts), each metric's mean/sd per fraction (sd
  left out where undefined: every seed drew the same subset, or one seed is defined), the artifacts
  ``result.json`` and ``low_data_curve.png`` (metric vs fraction, every seed and the mean +- sd);
* child run per (fraction, seed) (k-shot: (k, seed), params ``shots`` and the exact ``fraction``), tag ``lesionbench.level=child`` and ``mlflow.parentRunId``:
  params (task name/version, encoder name/version/weights digest, fraction, seed, n_train, chosen
  C, split and subset hashes, lesionbench version, ...), metrics ``<m>``, ``<m>_ci_low``,
  ``<m>_ci_high``, artifacts: the predictions CSV (scores, no labels), the subset CSV and, only when
  :func:`log_result` is given the task's ``labels``, ``roc.png``, ``pr.png`` and (survival) ``km.png``.

The experiment is public (``submit`` and the leaderboard read it): nothing logged holds a test label. A
ROC curve drawn through the test lesions' own scores gives each lesion's label away (every step up is a
positive, every step right a negative), so the per-run figures are drawn only for a store the caller keeps
private and hands the labels to; ``lesionbench run`` never does.

Tracking store: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
working directory (artifacts next to it in ``mlartifacts/``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from lesionbench.benchmark.scoring.protocols import protocol_dir, protocol_of
from lesionbench.benchmark.tracking.plots import RunPlots, plot_low_data_curve, plot_run  # noqa: F401 - public here since 1.0
from lesionbench.benchmark.types import SubsetResult, TaskResult

# MLflow contacts a telemetry host on first use unless told not to.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lesionbench"
LEVEL_TAG = "lesionbench.level"
#: sha256 of a parent run's result (:func:`result_digest`): an unchanged result is not logged twice.
DIGEST_TAG = "lesionbench.result_digest"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the sqlite file ``mlflow.db`` in the working directory.

    A relative sqlite path is made absolute: MLflow caches stores by URI string, so a relative one
    would keep pointing at the first working directory it was used from.
    """
    return absolute_sqlite_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def absolute_sqlite_uri(uri: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/path/relative.db``; other URIs unchanged."""
    m = re.match(r"sqlite:///(.+)$", uri)
    if not m or m.group(1).startswith("file:") or Path(m.group(1)).expanduser().is_absolute():
        return uri  # absolute, or SQLite's own URI form (sqlite:///file:PATH?mode=ro&uri=true)
    return f"sqlite:///{Path(m.group(1)).expanduser().resolve()}"


# the userinfo runs to the authority's last "@" (a password may hold "@"); a secret value to the next "&", ";",
# "#", quote or space ("/" included: a base64 token holds them, and urllib3 glues the API path onto it)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#'\"]*@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&;][^=&;#\s]*(?:token|key|secret|pass|pwd|auth|sig|credential|session)[^=&;#\s]*=)[^&;#\s'\"]*", re.I)


def redact_uri(text: str) -> str:
    """``text`` (a URI, or a message quoting one) with credentials replaced by ``***``: the user and
    password of ``scheme://user:pass@host`` and secret-looking query values (``?token=``, ``&password=``)."""
    return _SECRET_QUERY.sub(r"\g<key>***", _USERINFO.sub(r"\g<scheme>***@", str(text)))


def artifact_location(uri: str, experiment: str) -> str | None:
    """For a sqlite store, keep artifacts beside the database file (MLflow would use ./mlruns of the cwd)."""
    m = re.match(r"sqlite:///(.+)$", uri)
    if not m:
        return None
    db = Path(m.group(1)).expanduser().resolve()
    return (db.parent / "mlartifacts" / re.sub(r"[^A-Za-z0-9._-]", "_", experiment)).as_uri()


def log_result(
    result: TaskResult,
    result_dir: Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    plots: bool = True,
    labels: Any = None,
) -> str | None:
    """Log ``result`` (whose files live in ``result_dir``) to MLflow; returns the parent run id.

    ``labels``: the task's manifest; only with it are the per-run ROC/PR/KM figures drawn (they show the
    test labels; see the module docstring). ``plots=False`` leaves out every figure.

    On any MLflow failure this warns and returns ``None``: the local ``result.json`` is kept.
    """
    uri = resolve_tracking_uri(tracking_uri)
    try:
        with _held_mlflow_logs():
            return _log(result, Path(result_dir), uri, experiment, plots, labels)
    except Exception as exc:  # noqa: BLE001 - a sink must never lose the result it was given
        warnings.warn(
            f"MLflow logging to {redact_uri(uri)!r} failed ({redact_uri(_root_cause(exc))}); the local result in {result_dir} is kept. "
            "Check --tracking-uri / MLFLOW_TRACKING_URI (is the store writable?), or use --no-mlflow.",
            stacklevel=2,
        )
        return None


#: MLflow loggers that print a whole traceback before MLflow raises (a read-only sqlite store: ~90 lines of
#: SQLAlchemy traceback ahead of the one warning that says what happened).
_NOISY_LOGGERS = ("mlflow.store.db.utils", "mlflow.utils.rest_utils", "mlflow.utils.request_utils")


class _Hold(logging.Filter):
    """Holds back every record of a logger while installed (see :func:`_held_mlflow_logs`)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def _held_mlflow_logs():
    """During one logging call, hold back what MLflow's noisy loggers emit: replayed when the call succeeds,
    dropped (but for a DEBUG line) when it fails, since the failure is then reported as one warning. Only
    those loggers, only for this call: no handler, level or global logging setting is changed."""
    holds = {name: _Hold() for name in _NOISY_LOGGERS}
    for name, hold in holds.items():
        logging.getLogger(name).addFilter(hold)
    ok = False
    try:
        yield
        ok = True
    finally:
        for name, hold in holds.items():
            logging.getLogger(name).removeFilter(hold)
        for name, hold in holds.items():
            for record in hold.records:
                if ok:
                    logging.getLogger(name).handle(record)
                else:
                    logger.debug("MLflow (%s) before the failure: %s", name, record.getMessage().splitlines()[0] if record.getMessage() else "")


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause of ``exc`` (e.g. ``OperationalError: attempt to write a
    readonly database`` under MLflow's and SQLAlchemy's wrappers, whose texts run to SQL and parameters)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _log(result: TaskResult, rdir: Path, uri: str, experiment: str, plots: bool, labels: Any = None) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    task, enc = result.task, result.encoder
    common_params = {
        "task.name": task.name,
        "task.version": task.version,
        "task.kind": str(task.kind),
        "encoder.name": enc.name,
        "encoder.version": enc.version,
        "encoder.weights_sha256": enc.weights_sha256 or "none",
        "encoder.fingerprint": enc.fingerprint(),
        "encoder.feature_dim": str(enc.feature_dim),
        # the model card (parameters, recipe, pre-training data, licences, non-commercial flag) of zoo encoders
        **{f"encoder.card.{k}": v for k, v in enc.card},
        "probe": result.probe,
        "protocol": protocol_of(result),
        "split_hash": result.split_hash,
        "lesionbench_version": result.lesionbench_version,
    }
    common_tags = {
        "lesionbench.task": task.name,
        "lesionbench.encoder": enc.name,
        "lesionbench.probe": result.probe,
        "lesionbench.protocol": protocol_of(result),
        "lesionbench.leaked_patients": str(len(result.leaked_patients)),
    }
    if result.leaked_patients:
        # MLflow tag values are limited in size; the full list is in result.json
        common_tags["lesionbench.leaked_patient_ids"] = ",".join(result.leaked_patients)[:4900]
    common_tags.update(_environment_tags(result.extra.get("environment") or {}))
    digest = result_digest(result)
    earlier = client.search_runs([exp_id], filter_string=f"tags.`{DIGEST_TAG}` = '{digest}' and tags.`{LEVEL_TAG}` = 'parent' and attributes.status = 'FINISHED'",
                                 max_results=1)  # fmt: skip
    if earlier:  # a resumed sweep that changed nothing: its runs are in the store already
        logger.info("%s/%s/%s is unchanged since MLflow run %s: not logged again", task.name, enc.name, result.probe, earlier[0].info.run_id)
        return earlier[0].info.run_id
    now = int(time.time() * 1000)
    folder = protocol_dir(protocol_of(result), result.probe)
    main = task.metrics[0] if task.metrics else ""
    note = f"{enc.name} ({folder}) on {task.name} version {task.version}: {len(result.runs)} runs, one child each; main metric {main or '-'}."
    start_ms, end_ms = _compute_span(result)
    parent = client.create_run(exp_id, run_name=f"{enc.name} · {folder} · {task.name}", start_time=start_ms,
                               tags={**common_tags, LEVEL_TAG: "parent", DIGEST_TAG: digest, "mlflow.note.content": note})  # fmt: skip
    pid = parent.info.run_id
    try:
        summary = result.summary()
        pmetrics = []
        for frac, ms in summary.items():
            for m, (mean, sd) in ms.items():
                pmetrics.append(Metric(f"{m}_mean_frac{frac:g}", _f(mean), now, 0))
                if math.isfinite(sd):  # undefined when every seed drew the same subset (100%) or one seed is defined
                    pmetrics.append(Metric(f"{m}_sd_frac{frac:g}", _f(sd), now, 0))
        pparams = {**common_params, "fractions": ",".join(f"{f:g}" for f in result.extra.get("fractions", [])), "seeds": ",".join(str(s) for s in result.extra.get("seeds", [])), "n_boot": str(result.extra.get("n_boot", ""))}
        if "validation" in result.extra:  # what tuned the runs: a validation subset of each run's fraction, or the whole split
            pparams["validation"] = str(result.extra["validation"])
        if result.extra.get("shots"):
            pparams["shots"] = ",".join(str(k) for k in result.extra["shots"])
            pparams["shots_per"] = str(result.extra.get("shots_per", ""))
        client.log_batch(pid, metrics=pmetrics, params=[Param(k, _p(v)) for k, v in pparams.items()], tags=[])
        with tempfile.TemporaryDirectory() as tmp:
            if plots:
                client.log_artifact(pid, str(plot_low_data_curve(result, Path(tmp) / "low_data_curve.png")))
            figures = RunPlots(result, labels) if plots and labels is not None else None  # drawn once, redrawn per run
            for run in result.runs:
                _log_child(client, exp_id, pid, result, run, rdir, common_params, common_tags, Path(tmp), figures, Metric, Param, span=(start_ms, end_ms))
        # last: the leaderboard reads parents with this file, so a logging killed half-way never counts
        client.log_artifact(pid, str(rdir / "result.json"))
        client.set_terminated(pid, "FINISHED", end_time=end_ms)
    except Exception:
        client.set_terminated(pid, "FAILED")
        raise
    logger.info("logged %s/%s/%s to MLflow %s (parent run %s)", task.name, enc.name, result.probe, redact_uri(uri), pid)
    return pid


def result_digest(result: TaskResult) -> str:
    """sha256 of what a result says, leaving out when and where it was computed (``created``, ``started``,
    timings, environment): a resumed sweep that reused every run has the digest of the one it resumed."""
    import hashlib
    import json

    d = result.to_dict()
    d.pop("created", None)
    d["extra"] = {k: v for k, v in d["extra"].items() if k not in ("timing_s", "environment", "started")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _environment_tags(env: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of a result's environment: package versions, device, and the git commits (lesionbench's
    also as ``mlflow.source.git.commit``, which the MLflow UI shows)."""
    tags = {f"lesionbench.env.{k}": str(v) for k, v in env.get("packages", {}).items()}
    for key in ("python", "platform", "device"):
        if key in env:
            tags[f"lesionbench.env.{key}"] = str(env[key])
    for pkg, commit in env.get("git_commit", {}).items():
        tags[f"lesionbench.env.git.{pkg}"] = str(commit)
    if "lesionbench" in env.get("git_commit", {}):
        tags["mlflow.source.git.commit"] = str(env["git_commit"]["lesionbench"])
    return {k: v[:5000] for k, v in tags.items() if re.fullmatch(r"[\w.\- /]+", k)}


def _f(v: Any) -> float:
    v = float(v)
    return v if math.isfinite(v) else float("nan")


def _p(v: Any) -> str:
    return str(v)[:6000]


def _compute_span(result: TaskResult) -> tuple[int | None, int | None]:
    """When the sweep's compute started and ended (ms since the epoch; None: unknown, MLflow uses the logging
    time): the result's ``extra["started"]`` and ``created``, so a run logged later still shows when it ran."""
    from datetime import datetime, timezone

    def ms(text: Any) -> int | None:
        try:
            when = datetime.fromisoformat(str(text))
        except ValueError:
            return None
        return int((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp() * 1000)

    start, end = ms(result.extra.get("started")), ms(result.created)
    return (start, end) if start is not None and end is not None and start <= end else (None, end)


def _log_child(client, exp_id, pid, result: TaskResult, run: SubsetResult, rdir: Path, common_params, common_tags, tmp: Path, figures: RunPlots | None, Metric, Param,
               span: tuple[int | None, int | None] = (None, None)) -> str:
    name = f"shots{run.shots}-seed{run.seed}" if run.shots else f"frac{run.fraction:g}-seed{run.seed}"
    label = f"{result.encoder.name} · {protocol_dir(protocol_of(result), result.probe)} · {name}"  # what differs first
    child = client.create_run(exp_id, run_name=label, start_time=span[0], tags={**common_tags, LEVEL_TAG: "child", "mlflow.parentRunId": pid})
    cid = child.info.run_id
    now = int(time.time() * 1000)
    # a k-shot run's fraction (n_train / n_train_total) is written exactly: the leaderboard matches children by it
    frac = repr(float(run.fraction)) if run.shots else f"{run.fraction:g}"
    params = {**common_params, "fraction": frac, "seed": str(run.seed), "n_train": str(run.n_train)}
    for k, v in run.params.items():
        if k == "head_metrics" or k.endswith("_path"):
            continue
        params[k] = v
    metrics = []
    for m, v in run.metrics.items():
        metrics += [Metric(m, _f(v.value), now, 0), Metric(f"{m}_ci_low", _f(v.ci_low), now, 0), Metric(f"{m}_ci_high", _f(v.ci_high), now, 0)]
    if "logrank_p" in run.params:
        metrics.append(Metric("logrank_p", _f(run.params["logrank_p"]), now, 0))
    for m, v in (run.params.get("head_metrics") or {}).items():
        metrics += [Metric(f"head_{m}", _f(v["value"]), now, 0), Metric(f"head_{m}_ci_low", _f(v["ci_low"]), now, 0), Metric(f"head_{m}_ci_high", _f(v["ci_high"]), now, 0)]
    client.log_batch(cid, metrics=metrics, params=[Param(k, _p(v)) for k, v in params.items() if k != "logrank_p"], tags=[])
    client.log_artifact(cid, str(rdir / run.predictions_path), "predictions")
    client.log_artifact(cid, str(rdir / run.subset_path), "subsets")
    if run.params.get("head_predictions_path"):
        client.log_artifact(cid, str(rdir / run.params["head_predictions_path"]), "predictions")
    if figures is not None:
        cdir = tmp / name / "plots"
        cdir.mkdir(parents=True, exist_ok=True)
        figures.save(run, rdir, cdir)
        client.log_artifacts(cid, str(cdir), "plots")
    client.set_terminated(cid, "FINISHED", end_time=span[1])
    return cid
