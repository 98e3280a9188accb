"""What several commands share: the number types, the option groups and the summary table.

A flag that more than one command takes is declared here once; a command module calls the group at the
place its flags should appear in ``--help``. Where commands word a shared flag differently, the group takes
the help text as a keyword and the most common wording is the default. Nothing here imports torch, numpy or
pandas at module level: ``import lesionbench.cli`` stays cheap (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------ argument types
#: Whole numbers beyond this are out of range everywhere (numpy's int64; no count or seed needs more).
_MAX_WHOLE = 2**63 - 1


def whole_number(minimum: int | None = 0) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum`` (None: any; ``1e3`` is accepted as 1000). Every command's
    counts, seeds, workers and sizes use it, so a negative ``--n-boot`` or a ``1e400`` is refused at parse
    time with exit code 2 and a message saying which (not a number / not whole / out of range / too small)."""
    wanted = "a whole number" + (f" >= {minimum}" if minimum is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {wanted}") from None
            if not math.isfinite(number) or abs(number) > _MAX_WHOLE:
                raise argparse.ArgumentTypeError(f"{text!r} is out of range (not a finite number); give {wanted}") from None
            if not number.is_integer():
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {wanted}") from None
            value = int(number)
        if abs(value) > _MAX_WHOLE:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range (at most {_MAX_WHOLE})")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; give {wanted}")
        return value

    parse.__name__ = wanted
    return parse


def finite_number(text: str) -> float:
    """argparse type: a finite number (``1e400`` overflows to infinity: out of range, not "not a number")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (not a finite number)")
    return value


# ------------------------------------------------------------------------------------ help text
def shows_default(action: argparse.Action) -> bool:
    """Whether ``--help`` shows the action's default: not for None, False, nothing (empty) or a count's 0, which
    all mean "not given"; nor for hidden actions."""
    d = action.default
    if action.help == argparse.SUPPRESS or d is None or d is False or d is argparse.SUPPRESS:
        return False
    if isinstance(action, argparse._CountAction) and d == 0:
        return False
    return not (isinstance(d, str | list | tuple) and len(d) == 0)


def show_default(value: Any) -> str:
    """A default as a user types it: ``1 5`` for a pair, ``1000``, ``2`` (not ``2.0``), ``./lesionbench-results``."""
    if isinstance(value, list | tuple):
        return " ".join(show_default(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        text = str(value)
        return text if value.is_absolute() or text.startswith(".") else f"./{text}"
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with " (default: X)" after every option whose help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help
        if help is None or not shows_default(action):
            return help
        shown = f"default: {show_default(action.default)}"
        if shown in help or "%(default)" in help:
            return help
        return help + " (" + shown.replace("%", "%%") + ")"


# ------------------------------------------------------------------------------- option groups
#: `lesionbench run`'s default results folder, where compare, demo, robustness and submit look too.
RESULTS_DIR = Path("lesionbench-results")
TASK_HELP = "task name (see `lesionbench tasks list`)"


def add_data_dir(p: argparse.ArgumentParser, *, help: str = "the task's data folder (default: $LESIONBENCH_DATA/<task>)") -> None:
    p.add_argument("--data-dir", type=Path, help=help)


def add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: $LESIONBENCH_CACHE/features)")


def add_results_dir(p: argparse.ArgumentParser, *, help: str = "results folder", old_out: bool = False) -> None:
    """``--results DIR`` (default ./lesionbench-results), the one name of the results folder on every command.

    ``old_out``: ``--out`` also names it, as it did on that command before ``--out`` came to mean only a folder
    or file a command writes that is not the results folder (issue 22); hidden from ``--help``, one warning."""
    p.add_argument("--results", type=Path, default=RESULTS_DIR, metavar="DIR", help=help)
    if old_out:
        add_deprecated_alias(p, "--out", "--results", dest="results", type=Path)


class _DeprecatedAlias(argparse.Action):
    """Stores like the option it stands for and records the old name, which :func:`warn_deprecated` names once."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        used = dict(getattr(namespace, DEPRECATED_DEST, {}))
        used[option_string or self.option_strings[0]] = self.new
        setattr(namespace, DEPRECATED_DEST, used)


#: Where the parsed arguments keep the deprecated option names used (old -> new), for :func:`warn_deprecated`.
DEPRECATED_DEST = "deprecated_options"


