"""Gather results for the leaderboard: local ``result.json`` files and MLflow parent runs.

Both sources hold the same document, :meth:`TaskResult.to_dict`. A local result lives at
``<results>/<task>/<task version>/<encoder>/<probe>/result.json`` (found at any depth) with its per-run predictions CSVs at the relative
``SubsetResult.predictions_path``; an MLflow result is the ``result.json`` artifact of a parent run
tagged ``lesionbench.level=parent``, whose predictions are artifacts of the parent (same relative
path) or of the matching child run (tagged ``lesionbench.level=child``, params ``fraction``/``seed``).
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.protocols import protocol_key
from lesionbench.benchmark.types import SubsetResult, TaskResult

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
LEVEL_TAG = "lesionbench.level"


@dataclass(frozen=True)
class LoadedResult:
    """A result plus where it came from and how to fetch its per-lesion predictions."""

    result: TaskResult
    source: str  # "local" or "mlflow"
    location: str  # result file path, or "<tracking uri>#<run id>"
    run_id: str = ""
    _fetch: Callable[[SubsetResult], pd.DataFrame | None] = field(default=lambda run: None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What makes two results the same leaderboard row (the protocol included: a fine-tuned or k-shot
        result never replaces the frozen-feature one)."""
        r = self.result
        return (r.task.name, r.task.version, r.encoder.name, r.probe, protocol_key(r))

    @property
    def submission(self) -> dict[str, Any] | None:
        sub = self.result.extra.get("submission")
        return sub if isinstance(sub, dict) else None

    def predictions(self, run: SubsetResult) -> pd.DataFrame | None:
        """The run's per-lesion predictions, or None (with a warning) when they cannot be found."""
        try:
            return self._fetch(run)
        except Exception as exc:  # a missing artifact must not stop the page; it loses its tests
            logger.warning("Predictions of %s (fraction %s, seed %s) from %s could not be read: %s", self.result.encoder.name, run.fraction, run.seed, self.location, exc)
            return None


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str})


