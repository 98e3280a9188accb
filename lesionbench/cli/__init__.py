"""The ``lesionbench`` command line.

One module per command (or family of commands): ``add_<name>(subparsers)`` declares its arguments and
``cmd_<name>(args) -> int`` runs it. Flags that several commands share are declared once in
:mod:`lesionbench.cli._common` and added by the commands that take them. A new command is one module plus
one entry in :data:`COMMANDS` (the order of ``lesionbench --help``). Library errors
(:class:`LesionbenchError`) are printed as one clear message with exit code 2; anything else is a bug and
keeps its traceback. Command modules import their heavy dependencies inside ``cmd_<name>``, so that
``import lesionbench.cli`` and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence

from lesionbench._version import __version__
from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.cli._common import HelpFormatter, finite_number, summary_table, warn_deprecated, whole_number
from lesionbench.cli._errors import install_redaction, os_error_line, redact, redacted_warnings, stdout_problem
from lesionbench.cli.compare import add_compare
from lesionbench.cli.server.db import add_db
from lesionbench.cli.demo import add_demo
from lesionbench.cli.encoders import add_encoders
from lesionbench.cli.server.evaluate_code import add_evaluate_image, add_evaluate_package, add_serve_contract
from lesionbench.cli.extract import add_extract
from lesionbench.cli.leaderboard import add_leaderboard
from lesionbench.cli.prepare import add_download, add_prepare
from lesionbench.cli.robustness import add_robustness
from lesionbench.cli.run import add_run
from lesionbench.cli.server.serve import add_serve, add_submissions
from lesionbench.cli.submit import add_select, add_submit
from lesionbench.cli.synth import add_synth
from lesionbench.cli.tasks import add_tasks
from lesionbench.cli.validate import add_validate
from lesionbench.cli.server.worker import add_worker

__all__ = ["COMMANDS", "build_parser", "console", "finite_number", "main", "summary_table", "whole_number"]

# MLflow phones home on first use unless told not to; lesionbench never wants that by default.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's HTTP defaults (7 retries, exponential backoff) wait minutes on an unreachable --tracking-uri
# after the local result is already written; a few seconds is enough to say so (override: set them).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

#: The sub-commands, in the order ``lesionbench --help`` lists them.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_demo,
    add_tasks,
    add_encoders,
    add_validate,
    add_prepare,
    add_run,
    add_compare,
    add_robustness,
    add_synth,
    add_download,
    add_extract,
    add_leaderboard,
    add_submit,
    add_select,
    add_serve,
    add_worker,
    add_db,
    add_submissions,
    add_evaluate_image,
    add_evaluate_package,
    add_serve_contract,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionbench",
        description="Benchmark 3D CT foundation models on cancer-imaging biomarker tasks.",
    )
    parser.add_argument("--version", action="version", version=f"lesionbench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    _log_options_after_commands(sub)
    _every_parser(parser, lambda p: setattr(p, "formatter_class", HelpFormatter))  # each option's default in --help
    return parser


def _every_parser(parser: argparse.ArgumentParser, do: Callable[[argparse.ArgumentParser], object]) -> None:
    do(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _every_parser(sub, do)


def _log_options_after_commands(sub: argparse._SubParsersAction) -> None:
    """``-v``/``-q`` also after the (sub-)command (``lesionbench run ... -q``), as users type them.

    Their default is SUPPRESS, so one not given there leaves the value given before the command.
    """
    for parser in dict.fromkeys(sub.choices.values()):
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            _log_options_after_commands(action)
        if not nested:
            parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (-vv for debug)")
            parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors")


def _quiet_third_party(record: logging.LogRecord) -> bool:
    """The console keeps lesionbench's own INFO lines (and its plug-ins', named lesionbench*) and every library's
    warnings; a library's INFO lines (PyRadiomics' per lesion, NumExpr's thread count) only with -vv."""
    return record.levelno >= logging.WARNING or record.name.startswith("lesionbench")


def _quiet_mlflow() -> None:
    """MLflow logs through a stderr handler of its own, not the root's, at INFO ("Creating initial MLflow database
    tables..." for a new store): at WARNING unless $MLFLOW_LOGGING_LEVEL says otherwise. MLflow reads the variable
    when imported (the commands import it when they run); where it already is, its logger's level is set."""
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        return
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    if "mlflow" in sys.modules:
        logging.getLogger("mlflow").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2, message printed), --help and --version (0): an exit code like the rest
        return exc.code if isinstance(exc.code, int) else 2
    if (closed := stdout_problem()) is not None:  # before any work: its results could not be reported
        sys.stderr.write(f"error: {closed}\n")
        return 2
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # PyRadiomics logs a line per lesion at INFO (and resets its logger's level on import); with the
        # progress bar that buries the one error message, so the console handler drops those below WARNING
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_third_party)
        _quiet_mlflow()
    warn_deprecated(args, logging.getLogger("lesionbench.cli"))
    install_redaction()  # no output line may carry a URI's password or token (urllib3 quotes request URLs)
    try:
        with redacted_warnings():
            return int(args.func(args) or 0)
    except LesionbenchError as exc:
        sys.stderr.write(f"error: {redact(str(exc))}\n")
        return 2
    except OSError as exc:  # the environment (read-only, full or non-folder output path, closed pipe), not a bug
        if exc.errno == errno.EPIPE:
            _stdout_to_devnull()
        sys.stderr.write(f"error: {os_error_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept (caches and logged runs); re-run to resume.\n")
        return 130


def _stdout_to_devnull() -> None:
    """After a broken pipe: later writes and the flush at exit go nowhere instead of raising again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def console() -> None:
    """The ``lesionbench`` command: :func:`main`, then a quick exit.

    Every result is written and closed by then; ``gc.freeze()`` only spares the interpreter's shutdown the
    garbage-collector passes over torch's and pandas' module objects (~0.2 s of every command)."""
    import gc

    rc = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (BrokenPipeError, ValueError):  # the reader of a pipe stopped: nothing left to say to it
            _stdout_to_devnull()
    gc.freeze()
    raise SystemExit(rc)

