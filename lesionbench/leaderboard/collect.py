"""Gather results for the leaderboard: local ``result.json`` files and MLflow parent runs.

Both sources hold the same document, :meth:`TaskResult.to_dict`. A local result lives at
``<results>/<task>/<task version>/<encoder>/<probe>/result.json`` (found at any depth) with its per-run predictions CSVs at the relative
``SubsetResult.predictions_path``; an MLflow result is the ``result.json`` artifact of a parent run
tagged ``lesionbench.level=parent``, whose predictions are artifacts of the parent (same relative
path) or of the matching child run (tagged ``lesionbench.level=child``, params ``fraction``/``seed``).

Only the MLflow experiments the build is given are read (default: the harness's own, the one
``lesionbench run`` and ``submit`` log to), and every result is checked by
:mod:`lesionbench.leaderboard.validate` first: a malformed or foreign file is skipped with one warning.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, LesionbenchError
from lesionbench.benchmark.scoring.protocols import protocol_key
from lesionbench.benchmark.tracking.mlflow_sink import DEFAULT_EXPERIMENT, absolute_sqlite_uri, redact_uri
from lesionbench.benchmark.types import EncoderMeta, SubsetResult, TaskResult
from lesionbench.leaderboard import _stats
from lesionbench.leaderboard.validate import ResultFileError, parse_result

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
    def key(self) -> tuple[Any, ...]:
        """What makes two results the same leaderboard row: task version, encoder (name and the digest of
        its weights and recipe), probe and protocol (frozen features, k-shot or fine-tuned, and the settings below). A newer result of the same key replaces an older one;
        any difference (another checkpoint, a 20%-label or interval-free scratch run) is another row."""
        r = self.result
        return (r.task.name, r.task.version, r.encoder.name, encoder_identity(r.encoder), r.probe, protocol_key(r), *sorted(protocol(r).items()))

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


def created_at(result: TaskResult) -> datetime:
    """A result's ``created`` as a UTC instant (no zone: UTC); unreadable dates sort first (validate.py refuses them)."""
    try:
        when = datetime.fromisoformat(result.created)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def extent(result: TaskResult) -> tuple[int, frozenset[float], frozenset[int]]:
    """What a result measured: bootstrap resamples, training fractions (k-shot: shots) and seeds."""
    n_boot = result.extra.get("n_boot")
    levels = frozenset(float(r.shots) if r.shots else r.fraction for r in result.runs)
    return (n_boot if isinstance(n_boot, int) and not isinstance(n_boot, bool) else 0, levels, frozenset(r.seed for r in result.runs))


def replaces(new: LoadedResult, old: LoadedResult) -> bool:
    """Whether ``new`` replaces ``old`` (the same leaderboard row): it is newer (parsed UTC instants; a tie goes to
    the local copy, read without a download) and has no fewer resamples, fractions or seeds: a scratch run
    (``--seeds 0 --n-boot 10``) never replaces a full one, however new."""
    (nb_new, lv_new, sd_new), (nb_old, lv_old, sd_old) = extent(new.result), extent(old.result)
    if nb_new < nb_old or not lv_new >= lv_old or not sd_new >= sd_old:
        return False
    if (nb_new, lv_new, sd_new) != (nb_old, lv_old, sd_old) and (nb_old < nb_new or lv_old < lv_new or sd_old < sd_new):
        return True  # measures strictly more: the fuller result wins whatever its date
    return (created_at(new.result), new.source == "local") > (created_at(old.result), old.source == "local")


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str})