# --------------------------------------------------------------------------------------- local
def load_local_results(results_dir: str | Path) -> list[LoadedResult]:
    """Every ``result.json`` below ``results_dir``; unreadable files are skipped with a warning."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ConfigurationError(f"Results folder {root} does not exist. Give the --out folder of `lesionbench run`, or leave --results out.")
    out = []
    for path in sorted(root.rglob(RESULT_FILE)):
        try:
            result = TaskResult.from_dict(json.loads(path.read_text()))
        except Exception as exc:  # one corrupt file must not hide the others
            logger.warning("Skipping %s: not a lesionbench result (%s: %s).", path, type(exc).__name__, exc)
            continue
        base = path.parent

        def fetch(run: SubsetResult, base: Path = base) -> pd.DataFrame | None:
            if not run.predictions_path:
                return None
            p = (base / run.predictions_path).resolve()
            if not p.is_relative_to(base.resolve()):
                raise ValueError(f"predictions path {run.predictions_path!r} leaves the result folder")
            return _read_predictions(p) if p.exists() else None

        out.append(LoadedResult(result, "local", str(path), _fetch=fetch))
    logger.info("Read %d local result(s) from %s.", len(out), root)
    return out


# -------------------------------------------------------------------------------------- mlflow
def load_mlflow_results(tracking_uri: str, *, cache_dir: str | Path | None = None) -> list[LoadedResult]:
    """Results of every active parent run (tag ``lesionbench.level=parent``) in the tracking store."""
    from mlflow.tracking import MlflowClient

    from lesionbench.benchmark.tracking import absolute_sqlite_uri

    tracking_uri = absolute_sqlite_uri(tracking_uri)
    db = re.match(r"sqlite:///(.+)$", tracking_uri)
    if db and not Path(db.group(1)).expanduser().is_file():
        # MLflow would create an empty store there, and the leaderboard would silently be empty
        raise ConfigurationError(
            f"No MLflow store at {db.group(1)} (tracking URI {tracking_uri}). Give the --tracking-uri that "
            "`lesionbench run` logged to (default sqlite:///mlflow.db in its working directory), or use --results."
        )

    client = MlflowClient(tracking_uri=tracking_uri)
    if cache_dir is None:
        # Predictions are downloaded lazily, so the folder lives as long as the process.
        cache_dir = tempfile.mkdtemp(prefix="lesionbench-lb-")
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    tmp = Path(cache_dir)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = _search_all(client, experiments, f"tags.`{LEVEL_TAG}` = 'parent'")
    out = []
    for run in runs:
        rid = run.info.run_id
        if run.info.status != "FINISHED":  # logging crashed or was killed half-way: some child runs are missing
            logger.warning("Skipping MLflow run %s (%s): its logging did not finish (status %s). Log the result again with "
                           "`lesionbench run` (finished runs resume from the local results).", rid, run.info.run_name, run.info.status)  # fmt: skip
            continue
        dst = tmp / rid
        dst.mkdir(parents=True, exist_ok=True)
        try:
            local = client.download_artifacts(rid, RESULT_FILE, str(dst))
            result = TaskResult.from_dict(json.loads(Path(local).read_text()))
        except Exception as exc:  # runs without the artifact (crashed, foreign) are skipped
            logger.warning("Skipping MLflow run %s: no readable %s artifact (%s: %s).", rid, RESULT_FILE, type(exc).__name__, exc)
            continue

        def fetch(sub: SubsetResult, rid: str = rid, dst: Path = dst, exp: str = run.info.experiment_id) -> pd.DataFrame | None:
            return _fetch_mlflow_predictions(client, rid, exp, sub, dst)

        out.append(LoadedResult(result, "mlflow", f"{tracking_uri}#{rid}", run_id=rid, _fetch=fetch))
    logger.info("Read %d result(s) from MLflow at %s.", len(out), tracking_uri)
    return out


def _search_all(client: Any, experiment_ids: list[str], filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _fetch_mlflow_predictions(client: Any, run_id: str, experiment_id: str, sub: SubsetResult, dst: Path) -> pd.DataFrame | None:
    if sub.predictions_path:
        try:
            return _read_predictions(Path(client.download_artifacts(run_id, sub.predictions_path, str(dst))))
        except Exception:  # not logged on the parent; look at the child run below
            pass
    children = _search_all(client, [experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    for child in children:
        params = child.data.params
        try:
            same = float(params.get("fraction", "nan")) == float(sub.fraction) and int(float(params.get("seed", "-1"))) == int(sub.seed)
        except ValueError:
            same = False
        if not same:
            continue
        csvs = _pick_predictions([a.path for a in _walk_artifacts(client, child.info.run_id) if a.path.endswith(".csv")], sub.predictions_path)
        if csvs:
            cdst = dst / child.info.run_id
            cdst.mkdir(exist_ok=True)
            return _read_predictions(Path(client.download_artifacts(child.info.run_id, csvs[0], str(cdst))))
    return None


def _pick_predictions(csvs: list[str], wanted: str) -> list[str]:
    """The child's predictions CSV: same path, else same file name, else one named *pred*, else the only CSV."""
    base = wanted.rsplit("/", 1)[-1] if wanted else ""
    for test in (lambda p: p == wanted, lambda p: bool(base) and p.rsplit("/", 1)[-1] == base, lambda p: "pred" in p.rsplit("/", 1)[-1]):
        hits = [p for p in csvs if test(p)]
        if hits:
            return hits
    return csvs if len(csvs) == 1 else []


def _walk_artifacts(client: Any, run_id: str, path: str | None = None) -> Iterable[Any]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _walk_artifacts(client, run_id, info.path)
        else:
            yield info


# -------------------------------------------------------------------------------------- merge
def collect_results(*, tracking_uri: str | None = None, results_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> list[LoadedResult]:
    """Results from MLflow and/or a local folder, one per (task, version, encoder, probe): the newest.

    When both sources hold the same result (same ``created``), the local copy is kept because its
    predictions are read without a download.
    """
    if tracking_uri is None and results_dir is None:
        raise ConfigurationError("Give --tracking-uri (an MLflow store) and/or --results (a results folder) to build a leaderboard from.")
    loaded: list[LoadedResult] = []
    if tracking_uri is not None:
        loaded += load_mlflow_results(tracking_uri, cache_dir=cache_dir)
    if results_dir is not None:
        loaded += load_local_results(results_dir)
    if not loaded:
        where = " and ".join(str(w) for w in (tracking_uri, results_dir) if w is not None)
        logger.warning("No lesionbench results found in %s: the leaderboard will hold the published reference rows only. "
                       "Run `lesionbench run` first, or point --results / --tracking-uri at where it wrote.", where)
    best: dict[tuple[str, str, str, str, str], LoadedResult] = {}
    for item in loaded:
        cur = best.get(item.key)
        if cur is None or (item.result.created, item.source == "local") > (cur.result.created, cur.source == "local"):
            best[item.key] = item
    superseded = len(loaded) - len(best)
    if superseded:
        logger.info("%d older or duplicate result(s) superseded by newer runs of the same encoder and task.", superseded)
    return sorted(best.values(), key=lambda x: x.key)
