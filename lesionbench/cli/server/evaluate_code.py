"""``lesionbench evaluate-image`` / ``evaluate-package``: score a code submission run sandboxed on hidden data;
``lesionbench serve-contract``: the entry command inside the sandbox (docs/code_submissions.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lesionbench.cli._common import add_n_boot, add_results_dir, add_sweep_options, finite_number, summary_table, whole_number

logger = logging.getLogger("lesionbench")

_HIDDEN = "hidden:"


def _add_common(p: argparse.ArgumentParser, engines: list[str]) -> None:
    p.add_argument("--task", required=True,
                   help="a registered task on its prepared folder (--data-dir), or hidden:NAME for synthetic task NAME on the "
                   "organiser's hidden cohort (seed in $LESIONBENCH_DATA/hidden/seed, drawn on first use)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, help="the task's prepared data folder (its labels stay outside the sandbox)")
    add_results_dir(p, old_out=True)
    p.add_argument("--engine", choices=engines, default=engines[0], help=f"sandbox engine (default: {engines[0]})")
    p.add_argument("--engine-arg", action="append", default=[], metavar="FLAG", help="extra flag for the engine's run command (repeatable)")
    p.add_argument("--memory-mb", type=whole_number(64), default=4096, help="memory limit in MB")
    p.add_argument("--pids", type=whole_number(8), default=256, help="process limit")
    p.add_argument("--cpus", type=finite_number, default=2.0, help="CPU limit")
    p.add_argument("--timeout", type=finite_number, default=3600.0, help="wall-time limit in seconds")
    p.add_argument("--output-mb", type=whole_number(1), default=512, help="cap in MB on what /output may hold")
    p.add_argument("--gpus", default="", help='GPUs: "all" or indices "0,1" (default: none)')
    p.add_argument("--phase", choices=["sanity", "final"], default="final", help="sanity: show the submission's log tail on failure")
    p.add_argument("--probe", default="linear", help="probe: linear or knn")
    add_sweep_options(p)
    add_n_boot(p, help="bootstrap resamples for the CIs")


def add_evaluate_image(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-image", help="Score an encoder submitted as an OCI image, run sandboxed on hidden data.",
                       description="Load an image archive (podman save / docker save) or use an image reference already on the engine, "
                       "run it without network on every lesion of the task (labels never enter), check its embeddings and score "
                       "them with the task's probes. Results are ordinary results marked as computed on hidden data.")  # fmt: skip
    p.add_argument("archive", help="image archive (.tar) or a local image reference")
    _add_common(p, ["podman", "docker", "apptainer"])
    p.set_defaults(func=cmd_evaluate_code, kind="image")


def add_evaluate_package(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-package", help="Score an encoder submitted as Python wheels, run in bubblewrap on hidden data.",
                       description="Install the wheels (dependencies included) offline into a venv on the sandbox's base, serve the "
                       "encoder their lesionbench.encoders entry point registers through the contract, and score it.")  # fmt: skip
    p.add_argument("archive", metavar="WHEEL", help="a .whl file or a folder of .whl files")
    p.add_argument("--encoder", help="the entry point to serve when the wheels declare several")
    _add_common(p, ["bubblewrap"])
    p.set_defaults(func=cmd_evaluate_code, kind="package")


def add_serve_contract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-contract", help="(inside a sandbox) serve an encoder through the code-submission contract.",
                       description="Read /input/lesions.csv, extract every lesion's features with the encoder, write "
                       "/output/embeddings and /output/model.json (contract lesionbench-sandbox/1).")  # fmt: skip
    p.add_argument("--encoder", help="registered encoder (default: $LESIONBENCH_ENCODER)")
    # --input/--output name the contract's /input and /output folders (docs/code_submissions.md): contract names, kept
    p.add_argument("--input", type=Path, default=Path("/input"), help="contract input folder")
    p.add_argument("--output", type=Path, default=Path("/output"), help="contract output folder")
    p.add_argument("--batch-size", type=whole_number(1), help="patches per forward pass")
    p.set_defaults(func=cmd_serve_contract)


def cmd_serve_contract(args: argparse.Namespace) -> int:
    from lesionbench.sandbox.serve import serve

    n = serve(args.encoder, input_dir=args.input, output_dir=args.output, batch_size=args.batch_size)
    logger.info("wrote embeddings of %d lesions", n)
    return 0


def _task(args: argparse.Namespace):
    """The task whose lesions the submission encodes: its labels stay outside the sandbox either way, so the
    results count as computed on hidden data."""
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.plugins import get_task

    if args.task.startswith(_HIDDEN):
        if args.data_dir is not None:
            raise ConfigurationError("--task hidden:NAME uses the organiser's hidden cohort; leave out --data-dir.")
        from lesionbench.sandbox.hidden import hidden_task

        return hidden_task(args.task[len(_HIDDEN) :], progress=not args.quiet)
    return get_task(args.task, data_dir=args.data_dir)


def cmd_evaluate_code(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.scoring.splits import DEFAULT_FRACTIONS, DEFAULT_SEEDS
    from lesionbench.sandbox.evaluate import run_code_submission
    from lesionbench.sandbox.runner import EngineConfig, Limits

    if args.kind == "image" and not Path(args.archive).exists() and "/" not in args.archive and ":" not in args.archive:
        raise ConfigurationError(f"{args.archive}: no such image archive (and not an image reference such as localhost/NAME:TAG).")
    if args.kind == "package" and not Path(args.archive).exists():
        raise ConfigurationError(f"{args.archive}: no such wheel or folder of wheels.")
    task = _task(args)
    limits = Limits(memory_mb=args.memory_mb, pids=args.pids, cpus=args.cpus, wall_s=args.timeout, output_mb=args.output_mb, gpus=args.gpus)
    engine = EngineConfig.named(args.engine, args.engine_arg)
    res = run_code_submission(args.archive, kind=args.kind, task=task, out_dir=args.results, engine=engine, limits=limits,
                              encoder=getattr(args, "encoder", None), hidden=True, probe=args.probe, n_boot=args.n_boot,
                              fractions=tuple(args.fractions or DEFAULT_FRACTIONS),
                              seeds=tuple(args.seeds if args.seeds is not None else DEFAULT_SEEDS))  # fmt: skip
    if res.result is None:
        sys.stderr.write(f"error: submission failed: {json.dumps(res.outcome.for_participant(args.phase))}\n")
        return 3 if res.outcome.counts_against_quota else 4
    if not args.quiet:
        sys.stdout.write(summary_table(res.result))
    logger.info("wrote %s", res.result_dir)
    return 0
