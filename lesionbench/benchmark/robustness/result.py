"""What the robustness protocol writes: :class:`RobustnessResult`, ``robustness.json`` beside an encoder's
probe folders (``<results>/<task>/<task version>/<encoder>/robustness.json``, written atomically), reading
it back, its summary table and its MLflow sink. Shared by the perturbation protocol (:mod:`.evaluate`) and
the test-retest protocol (:mod:`.retest`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.host import atomic_write

logger = logging.getLogger(__name__)

FILENAME = "robustness.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RobustnessResult:
    """What ``robustness.json`` holds: per perturbation, feature and prediction stability with CIs."""

    task: dict[str, Any]
    encoder: dict[str, Any]
    settings: dict[str, Any]
    perturbations: dict[str, dict[str, Any]]
    reference: dict[str, Any]
    bootstrap_unit: str = "patient"
    n_boot: int = 1000
    n_test: int = 0
    n_test_patients: int = 0
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "protocol": "robustness", "task": self.task, "encoder": self.encoder,
                "settings": self.settings, "bootstrap_unit": self.bootstrap_unit, "n_boot": self.n_boot, "n_test": self.n_test,
                "n_test_patients": self.n_test_patients, "reference": self.reference, "perturbations": self.perturbations,
                "notes": list(self.notes), "extra": self.extra}  # fmt: skip


def robustness_path(out_dir: Path, task: str, version: str, encoder: str) -> Path:
    from lesionbench.benchmark.scoring.scorer import result_dir

    return result_dir(Path(out_dir), task, version, encoder, "linear").parent / FILENAME


def write_robustness(result: RobustnessResult, path: Path) -> Path:
    text = json.dumps(result.to_dict(), indent=2, allow_nan=True) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))
    logger.info("robustness of %s on %s written to %s", result.encoder["name"], result.task["name"], path)
    return Path(path)


def load_robustness(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Cannot read the robustness result {path}: {exc}. Re-run `lesionbench robustness`.") from None
    if d.get("protocol") != "robustness":
        raise ConfigurationError(f"{path} is not a robustness result (no protocol 'robustness'). Re-run `lesionbench robustness`.")
    return d


def summary_table(results: Sequence[dict[str, Any] | RobustnessResult]) -> pd.DataFrame:
    """One row per (encoder, perturbation): the numbers the leaderboard's robustness table shows."""
    rows = []
    for r in results:
        d = r.to_dict() if isinstance(r, RobustnessResult) else r
        for k, b in d["perturbations"].items():
            rows.append({"task": d["task"]["name"], "encoder": d["encoder"]["name"], "perturbation": k,
                         "icc_median": b["icc"]["median"], "icc_q25": b["icc"]["q25"], "icc_q75": b["icc"]["q75"],
                         "icc_share_good": b["icc"]["share_good"], "icc_undefined": b["icc"]["n_undefined"],
                         "icc_consistency_median": (b.get("icc_consistency") or {}).get("median"),
                         "cosine": b["cosine"]["value"], "prediction_change": _value(b["prediction_change"]),
                         "metric_drop": _value(b["metric_drop"]), "metric_drop_ci": _bounds(b["metric_drop"])})  # fmt: skip
    return pd.DataFrame(rows)


def _value(block: dict[str, float] | None) -> float:
    return float("nan") if block is None else block["value"]


def _bounds(block: dict[str, float] | None) -> tuple[float, float]:
    return (float("nan"), float("nan")) if block is None else (block["ci_low"], block["ci_high"])


def log_robustness(result: RobustnessResult, path: Path, *, tracking_uri: str | None = None, experiment: str = "lesionbench") -> str | None:
    """Log ``result`` (saved at ``path``) to MLflow as one run tagged ``lesionbench.protocol = robustness``.

    A sink, like :func:`lesionbench.benchmark.tracking.mlflow_sink.log_result`: on any MLflow failure it warns and
    returns ``None``, and the local ``robustness.json`` is kept. The run carries no ``lesionbench.level``
    tag, so the leaderboard's ranking never mistakes it for a scored run.
    """
    import warnings

    from lesionbench.benchmark.tracking.mlflow_sink import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        return _log_robustness(result, Path(path), uri, experiment)
    except Exception as exc:  # noqa: BLE001 - a sink must never lose the result it was given
        warnings.warn(f"MLflow logging to {uri!r} failed ({type(exc).__name__}: {exc}); the local result {path} is kept. "
                      "Check --tracking-uri / MLFLOW_TRACKING_URI, or use --no-mlflow.", stacklevel=2)  # fmt: skip
        return None


def robustness_metrics(result: RobustnessResult) -> dict[str, float]:
    """The flat metric names logged to MLflow: ``<perturbation>.<statistic>`` (CIs as ``_ci_low`` / ``_ci_high``)."""
    out: dict[str, float] = {}
    if result.reference.get("main_metric"):
        out["reference." + result.reference["main_metric"]] = result.reference["value"]
    for k, b in result.perturbations.items():
        for stat in ("median", "q25", "q75", "share_good", "share_excellent"):
            out[f"{k}.icc_{stat}"] = b["icc"][stat]
        out[f"{k}.icc_undefined"] = float(b["icc"]["n_undefined"])
        for name in ("cosine", "prediction_change", "metric_drop"):
            if b[name] is None:  # test-retest pairs that are no test lesion of the task: nothing predicted
                continue
            out[f"{k}.{name}"] = b[name]["value"]
            out[f"{k}.{name}_ci_low"] = b[name]["ci_low"]
            out[f"{k}.{name}_ci_high"] = b[name]["ci_high"]
    return {k: float(v) for k, v in out.items()}


def _log_robustness(result: RobustnessResult, path: Path, uri: str, experiment: str) -> str:
    import math
    import time

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from lesionbench.benchmark.tracking.mlflow_sink import artifact_location

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    t, e = result.task, result.encoder
    tags = {"lesionbench.task": t["name"], "lesionbench.encoder": e["name"], "lesionbench.protocol": "robustness"}
    run = client.create_run(exp_id, run_name=f"{t['name']}/{e['name']}/robustness", tags=tags)
    rid = run.info.run_id
    try:
        params = {"task.name": t["name"], "task.version": t["version"], "encoder.name": e["name"], "encoder.version": e["version"],
                  "encoder.fingerprint": e["fingerprint"], "bootstrap_unit": result.bootstrap_unit, "n_boot": result.n_boot,
                  "n_test": result.n_test, **{f"perturb.{k}": v for k, v in result.settings.items()}}  # fmt: skip
        now = int(time.time() * 1000)
        metrics = [Metric(k, v if math.isfinite(v) else float("nan"), now, 0) for k, v in robustness_metrics(result).items()]
        client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()], tags=[])
        client.log_artifact(rid, str(path))
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    logger.info("logged the robustness of %s on %s to MLflow %s (run %s)", e["name"], t["name"], uri, rid)
    return rid