def encoder_identity(enc: EncoderMeta) -> str:
    """Digest of what makes an encoder's features (its fingerprint without the free-text description and citation)."""
    d = enc.to_dict()
    for k in ("description", "citation"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def headline_fraction(result: TaskResult) -> float:
    """The largest training fraction a result holds (its own headline)."""
    return max(r.fraction for r in result.runs)


def headline_run(result: TaskResult, fraction: float | None = None) -> SubsetResult:
    """The lowest-seed run at ``fraction`` (default: the result's largest fraction)."""
    frac = headline_fraction(result) if fraction is None else fraction
    return min((r for r in result.runs if r.fraction == frac), key=lambda r: r.seed)


def level_of(run: SubsetResult, shots: bool) -> float:
    """Where a run sits on its section's label axis: its k in k-shot sections, else its training fraction."""
    return float(run.shots or 0) if shots else run.fraction


def own_level(result: TaskResult, shots: bool) -> float:
    """The most labels a result holds on its section's axis (its own headline)."""
    return max(level_of(r, shots) for r in result.runs)


def run_at(result: TaskResult, level: float, shots: bool) -> SubsetResult:
    """The lowest-seed run at ``level`` (a fraction, or a k in k-shot sections)."""
    return headline_run(result, level) if not shots else min((r for r in result.runs if level_of(r, shots) == level), key=lambda r: r.seed)


def protocol(result: TaskResult) -> dict[str, Any]:
    """How a result was measured, beyond its encoder: label fraction, resampling unit, validation split, intervals."""
    head = headline_run(result)
    mv = head.metrics.get(_stats.main_metric(result.task))
    intervals = mv is not None and all(x is not None and x == x for x in (mv.ci_low, mv.ci_high))
    return {
        "fraction": headline_fraction(result),
        "bootstrap_unit": str(result.extra.get("bootstrap_unit", "patient")),
        # results written before the choice was recorded were all tuned on the full validation split
        "validation": str(result.extra.get("validation", "full")),
        "intervals": bool(intervals),
    }


# --------------------------------------------------------------------------------------- local
def load_local_results(results_dir: str | Path) -> list[LoadedResult]:
    """Every ``result.json`` below ``results_dir``; unreadable files are skipped with a warning."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ConfigurationError(f"Results folder {root} does not exist. Give the --results folder that `lesionbench run` wrote, or leave --results out.")
    out = []
    for path in sorted(root.rglob(RESULT_FILE)):
        try:
            result = parse_result(path.read_bytes(), str(path))
        except (ResultFileError, OSError) as exc:  # one corrupt or foreign file must not hide the others
            logger.warning("Skipping %s", exc if isinstance(exc, ResultFileError) else f"{path}: unreadable ({exc.strerror or exc}).")
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
def check_tracking_uri(uri: str) -> str:
    """``uri`` as MLflow is given it (relative sqlite paths made absolute); a plain path or a missing
    sqlite file is a :class:`ConfigurationError` (MLflow would create an empty store there)."""
    from urllib.parse import urlsplit

    uri = absolute_sqlite_uri(str(uri).strip())
    if not urlsplit(uri).scheme and not uri.startswith("databricks"):
        p = Path(uri).expanduser().resolve()
        hint = f"sqlite:///{p}" if p.is_file() else f"file://{p}"
        raise ConfigurationError(
            f"--tracking-uri {redact_uri(uri)!r} is a plain path, not a tracking URI. A results folder of `lesionbench run` "
            f"is read with --results {uri}; an MLflow store is given as a URI ({hint})."
        )
    db = re.match(r"sqlite:///(.+)$", uri)
    if db and not Path(db.group(1)).expanduser().is_file():
        # MLflow would create an empty store there, and the leaderboard would silently be empty
        raise ConfigurationError(
            f"No MLflow store at {db.group(1)} (tracking URI {uri}). Give the --tracking-uri that "
            "`lesionbench run` logged to (default sqlite:///mlflow.db in its working directory), or use --results."
        )
    return uri


def _store_error(uri: str, exc: Exception) -> ConfigurationError:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return ConfigurationError(
        f"Cannot read the MLflow store at {redact_uri(uri)} ({type(exc).__name__}: {redact_uri(first)}). "
        "Check that the server is up and the --tracking-uri is right, or build from a results folder with --results."
    )


def _experiment_ids(client: Any, uri: str, experiments: Sequence[str]) -> list[str]:
    """Ids of the named experiments; names the store does not hold are said once."""
    try:
        found = {name: client.get_experiment_by_name(name) for name in experiments}
        missing = [n for n, e in found.items() if e is None]
        there = [e.name for e in client.search_experiments()] if missing else []
    except LesionbenchError:
        raise
    except Exception as exc:  # an unreachable server, a refused login, a damaged database: one line, no traceback
        raise _store_error(uri, exc) from None
    if missing:
        logger.warning("No experiment named %s in the MLflow store at %s (experiments there: %s). Give the names `lesionbench run "
                       "--experiment` logged to with --experiment.", ", ".join(map(repr, missing)), redact_uri(uri), ", ".join(map(repr, there)) or "none")  # fmt: skip
    return [e.experiment_id for e in found.values() if e is not None]


def load_mlflow_results(tracking_uri: str, *, experiments: Sequence[str] = (DEFAULT_EXPERIMENT,), cache_dir: str | Path | None = None) -> list[LoadedResult]:
    """Results of every finished parent run (tag ``lesionbench.level=parent``) in the named experiments."""
    from mlflow.tracking import MlflowClient

    tracking_uri = check_tracking_uri(tracking_uri)
    shown = redact_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_ids = _experiment_ids(client, tracking_uri, experiments)
    if not exp_ids:
        return []
    if cache_dir is None:
        # Predictions are downloaded lazily, so the folder lives as long as the process.
        cache_dir = tempfile.mkdtemp(prefix="lesionbench-lb-")
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    tmp = Path(cache_dir)
    try:
        runs = _search_all(client, exp_ids, f"tags.`{LEVEL_TAG}` = 'parent'")
    except Exception as exc:  # the server went away after answering once
        raise _store_error(tracking_uri, exc) from None
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
            raw = Path(local).read_bytes()
        except Exception as exc:  # runs without the artifact (crashed, foreign) are skipped
            logger.warning("Skipping MLflow run %s: no readable %s artifact (%s: %s).", rid, RESULT_FILE, type(exc).__name__, redact_uri(str(exc))[:300])
            continue
        try:
            result = parse_result(raw, f"MLflow run {rid} ({RESULT_FILE})")
        except ResultFileError as exc:
            logger.warning("Skipping %s", exc)
            continue

        def fetch(sub: SubsetResult, rid: str = rid, dst: Path = dst, exp: str = run.info.experiment_id) -> pd.DataFrame | None:
            return _fetch_mlflow_predictions(client, rid, exp, sub, dst)

        out.append(LoadedResult(result, "mlflow", f"{shown}#{rid}", run_id=rid, _fetch=fetch))
    logger.info("Read %d result(s) from MLflow at %s (experiment(s) %s).", len(out), shown, ", ".join(experiments))
    return out


def _search_all(client: Any, experiment_ids: list[str], filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _inside(path: str | Path, root: Path) -> Path:
    """``path`` resolved, when it lies inside ``root`` (a run's download folder); else a ``ValueError``."""
    p = Path(path).resolve()
    if not p.is_relative_to(Path(root).resolve()):
        raise ValueError(f"artifact path {str(path)[:120]!r} leaves the run's own artifacts")
    return p


def _fetch_mlflow_predictions(client: Any, run_id: str, experiment_id: str, sub: SubsetResult, dst: Path) -> pd.DataFrame | None:
    if sub.predictions_path:
        if ".." in Path(sub.predictions_path).parts or Path(sub.predictions_path).is_absolute():  # validate.py refuses these too
            raise ValueError(f"predictions path {sub.predictions_path!r} leaves the run's own artifacts")
        try:
            local = client.download_artifacts(run_id, sub.predictions_path, str(dst))
        except Exception:  # not logged on the parent; look at the child run below
            local = None
        if local is not None:
            return _read_predictions(_inside(local, dst))
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
            return _read_predictions(_inside(client.download_artifacts(child.info.run_id, csvs[0], str(cdst)), cdst))
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
def collect_results(
    *,
    tracking_uri: str | None = None,
    results_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    experiments: Sequence[str] | None = None,
) -> list[LoadedResult]:
    """Results from MLflow (the named ``experiments``, default the harness's own) and/or a local folder,
    the newest per :attr:`LoadedResult.key`.

    When both sources hold the same result (same ``created``), the local copy is kept because its
    predictions are read without a download.
    """
    if tracking_uri is None and results_dir is None:
        raise ConfigurationError("Give --tracking-uri (an MLflow store) and/or --results (a results folder) to build a leaderboard from.")
    loaded: list[LoadedResult] = []
    if tracking_uri is not None:
        loaded += load_mlflow_results(tracking_uri, experiments=tuple(experiments or (DEFAULT_EXPERIMENT,)), cache_dir=cache_dir)
    if results_dir is not None:
        loaded += load_local_results(results_dir)
    if not loaded:
        where = " and ".join(redact_uri(str(w)) for w in (tracking_uri, results_dir) if w is not None)
        logger.warning("No lesionbench results found in %s: the leaderboard will hold the published reference rows only. "
                       "Run `lesionbench run` first, or point --results / --tracking-uri at where it wrote.", where)
    best: dict[tuple[Any, ...], LoadedResult] = {}
    for item in loaded:
        cur = best.get(item.key)
        if cur is None or replaces(item, cur):
            best[item.key] = item
    superseded = len(loaded) - len(best)
    if superseded:
        logger.info("%d older or duplicate result(s) superseded by newer runs of the same task version, encoder, probe and protocol.", superseded)
    return sorted(best.values(), key=lambda x: x.key)
