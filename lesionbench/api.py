"""The Python API: what the command line does, as functions for scripts and notebooks.

Re-exported at the top level (``import lesionbench as lb; lb.evaluate(...)``), as MTEB and
lm-evaluation-harness users expect::

    import lesionbench as lb

    lb.get_tasks()                                   # a table of the registered tasks
    task = lb.get_task("synthetic_malignancy")
    enc = lb.get_encoder("fmcib", random_init=True)  # or any object with .meta and .encode: no registering
    feats = lb.extract_features(task.manifest(), enc)            # fmcib's get_features twin: a DataFrame
    result = lb.evaluate(task, enc, seeds=(0, 1), mlflow=True)   # result.json (+ MLflow when asked)
    lb.compare("synthetic_malignancy", "radiomics", enc.meta.name)
    lb.load_results()                                # every result as one tidy DataFrame

It sits at the top of the layers (beside :mod:`lesionbench.demo` and :mod:`lesionbench.cli`): it calls the
harness core, the registries and the leaderboard, and nothing below imports it. See ``docs/api.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["compare", "evaluate", "extract_features", "get_encoder", "get_encoders", "get_task", "get_tasks", "load_results"]

#: The columns of :func:`load_results`, in order.
RESULT_COLUMNS = ("task", "task_version", "encoder", "probe", "protocol", "fraction", "shots", "seed", "n_train", "metric",
                  "value", "ci_low", "ci_high", "path")  # fmt: skip
DEFAULT_RESULTS = Path("lesionbench-results")


def get_tasks() -> pd.DataFrame:
    """Every registered task (built-in and third-party): name, version, kind, main metric, description, origin.

    Nothing is built or downloaded; :func:`get_task` builds one.
    """
    from lesionbench.benchmark.encoders.plugins import TASKS

    rows = []
    for name in TASKS.names():
        meta = getattr(TASKS.get(name), "meta", None)
        rows.append({"name": name, "version": getattr(meta, "version", ""), "kind": str(getattr(meta, "kind", "")),
                     "main_metric": getattr(meta, "main_metric", ""), "description": getattr(meta, "description", ""),
                     "origin": TASKS.origin(name)})  # fmt: skip
    return pd.DataFrame(rows, columns=["name", "version", "kind", "main_metric", "description", "origin"])


def get_task(name: str, *, data_dir: str | Path | None = None, **options: Any) -> Any:
    """The registered task ``name`` (its data from ``data_dir``, else ``$LESIONBENCH_DATA/<task>``).

    An unknown name is an error that suggests the closest names. The synthetic tasks generate their cohort
    on first use.
    """
    from lesionbench.benchmark.encoders.plugins import get_task as registered

    return registered(name, data_dir=data_dir, **options)


def get_encoders() -> pd.DataFrame:
    """Every encoder (built-in, the model zoo per recipe and random-init control, third-party plug-ins):
    name, recipe, embedding size, licence, non-commercial weights, weights on disk. No network."""
    from lesionbench.baselines.zoo.catalog import CatalogRow, rows

    return pd.DataFrame([dataclasses.asdict(r) for r in rows()], columns=[f.name for f in dataclasses.fields(CatalogRow)])


def get_encoder(name: str, *, weights: str | Path | None = None, random_init: bool = False, recipe: str | None = None, **options: Any) -> Any:
    """The encoder ``name`` built as ``--encoder NAME [--weights W] [--random-init] [--recipe R]`` builds it.

    ``random_init=True`` gives the architecture with seeded random weights (``fmcib`` -> ``fmcib-random-init``),
    the control that needs no download; ``options`` (``device``, ``bf16``, ...) go to the encoder's factory.
    An encoder object defined in a notebook (``.meta`` and ``.encode``) needs no registering: pass it to
    :func:`extract_features` and :func:`evaluate` directly.
    """
    from lesionbench.baselines.zoo.catalog import encoder_choice
    from lesionbench.benchmark.encoders.plugins import get_encoder as registered

    base, variant = encoder_choice(name, recipe=recipe, random_init=random_init, weights=weights)
    return registered(base, weights=weights, **variant, **options)


def _task(task: Any, data_dir: str | Path | None = None) -> Any:
    return get_task(task, data_dir=data_dir) if isinstance(task, str) else task


def _encoder(encoder: Any) -> Any:
    return get_encoder(encoder) if isinstance(encoder, str) else encoder


def extract_features(
    table: pd.DataFrame | str | Path,
    encoder: Any = "fmcib",
    *,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    prefix: str = "pred_",
) -> pd.DataFrame:
    """Features of every lesion of ``table``: its columns, then ``pred_0 ... pred_<d-1>`` (fmcib's ``get_features`` twin).

    ``table``: a DataFrame or a CSV/Parquet path with ``image_path`` and ``coordX/Y/Z`` (LPS mm); relative
    paths resolve against the file's folder (a DataFrame's against the working directory). ``encoder``: a
    name (``weights`` for the ones that take a file) or an encoder object. Features go through the on-disk
    cache (``cache_dir``, default ``$LESIONBENCH_CACHE/features``); a lesion that fails stops the call with
    one error naming every failed row.
    """
    from lesionbench.benchmark.encoders.features import check_output_columns, feature_table
    from lesionbench.benchmark.encoders.features import extract_features as extract
    from lesionbench.benchmark.data.manifest import read_table, resolve_paths

    if isinstance(table, (str, Path)):
        source = Path(table)
        table = read_table(source)
        lesions = resolve_paths(table, source.parent.resolve())
    else:
        lesions = resolve_paths(table, Path.cwd())
    missing = [c for c in ("image_path", "coordX", "coordY", "coordZ") if c not in table.columns]
    if missing:
        raise ConfigurationError(f"The lesion table has no column(s) {missing}; it needs image_path and coordX/coordY/coordZ (LPS mm), one row per lesion.")
    check_output_columns(table, prefix)
    enc = get_encoder(encoder, weights=weights) if isinstance(encoder, str) else encoder
    feats = extract(lesions.reset_index(drop=True), enc, cache_dir=Path(cache_dir) if cache_dir else None, batch_size=batch_size, progress=progress)
    return feature_table(table.reset_index(drop=True), feats, prefix=prefix)


def evaluate(
    task: Any,
    encoder: Any,
    *,
    data_dir: str | Path | None = None,
    results: str | Path = DEFAULT_RESULTS,
    mlflow: bool | str = False,
    experiment: str = "lesionbench",
    out: str | Path | None = None,
    **options: Any,
) -> Any:
    """Score ``encoder`` on ``task`` (names or objects) as ``lesionbench run`` does; the :class:`TaskResult`.

    ``options`` are :func:`lesionbench.benchmark.scoring.scorer.evaluate`'s (``fractions``, ``seeds``, ``probe``,
    ``n_boot``, ``shots``, ``adapt``, ``jobs``, ``resume``, ...). The result is written to the results folder ``results`` (its
    ``result.json`` carries the environment: package versions, device, git commits). ``mlflow``: ``True``
    logs it to ``$MLFLOW_TRACKING_URI`` (else ``sqlite:///mlflow.db``), a string to that tracking URI;
    a failed logging call warns and keeps the result. ``out``: the old name of ``results`` (deprecated).
    """
    from lesionbench.benchmark.scoring.scorer import evaluate as score
    from lesionbench.benchmark.scoring.scorer import result_folder

    if out is not None:  # one name for the results folder, as compare() and load_results() call it
        warnings.warn("evaluate(out=...) is deprecated: the results folder is results=..., as in compare() and load_results().",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        results = out
    result = score(_task(task, data_dir), _encoder(encoder), out_dir=Path(results), **options)
    if mlflow:
        from lesionbench.benchmark.tracking.mlflow_sink import log_result

        log_result(result, result_folder(Path(results), result), tracking_uri=None if mlflow is True else str(mlflow), experiment=experiment)
    return result


def compare(
    task: str | Any,
    encoder_a: str,
    encoder_b: str,
    *,
    results: str | Path = DEFAULT_RESULTS,
    fraction: float = 1.0,
    seed: int | None = 0,
    probe: str = "linear",
    n_boot: int = 1000,
    n_perm: int = 1000,
    alternative: str = "two-sided",
    version: str | None = None,
    labels: pd.DataFrame | Callable[[], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Paired comparison A - B of two encoders' saved results on the same test lesions, one row per metric.

    ``task``: a task object (its manifest gives the test labels, which the saved results never hold) or a
    registered task's name (its prepared data is read); ``labels``: the task's manifest, to give it explicitly.

    The difference's 95% CI is a paired bootstrap and ``p_value`` a permutation test; both resample
    patients, but they answer different questions (the CI: how large the difference is; p: whether the
    two models' rankings of the lesions could be swapped), so near the threshold one may exclude 0 while
    the other is above 0.05. ``seed=None`` compares every seed both results have (a ``seed`` column).
    """
    from lesionbench.benchmark.scoring.scorer import compare_saved, load_result, result_dir, task_versions

    if not isinstance(task, str):  # a task object: its name, and its manifest for the labels
        if labels is None:
            labels = task.manifest()
        task = task.meta.name
    elif labels is None:  # a registered task's prepared data, read once the results are found (as `lesionbench compare` does)
        from lesionbench.benchmark.encoders.plugins import get_task

        name = task
        labels = lambda: get_task(name).manifest()  # noqa: E731
    seeds: Iterable[int]
    if seed is None:
        got = []
        for enc in (encoder_a, encoder_b):
            vers = [version] if version else task_versions(Path(results), task)
            got.append({r.seed for v in vers if (result_dir(Path(results), task, v, enc, probe) / "result.json").is_file()
                        for r in load_result(result_dir(Path(results), task, v, enc, probe)).runs if abs(r.fraction - fraction) < 1e-9})  # fmt: skip
        seeds = sorted(got[0] & got[1])
        if not seeds:
            raise ConfigurationError(f"{encoder_a} and {encoder_b} have no seed in common at fraction {fraction:g} on {task}; run both with the same --seeds.")
    else:
        seeds = [seed]
    rows = []
    for s in seeds:
        for r in compare_saved(Path(results), task, encoder_a, encoder_b, fraction=fraction, seed=s, probe=probe, n_boot=n_boot,
                               n_perm=n_perm, version=version, alternative=alternative, labels=labels):  # fmt: skip
            rows.append({"seed": s, **dataclasses.asdict(r)})
    return pd.DataFrame(rows)


def load_results(results: str | Path | Any | Sequence[Any] = DEFAULT_RESULTS) -> pd.DataFrame:
    """Results as one tidy DataFrame: a row per (result, run, metric) with :data:`RESULT_COLUMNS`.

    ``results``: a results folder (every ``result.json`` below it; a malformed one is skipped with a
    warning naming it), or :class:`TaskResult` objects (what :func:`evaluate` returns).
    """
    from lesionbench.benchmark.scoring.protocols import protocol_of
    from lesionbench.benchmark.types import TaskResult

    found: list[tuple[Any, str]] = []
    if isinstance(results, TaskResult):
        found = [(results, "")]
    elif isinstance(results, (str, Path)):
        root = Path(results)
        if not root.is_dir():
            raise ConfigurationError(f"No results folder {root}; give the --results folder of `lesionbench run` (default ./lesionbench-results).")
        for path in sorted(root.rglob("result.json")):
            try:
                found.append((TaskResult.from_dict(json.loads(path.read_text(encoding="utf-8"))), str(path)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                warnings.warn(f"{path} is not a readable lesionbench result ({type(exc).__name__}); skipped.", stacklevel=2)
    else:
        found = [(r, "") for r in results]
    rows = []
    for res, path in found:
        protocol = protocol_of(res)
        for run in res.runs:
            for metric, v in run.metrics.items():
                rows.append((res.task.name, res.task.version, res.encoder.name, res.probe, protocol, run.fraction, run.shots, run.seed,
                             run.n_train, metric, v.value, v.ci_low, v.ci_high, path))  # fmt: skip
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
