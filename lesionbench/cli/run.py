"""``lesionbench run``: score an encoder on a task (features, limited-label probes, bootstrap CIs, MLflow)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lesionbench.cli._common import (
    TASK_HELP,
    add_cache_dir,
    add_data_dir,
    add_encoder_options,
    add_n_boot,
    add_parallel_options,
    add_results_dir,
    add_shots_options,
    add_sweep_options,
    add_tracking_options,
    add_val_option,
    dask_client,
    encoder_builder,
    finite_number,
    get_encoder,
    summary_table,
    whole_number,
)


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="Score an encoder on a task: features (cached), limited-label probes, bootstrap CIs, MLflow.",
        description="Extract features through the cache, fit a fresh probe per (training fraction, seed), score the "
        "test split with 95% bootstrap CIs, write result.json + predictions + subsets under --results, and log the runs "
        "to MLflow (default: sqlite file mlflow.db in the working directory).",
    )
    p.add_argument("--task", required=True, nargs="+", help=TASK_HELP + "; several: every (task, encoder) pair in one call")
    add_encoder_options(p, help="encoder name; several: each on every --task (with --dask every pair shares the workers)", several=True)
    add_data_dir(p)
    add_sweep_options(p)
    p.add_argument("--probe", default="linear", help="probe: linear or knn (cosine, distance-weighted k-NN, k chosen on validation)")
    add_shots_options(p)
    p.add_argument("--adapt", choices=["finetune"],
                   help="finetune: train the encoder's own network end to end on each training subset (encoders with a torch_module(); "
                   "see --ft-epochs, --ft-lr, --ft-batch-size)")  # fmt: skip
    p.add_argument("--ft-epochs", type=whole_number(1), help="fine-tuning epochs, with early stopping on validation (default: 50)")
    p.add_argument("--ft-lr", type=finite_number, help="fine-tuning learning rate, AdamW (default: 1e-4)")
    p.add_argument("--ft-batch-size", type=whole_number(2), help="fine-tuning batch size (default: 16)")
    add_n_boot(p, help="bootstrap resamples of the test set (default: 1000; 0: point estimates without CIs)")
    p.add_argument("--bootstrap-unit", choices=["patient", "lesion"], default="patient",
                   help="resample whole patients (lesions of a patient are correlated) or single lesions")  # fmt: skip
    add_val_option(p, help="what tunes each limited-label run (C, k, threshold, Cox penalty, early stopping): 'fraction' a "
                   "validation subset with the run's training fraction (k-shot: as many shots from the validation split); "
                   "'full' the whole validation split (the paper's protocol)")  # fmt: skip
    add_results_dir(p, old_out=True)
    add_cache_dir(p)
    add_parallel_options(p, workers="parallel processes for reading images",
                         jobs="(fraction, seed) runs fitted in parallel processes: probes, and a trainable encoder's training "
                         "(default: 1; the results are the same for any number)")  # fmt: skip
    p.add_argument("--batch-size", type=whole_number(1), help="patches per encoder call")
    add_tracking_options(p)
    p.add_argument("--no-resume", action="store_true",
                   help="recompute every (fraction, seed) run; by default runs finished earlier into --results with the same "
                   "task data, features and settings are reused (a killed sweep resumes)")  # fmt: skip
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.benchmark.scoring.splits import DEFAULT_FRACTIONS, DEFAULT_SEEDS
    from lesionbench.scaleout.sweep import evaluate_many

    if args.fractions and (args.shots or args.shots_total):
        raise ConfigurationError("--fractions and --shots/--shots-total choose the training sets two ways; give one.")
    ft = {k: v for k, v in (("epochs", args.ft_epochs), ("lr", args.ft_lr), ("batch_size", args.ft_batch_size)) if v is not None}
    if ft and not args.adapt:
        raise ConfigurationError("--ft-epochs/--ft-lr/--ft-batch-size set how --adapt finetune trains; add --adapt finetune or leave them out.")
    if args.data_dir is not None and len(args.task) > 1:
        raise ConfigurationError("--data-dir names one task's folder; with several --task leave it out (each task's default folder is used).")
    tasks = [get_task(name, data_dir=args.data_dir) for name in dict.fromkeys(args.task)]
    one = [argparse.Namespace(**{**vars(args), "encoder": name}) for name in dict.fromkeys(args.encoder)]
    encoders = [get_encoder(a) for a in one]
    options: dict[str, Any] = dict(
        fractions=tuple(args.fractions or DEFAULT_FRACTIONS),
        seeds=tuple(args.seeds if args.seeds is not None else DEFAULT_SEEDS),
        probe=args.probe,
        out_dir=args.results,
        cache_dir=args.cache_dir,
        n_boot=args.n_boot,
        progress=not args.quiet,
        batch_size=args.batch_size,
        workers=args.workers,
        bootstrap_unit=args.bootstrap_unit,
        resume=not args.no_resume,
        jobs=args.jobs,
        val=args.val,
        shots=args.shots,
        shots_total=args.shots_total,
        adapt=args.adapt,
        adapt_options=ft,
    )
    if args.adapt == "finetune":
        from lesionbench.baselines.finetune import finetune

        options["trainer"] = finetune
    with dask_client(args) as client:
        if client is None:  # one (task, encoder) after the other, in this process
            results = evaluate_many(tasks, encoders, **options)
        else:  # every pair's extraction and runs on the workers at once
            results = evaluate_many(tasks, encoders, client=client, builds=[encoder_builder(a) for a in one], **options)
    for result in results:
        _report(args, result)
    return 0


def _report(args: argparse.Namespace, result: Any) -> None:
    """MLflow logging, the summary table and the results folder of one (task, encoder)."""
    from lesionbench.benchmark.scoring.scorer import result_folder

    rdir = result_folder(args.results, result)
    if not args.no_mlflow:
        from lesionbench.benchmark.tracking.mlflow_sink import log_result, redact_uri, resolve_tracking_uri

        run_id = log_result(result, rdir, tracking_uri=args.tracking_uri, experiment=args.experiment)
        if run_id:
            sys.stdout.write(f"MLflow: {redact_uri(resolve_tracking_uri(args.tracking_uri))} experiment {args.experiment!r}, parent run {run_id}\n")
    sys.stdout.write(summary_table(result))
    sys.stdout.write(f"results: {rdir}\n")