def add_deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, *, dest: str, type: Callable[[str], Any]) -> None:
    """``old`` as a hidden alias of ``new`` (same ``dest``): it still works, and logs one warning naming ``new``."""
    p.add_argument(old, dest=dest, type=type, action=_DeprecatedAlias, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def warn_deprecated(args: argparse.Namespace, logger: logging.Logger) -> None:
    """One warning per deprecated option name the command line used (once logging is set up)."""
    for old, new in getattr(args, DEPRECATED_DEST, {}).items():
        logger.warning("%s is deprecated here and will be removed: use %s (same value).", old, new)


def add_encoder_options(
    p: argparse.ArgumentParser,
    *,
    default: str | None = None,
    help: str = "encoder name",
    several: bool = False,
    weights_help: str = "encoder weights file (encoders that take one)",
    variants: bool = True,
) -> None:
    """``--encoder`` (required unless given a ``default``; ``several``: one or more) and ``--weights``; with ``variants`` also the zoo's
    ``--recipe`` and ``--random-init``, which :func:`get_encoder` reads."""
    p.add_argument("--encoder", required=default is None, default=default, help=help, nargs="+" if several else None)
    p.add_argument("--weights", type=Path, help=weights_help)
    if variants:
        p.add_argument("--recipe", choices=("official", "tib"),
                       help="zoo encoders: the model's own preprocessing (official) or TumorImagingBench's (tib) (default: official)")  # fmt: skip
        p.add_argument("--random-init", action="store_true",
                       help="the encoder's architecture with seeded random weights: the control for what pre-training adds")  # fmt: skip


def get_encoder(args: argparse.Namespace, **options: Any) -> Any:
    """The encoder of ``--encoder`` with ``--weights``, ``--recipe`` and ``--random-init``."""
    from lesionbench.baselines.zoo.catalog import encoder_choice
    from lesionbench.benchmark.encoders.plugins import get_encoder as registered

    name, variant = encoder_choice(args.encoder, recipe=args.recipe, random_init=args.random_init, weights=args.weights)
    return registered(name, weights=args.weights, **variant, **options)


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    """The training sets of a sweep: ``--fractions`` x ``--seeds``."""
    p.add_argument("--fractions", type=finite_number, nargs="+", help="training fractions (default: 1.0 0.5 0.2 0.1)")
    p.add_argument("--seeds", type=whole_number(None), nargs="+", help="subset seeds (default: 0 1 2 3 4)")


def add_shots_options(p: argparse.ArgumentParser) -> None:
    """The k-shot alternative to ``--fractions``: one of ``--shots`` and ``--shots-total``."""
    shots = p.add_mutually_exclusive_group()
    shots.add_argument("--shots", type=whole_number(1), nargs="+", metavar="K",
                       help="k-shot protocol: K labelled lesions per class (one per patient, nested, seeded) instead of --fractions")  # fmt: skip
    shots.add_argument("--shots-total", type=whole_number(1), nargs="+", metavar="N", help="k-shot protocol with a total budget of N lesions over all classes")


def add_val_option(p: argparse.ArgumentParser, *, help: str) -> None:
    p.add_argument("--val", choices=["fraction", "full"], default="fraction", help=help)


def add_n_boot(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    p.add_argument("--n-boot", type=whole_number(0), default=1000, help=help)


def add_parallel_options(
    p: argparse.ArgumentParser, *, workers: str | None = None, jobs: str | None = None, jobs_default: int | None = 1
) -> None:
    """Where the heavy work runs, for the commands that do it (extract, run, demo): ``--workers`` (image reading,
    with its help text ``workers``) and/or ``--jobs`` ((fraction, seed) fits, help ``jobs``). An option for how
    that work is distributed across processes or machines belongs here, so every one of those commands gets it."""
    if workers is not None:
        p.add_argument("--workers", type=whole_number(1), default=1, help=workers)
    if jobs is not None:
        p.add_argument("--jobs", type=whole_number(1), default=jobs_default, help=jobs)
    add_dask_options(p)


def add_dask_options(p: argparse.ArgumentParser) -> None:
    """``--dask ADDRESS|local:N`` or ``--dask-cluster FILE``: the work goes to Dask workers (docs/scale-out.md)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dask", metavar="ADDRESS|local:N", type=dask_address,
                   help="run on Dask: a running scheduler (tcp://host:8786) or local:N, a local cluster of N worker processes "
                   '(needs pip install "lesionbench[dask]"; the feature cache must be on a filesystem every worker sees)')  # fmt: skip
    g.add_argument("--dask-cluster", type=dask_cluster_file, metavar="FILE",
                   help="run on Dask workers started as batch jobs: a dask-jobqueue spec (YAML/JSON: kind slurm|pbs|lsf|sge, cores, "
                   "memory, walltime, gpus, account, queue, jobs)")  # fmt: skip


def dask_address(text: str) -> str:
    """argparse type of ``--dask``: Dask is installed and ``local:N`` has N >= 1 (checked before any work)."""
    import re

    from lesionbench.scaleout.cluster import DaskMissingError, require_dask

    try:
        require_dask()
    except DaskMissingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    m = re.fullmatch(r"local(:(\d+))?", text.strip())
    if m and (m.group(2) is None or int(m.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"{text!r}: a local cluster needs N >= 1 worker processes, e.g. local:2")
    return text.strip()


def dask_cluster_file(text: str) -> Path:
    """argparse type of ``--dask-cluster``: Dask and dask-jobqueue are installed and the spec file is valid."""
    from lesionbench.benchmark.errors import LesionbenchError
    from lesionbench.scaleout.cluster import read_spec, require_dask

    try:
        require_dask()
        read_spec(Path(text))
    except LesionbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(text)


@contextlib.contextmanager
def dask_client(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask client of ``--dask``/``--dask-cluster`` (closed, with a cluster made for it, on exit), else None."""
    address, spec = getattr(args, "dask", None), getattr(args, "dask_cluster", None)
    if address is None and spec is None:
        yield None
        return
    from lesionbench.scaleout.cluster import connect

    client = connect(address, cluster_file=spec)
    try:
        yield client
    finally:
        client.close()


def encoder_builder(args: argparse.Namespace, **options: Any) -> Any:
    """A picklable callable that builds ``get_encoder(args, **options)``'s encoder on a Dask worker."""
    from lesionbench.baselines.zoo.catalog import encoder_choice
    from lesionbench.benchmark.encoders.plugins import get_encoder as registered

    name, variant = encoder_choice(args.encoder, recipe=args.recipe, random_init=args.random_init, weights=args.weights)
    return functools.partial(registered, name, weights=args.weights, **variant, **options)


def add_tracking_options(
    p: argparse.ArgumentParser,
    *,
    uri_help: str = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    experiment: bool = True,
    local: str = "write the local results only",
) -> None:
    """MLflow: ``--tracking-uri``, ``--experiment`` (with ``experiment``) and ``--no-mlflow`` (help ``local``)."""
    p.add_argument("--tracking-uri", help=uri_help)
    if experiment:
        p.add_argument("--experiment", default="lesionbench", help="MLflow experiment name (default: lesionbench)")
    p.add_argument("--no-mlflow", action="store_true", help=local)


# -------------------------------------------------------------------------------------- output
def summary_table(result: Any) -> str:
    """Per fraction: each metric's mean +- sd across seeds, and the 95% CI of the first seed's run."""
    from lesionbench.benchmark.scoring.protocols import protocol_dir, protocol_of

    summary = result.summary()
    metrics = list(result.runs[0].metrics) if result.runs else []
    head = f"{result.task.name} / {result.encoder.name} / {protocol_dir(protocol_of(result), result.probe)}"
    if result.leaked_patients:
        head += f"   ({len(result.leaked_patients)} patients cross splits in this published split)"
    shots = {r.fraction: r.shots for r in result.runs if r.shots}
    lines = [head, f"{'shots' if shots else 'fraction':>8}  {'seeds':>5}  " + "  ".join(f"{m:>26}" for m in metrics)]
    for frac, ms in summary.items():
        n = sum(1 for r in result.runs if r.fraction == frac)
        cells = []
        for m in metrics:
            mean, sd = ms[m]
            first = next(r for r in result.runs if r.fraction == frac).metrics[m]
            sd_text = f"{sd:.3f}" if math.isfinite(sd) else "-"  # undefined: one defined seed, or every seed drew the same subset
            cells.append(f"{mean:.3f}±{sd_text} [{first.ci_low:.3f},{first.ci_high:.3f}]".rjust(26))
        lines.append(f"{shots[frac] if shots else frac:>8g}  {n:>5}  " + "  ".join(cells))
    lines.append("cells: mean±sd across seeds [95% bootstrap CI of the first seed]")
    return "\n".join(lines) + "\n"
