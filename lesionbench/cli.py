"""The ``lesionbench`` command line.

Each sub-command is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_cmd_<name>(args) -> int`` runs it. Library errors (:class:`LesionbenchError`) are printed as one
clear message with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lesionbench import __version__
from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.cli_robustness import add_robustness

logger = logging.getLogger("lesionbench")

# MLflow phones home on first use unless told not to; lesionbench never wants that by default.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's HTTP defaults (7 retries, exponential backoff) wait minutes on an unreachable --tracking-uri
# after the local result is already written; a few seconds is enough to say so (override: set them).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


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


# --------------------------------------------------------------------------------------- tasks
def _add_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="List the registered tasks.")
    p.add_argument("action", nargs="?", default="list", choices=["list"])
    p.set_defaults(func=_cmd_tasks)


def _cmd_tasks(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.plugins import TASKS

    rows = []
    for name in TASKS.names():
        factory = TASKS.get(name)
        meta = getattr(factory, "meta", None)
        if meta is None:
            rows.append((name, "?", "?", "", TASKS.origin(name)))
        else:
            rows.append((name, meta.version, str(meta.kind), meta.main_metric, meta.description))
    width = max(len(r[0]) for r in rows) if rows else 4
    sys.stdout.write(f"{'name':<{width}}  {'version':<16} {'kind':<10} {'main metric':<18} description\n")
    for name, version, kind, metric, desc in rows:
        sys.stdout.write(f"{name:<{width}}  {version:<16} {kind:<10} {metric:<18} {desc}\n")
    return 0


def _add_encoders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help="List the encoders: recipe, embedding size, licences, weights present (no network).")
    p.add_argument("action", nargs="?", default="list", choices=["list"])
    p.set_defaults(func=_cmd_encoders)


def _cmd_encoders(args: argparse.Namespace) -> int:
    from lesionbench.baselines._zoo_catalog import format_rows, rows

    sys.stdout.write(format_rows(rows()) + "\n")
    return 0


# ------------------------------------------------------------------------------------ validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="Check a lesion manifest and list every problem found.")
    p.add_argument("manifest", type=Path, help="manifest CSV or Parquet")
    p.add_argument("--task", help="check the label columns and classes of this task")
    p.add_argument("--no-files", action="store_true", help="do not check the image files (that they exist, their headers, seeds inside)")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.manifest import load_manifest
    from lesionbench.benchmark.plugins import TASKS

    meta = TASKS.get(args.task).meta if args.task else None
    df = load_manifest(args.manifest, meta=meta, check_files=not args.no_files, check_images=not args.no_files)
    n_pat = df["patient_id"].nunique()
    counts = df["split"].value_counts().to_dict()
    sys.stdout.write(
        f"{args.manifest}: valid; {len(df)} lesions, {n_pat} patients, "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + "\n"
    )
    return 0



# ------------------------------------------------------------------------------------- prepare
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="Build a task's volumes and manifest from the public raw data.",
        description="Build a task's volumes and manifest from the public raw data. Resumable and idempotent: "
        "files already converted are kept. Task-specific options are passed to the task's prepare step; "
        "a task that does not take one says so.",
    )
    p.add_argument("task", help="task name (see `lesionbench tasks list`)")
    p.add_argument("--raw", type=Path, help="folder with the raw public download")
    p.add_argument("--out", type=Path, help="output folder (default: $LESIONBENCH_DATA/<task>)")
    p.add_argument("--split", help="split variant, e.g. grouped (default) or fmcib (the published split)")
    p.add_argument("--label-variant", help="label variant, e.g. fmcib (the published labels)")
    p.add_argument("--labels-only", action="store_true", default=None, help="write the label table only, no images")
    p.add_argument("--luna16-annotations", type=Path, help="LUNA16 annotations.csv (or any CSV with a seriesuid column)")
    p.add_argument("--clinical", type=Path, help="the collection's clinical table")
    p.add_argument("--workers", type=whole_number(1), help="parallel worker processes")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.paths import data_root
    from lesionbench.benchmark.plugins import TASKS

    factory = TASKS.get(args.task)
    prepare = getattr(factory, "prepare", None)
    if prepare is None:
        raise ConfigurationError(f"Task {args.task!r} has no prepare step: its data ships with it or is made by `lesionbench synth`.")
    options = {
        k: v
        for k, v in vars(args).items()
        if k in ("split", "label_variant", "labels_only", "luna16_annotations", "clinical", "workers") and v is not None
    }
    out = args.out or data_root() / args.task
    try:
        manifest = prepare(raw=args.raw, out=out, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigurationError(f"Task {args.task!r} does not take option(s) {sorted(options)}: {exc}.") from exc
    sys.stdout.write(f"prepared {args.task}: {manifest}\n")
    return 0


# --------------------------------------------------------------------------------- leaderboard
def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="Build the leaderboard (HTML page, Markdown, JSON) from the logged runs.")
    actions = p.add_subparsers(dest="leaderboard_action", metavar="ACTION")
    actions.required = True
    b = actions.add_parser(
        "build",
        help="Write index.html, leaderboard.md, leaderboard.json and its schema.",
        description="Read results from an MLflow store (parent runs' result.json) and/or a results folder and write a "
        "self-contained leaderboard page, Markdown and JSON. Published FMCIB numbers are shown as reference rows.",
    )
    b.add_argument("--tracking-uri", help="MLflow tracking URI to read runs from (default: $MLFLOW_TRACKING_URI; with neither option: ./mlflow.db if present)")
    b.add_argument("--organiser-dir", type=Path, help="organiser store that --reveal reads the final private scores from (default: lesionbench-organiser beside --results or the sqlite MLflow store)")
    b.add_argument("--results", type=Path, help="results folder of `lesionbench run --out` (with neither option: ./lesionbench-results if present)")
    b.add_argument("--out", type=Path, required=True, help="output folder")
    b.add_argument("--reveal", action="store_true", help="show the submissions' private scores (organisers only)")
    b.add_argument("--n-boot", type=whole_number(0), default=1000, help="bootstrap resamples for rank intervals and paired tests (default 1000)")
    b.add_argument("--n-perm", type=whole_number(0), default=1000, help="permutations for the paired tests (default 1000)")
    b.add_argument("--no-published", action="store_true", help="leave out the published reference rows")
    b.add_argument("--experiment", action="append", metavar="NAME",
                   help="MLflow experiment to read (repeatable; default: lesionbench, the one `run` and `submit` log to)")  # fmt: skip
    b.set_defaults(func=_cmd_leaderboard_build)


def _cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from lesionbench.leaderboard import build_leaderboard

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    results = args.results
    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if tracking is None and results is None:
        # What `lesionbench run` writes by default: ./mlflow.db and ./lesionbench-results.
        tracking = "sqlite:///mlflow.db" if Path("mlflow.db").is_file() else None
        results = Path("lesionbench-results") if Path("lesionbench-results").is_dir() else None
    index = build_leaderboard(
        args.out, tracking_uri=tracking, results_dir=results, reveal=args.reveal,
        n_boot=args.n_boot, n_perm=args.n_perm, include_published=not args.no_published, organiser_dir=args.organiser_dir,
        experiments=args.experiment,
    )
    sys.stdout.write(f"leaderboard written: open {index.resolve().as_uri()}\n")
    return 0


# -------------------------------------------------------------------------------------- submit
def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="Score a predictions (or features) file on a task's hidden test labels.",
        description="Validate an untrusted predictions CSV (lesion_id + score columns: score_<class> for multiclass, "
        "score for binary, risk for survival; every test lesion exactly once), score it on the public and private parts "
        "of the test set, and record it like any run. With --features, a CSV of lesion_id + feature columns for every "
        "lesion is scored by the standard linear probe. Every problem is reported at once; nothing is written for a rejected file.",
    )
    p.add_argument("--task", required=True, help="task name (see `lesionbench tasks list`)")
    p.add_argument("predictions", nargs="?", type=Path, help="predictions CSV")
    p.add_argument("--features", type=Path, help="features CSV instead of predictions")
    p.add_argument("--name", required=True, help="submission name shown on the leaderboard (letters, digits, space, ._+()-)")
    p.add_argument("--data-dir", type=Path, help="the task's prepared data folder (default: $LESIONBENCH_DATA/<task>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI to log to (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="write the local result only")
    p.add_argument("--results", type=Path, default=Path("lesionbench-results"), help="results folder (default: ./lesionbench-results)")
    p.add_argument("--organiser-dir", type=Path, help="organiser-only store of private scores, labelled predictions and the quota ledger (default: lesionbench-organiser beside --results)")
    p.add_argument("--organiser-tracking-uri", help="MLflow store for the organiser's runs (default: sqlite mlflow.db in the organiser folder; none with --no-mlflow)")
    p.add_argument("--challenge", type=Path, help="challenge configuration, .toml or .json (default: challenge.toml/.json in the organiser folder, else 5 a day, 100 in total, 2 selected)")
    p.set_defaults(func=_cmd_submit)


def _cmd_submit(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.plugins import get_task
    from lesionbench.leaderboard import submit

    if (args.predictions is None) == (args.features is None):
        raise ConfigurationError("Give either a predictions CSV or --features FILE (exactly one).")
    from lesionbench.benchmark.tracking import resolve_tracking_uri
    from lesionbench.leaderboard.organiser import organiser_tracking_default, resolve_organiser_dir

    tracking = None if args.no_mlflow else resolve_tracking_uri(args.tracking_uri)
    organiser = resolve_organiser_dir(args.organiser_dir, results_dir=args.results)
    organiser_tracking = None if args.no_mlflow else (args.organiser_tracking_uri or organiser_tracking_default(organiser))
    task = get_task(args.task, data_dir=args.data_dir)
    kind = "features" if args.features is not None else "predictions"
    outcome = submit(
        task, args.features or args.predictions, name=args.name, kind=kind, results_dir=args.results, tracking_uri=tracking,
        organiser_dir=organiser, organiser_tracking_uri=organiser_tracking, challenge=args.challenge,
    )  # fmt: skip
    main = next(iter(outcome.score.public))  # the task's main metric comes first
    pub = outcome.score.public[main]
    sys.stdout.write(
        f"submission {outcome.submission_id} of {args.name!r} accepted for {args.task}: public {main} = {pub.value:.4f} "
        f"(95% CI {pub.ci_low:.4f}-{pub.ci_high:.4f}, {outcome.score.n_public} lesions); the private score is kept for the organiser.\n"
    )
    if not outcome.on_leaderboard:
        sys.stdout.write("the team's better earlier public score stays on the leaderboard.\n")
    if outcome.result_path is not None:
        sys.stdout.write(f"result: {outcome.result_path}\n")
    if outcome.run_id is not None:
        sys.stdout.write(f"MLflow run: {outcome.run_id}\n")
    return 0


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="Choose which of a team's submissions count for the final, private ranking.",
        description="Select up to max_selected (default 2) of the team's submissions by id (as printed by `submit`); they "
        "replace an earlier choice. Without a choice, the team's best public scores count. --list shows the team's "
        "submissions and which count; --clear returns to the default.",
    )
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--name", required=True, help="the team name, exactly as submitted")
    p.add_argument("ids", nargs="*", help="submission ids, e.g. sub-0003 sub-0007")
    p.add_argument("--list", action="store_true", help="list the team's submissions and which count")
    p.add_argument("--clear", action="store_true", help="drop the selection: the best public scores count")
    p.add_argument("--data-dir", type=Path, help="the task's prepared data folder (default: $LESIONBENCH_DATA/<task>)")
    p.add_argument("--results", type=Path, default=Path("lesionbench-results"), help="results folder (locates the default organiser folder)")
    p.add_argument("--organiser-dir", type=Path, help="organiser store (default: lesionbench-organiser beside --results)")
    p.add_argument("--challenge", type=Path, help="challenge configuration (default: the organiser folder's)")
    p.set_defaults(func=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.plugins import get_task
    from lesionbench.leaderboard.organiser import resolve_organiser_dir, select, team_submissions
    from lesionbench.leaderboard.submission_file import name_slug

    if sum((bool(args.ids), args.list, args.clear)) != 1:
        raise ConfigurationError("Give submission ids to select, or --list, or --clear (exactly one).")
    meta = get_task(args.task, data_dir=args.data_dir).meta
    where = {"task": meta.name, "version": meta.version, "team": args.name, "slug": name_slug(args.name), "challenge": args.challenge}
    organiser = resolve_organiser_dir(args.organiser_dir, results_dir=args.results)
    if not args.list:
        chosen = select(organiser, ids=args.ids, **where)
        sys.stdout.write(f"{args.name!r} on {meta.name}: " + (f"selected {', '.join(chosen)}.\n" if chosen else "selection cleared; the best public scores count.\n"))
    rows, how = team_submissions(organiser, **where)
    for r in rows:
        value = "-" if r["public"] is None else f"{r['public']:.4f}"
        sys.stdout.write(f"{'*' if r['counts'] else ' '} {r['id']}  {r['submitted']}  {r['kind']:<11}  public {r['metric']} {value}\n")
    sys.stdout.write(f"* counts for the final ranking: {how}.\n")
    return 0


# ------------------------------------------------------------------------------------- extract
def _add_encoder_variant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", choices=("official", "tib"),
                   help="zoo encoders: the model's own preprocessing (official, the default) or TumorImagingBench's (tib)")  # fmt: skip
    p.add_argument("--random-init", action="store_true",
                   help="the encoder's architecture with seeded random weights: the control for what pre-training adds")  # fmt: skip


def _get_encoder(args: argparse.Namespace, **options: Any) -> Any:
    """The encoder of ``--encoder`` with ``--weights``, ``--recipe`` and ``--random-init``."""
    from lesionbench.baselines._zoo_catalog import encoder_choice
    from lesionbench.benchmark.plugins import get_encoder

    name, variant = encoder_choice(args.encoder, recipe=args.recipe, random_init=args.random_init, weights=args.weights)
    return get_encoder(name, weights=args.weights, **variant, **options)


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="Extract lesion features with an encoder (a drop-in for fmcib.run.get_features).",
        description="Extract lesion features. Input: a CSV/Parquet with image_path, coordX, coordY, coordZ (LPS mm; "
        "other columns pass through; relative image paths resolve against the table's folder), or --task NAME. "
        "Output: the input columns, then the feature columns pred_0 .. pred_{d-1}. Features are cached on disk "
        "(resumable: a re-run computes only what is missing).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("table", nargs="?", type=Path, help="lesion table (.csv or .parquet)")
    src.add_argument("--task", help="extract a registered task's manifest instead of a table")
    p.add_argument("--data-dir", type=Path, help="with --task: the task's data folder")
    p.add_argument("--encoder", default="fmcib", help="registered encoder name (default: fmcib)")
    p.add_argument("--weights", type=Path, help="weights file for the encoder (fmcib: model_weights.torch)")
    _add_encoder_variant(p)
    p.add_argument("--batch-size", type=whole_number(1), help="patches per forward pass")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (faster; features move by ~0.4%%)")
    p.add_argument("--workers", type=whole_number(1), default=1, help="processes cutting patches / reading images in parallel")
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: $LESIONBENCH_CACHE/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--skip-failed", action="store_true",
                   help="write the output even when some lesions fail (seed outside its image, unreadable file): their "
                   "features are empty (NaN) and OUTPUT.errors.csv says why; by default nothing is written until they are fixed")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, required=True, help="output table (.csv or .parquet)")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.features import ImagePrefetcher, check_output_columns, extract_features, write_feature_table
    from lesionbench.benchmark.manifest import read_table, resolve_paths
    from lesionbench.benchmark.plugins import get_task

    out_suffix = args.output.suffix.lower()
    if out_suffix not in (".csv", ".parquet", ".pq"):
        raise ConfigurationError(f"Output {args.output} must end in .csv or .parquet.")
    if args.task:
        task = get_task(args.task, data_dir=args.data_dir)
        table = task.manifest()
        lesions = table
    else:
        path: Path = args.table
        table = read_table(path)
        # relative paths resolve against the table's folder; the output keeps the input columns as given
        lesions = resolve_paths(table, path.parent.resolve())
    check_output_columns(table)  # before any work
    # Read the first images while the encoder is built (torch import, weights): both take seconds and
    # SimpleITK reads without holding the GIL. Up to PREFETCH_BYTES of pixels wait at start-up, one image
    # afterwards; images whose lesions turn out to be cached are dropped from the plan by extract_features.
    images = ImagePrefetcher(lesions["image_path"].astype(str)) if args.workers <= 1 else None
    failed: dict[int, str] | None = {} if args.skip_failed else None
    try:
        encoder = _get_encoder(args, device=args.device, bf16=args.bf16)
        if args.batch_size and hasattr(encoder, "batch_size"):
            encoder.batch_size = args.batch_size  # patches per forward pass
        feats = extract_features(
            lesions,
            encoder,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
            workers=args.workers,
            cache=not args.no_cache,
            progress=not args.quiet,
            images=images,
            failed=failed,
        )
    finally:
        if images is not None:
            images.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_feature_table(table.reset_index(drop=True), feats, args.output)
    sys.stdout.write(f"{args.output}: {len(feats)} lesions x {feats.shape[1]} features ({encoder.meta.name})\n")
    errors = args.output.with_name(args.output.name + ".errors.csv")
    if failed:
        import pandas as pd

        ids = table["lesion_id"].reset_index(drop=True) if "lesion_id" in table.columns else None
        from lesionbench.benchmark.host import atomic_write

        rows = sorted(failed)
        report = pd.DataFrame({
            "row": [r + 1 for r in rows],
            "lesion_id": [ids[r] for r in rows] if ids is not None else "",
            "image_path": [lesions["image_path"].iloc[r] for r in rows],
            "reason": [failed[r] for r in rows],
        })  # fmt: skip
        atomic_write(errors, lambda tmp: report.to_csv(tmp, index=False))
        logger.warning("%d of %d lesions failed; their features are NaN in %s. Why, row by row: %s", len(rows), len(feats), args.output, errors)
    elif errors.exists():
        errors.unlink()  # from an earlier run of the same output: nothing failed this time
    return 0


# ----------------------------------------------------------------------------------------- run
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="Score an encoder on a task: features (cached), limited-label probes, bootstrap CIs, MLflow.",
        description="Extract features through the cache, fit a fresh probe per (training fraction, seed), score the "
        "test split with 95%% bootstrap CIs, write result.json + predictions + subsets under --out, and log the runs "
        "to MLflow (default: sqlite file mlflow.db in the working directory).",
    )
    p.add_argument("--task", required=True, help="task name (see `lesionbench tasks list`)")
    p.add_argument("--encoder", required=True, help="encoder name")
    p.add_argument("--weights", type=Path, help="encoder weights file (encoders that take one)")
    _add_encoder_variant(p)
    p.add_argument("--data-dir", type=Path, help="the task's data folder (default: $LESIONBENCH_DATA/<task>)")
    p.add_argument("--fractions", type=finite_number, nargs="+", help="training fractions (default: 1.0 0.5 0.2 0.1)")
    p.add_argument("--seeds", type=whole_number(None), nargs="+", help="subset seeds (default: 0 1 2 3 4)")
    p.add_argument("--probe", default="linear", help="probe: linear (default) or knn (cosine, distance-weighted k-NN, k chosen on validation)")
    shots = p.add_mutually_exclusive_group()
    shots.add_argument("--shots", type=whole_number(1), nargs="+", metavar="K",
                       help="k-shot protocol: K labelled lesions per class (one per patient, nested, seeded) instead of --fractions")  # fmt: skip
    shots.add_argument("--shots-total", type=whole_number(1), nargs="+", metavar="N", help="k-shot protocol with a total budget of N lesions over all classes")
    p.add_argument("--adapt", choices=["finetune"],
                   help="finetune: train the encoder's own network end to end on each training subset (encoders with a torch_module(); "
                   "see --ft-epochs, --ft-lr, --ft-batch-size)")  # fmt: skip
    p.add_argument("--ft-epochs", type=whole_number(1), help="fine-tuning epochs (default 50, early stopping on validation)")
    p.add_argument("--ft-lr", type=finite_number, help="fine-tuning learning rate (AdamW; default 1e-4)")
    p.add_argument("--ft-batch-size", type=whole_number(2), help="fine-tuning batch size (default 16)")
    p.add_argument("--n-boot", type=whole_number(0), default=1000, help="bootstrap resamples of the test set (default: 1000; 0: point estimates without CIs)")
    p.add_argument("--bootstrap-unit", choices=["patient", "lesion"], default="patient",
                   help="resample whole patients (default; lesions of a patient are correlated) or single lesions")  # fmt: skip
    p.add_argument("--val", choices=["fraction", "full"], default="fraction",
                   help="what tunes each limited-label run (C, k, threshold, Cox penalty, early stopping): 'fraction' (default) a "
                   "validation subset with the run's training fraction (k-shot: as many shots from the validation split); "
                   "'full' the whole validation split (the paper's protocol)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("lesionbench-results"), help="results folder (default: ./lesionbench-results)")
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: $LESIONBENCH_CACHE/features)")
    p.add_argument("--workers", type=whole_number(1), default=1, help="parallel processes for reading images")
    p.add_argument("--jobs", type=whole_number(1), default=1,
                   help="(fraction, seed) runs fitted in parallel processes: probes, and a trainable encoder's training "
                   "(default: 1; the results are the same for any number)")  # fmt: skip
    p.add_argument("--batch-size", type=whole_number(1), help="patches per encoder call")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--experiment", default="lesionbench", help="MLflow experiment name (default: lesionbench)")
    p.add_argument("--no-mlflow", action="store_true", help="write the local results only")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute every (fraction, seed) run; by default runs finished earlier into --out with the same "
                   "task data, features and settings are reused (a killed sweep resumes)")  # fmt: skip
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.plugins import get_task
    from lesionbench.benchmark.scorer import evaluate, result_folder
    from lesionbench.benchmark.splits import DEFAULT_FRACTIONS, DEFAULT_SEEDS

    if args.fractions and (args.shots or args.shots_total):
        raise ConfigurationError("--fractions and --shots/--shots-total choose the training sets two ways; give one.")
    ft = {k: v for k, v in (("epochs", args.ft_epochs), ("lr", args.ft_lr), ("batch_size", args.ft_batch_size)) if v is not None}
    if ft and not args.adapt:
        raise ConfigurationError("--ft-epochs/--ft-lr/--ft-batch-size set how --adapt finetune trains; add --adapt finetune or leave them out.")
    task = get_task(args.task, data_dir=args.data_dir)
    encoder = _get_encoder(args)
    result = evaluate(
        task,
        encoder,
        fractions=tuple(args.fractions or DEFAULT_FRACTIONS),
        seeds=tuple(args.seeds if args.seeds is not None else DEFAULT_SEEDS),
        probe=args.probe,
        out_dir=args.out,
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
    rdir = result_folder(args.out, result)
    run_id = None
    if not args.no_mlflow:
        from lesionbench.benchmark.tracking import log_result, redact_uri, resolve_tracking_uri

        run_id = log_result(result, rdir, tracking_uri=args.tracking_uri, experiment=args.experiment)
        if run_id:
            sys.stdout.write(f"MLflow: {redact_uri(resolve_tracking_uri(args.tracking_uri))} experiment {args.experiment!r}, parent run {run_id}\n")
    sys.stdout.write(_summary_table(result))
    sys.stdout.write(f"results: {rdir}\n")
    return 0


def _summary_table(result) -> str:
    """Per fraction: each metric's mean +- sd across seeds, and the 95% CI of the first seed's run."""
    import math

    summary = result.summary()
    metrics = list(result.runs[0].metrics) if result.runs else []
    from lesionbench.benchmark.protocols import protocol_dir, protocol_of

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


# ------------------------------------------------------------------------------------- compare
def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="Paired comparison of two encoders on the same task, fraction and seed, from saved predictions.",
        description="Bootstrap CI of the metric difference (A - B) and a permutation p-value (each patient's two "
        "predictions, as ranks, swapped at random; both resample the results' bootstrap unit, patients by default), "
        "for each of the task's metrics.",
    )
    p.add_argument("--task", required=True)
    p.add_argument("--encoder-a", required=True)
    p.add_argument("--encoder-b", required=True)
    p.add_argument("--fraction", type=finite_number, default=1.0)
    p.add_argument("--seed", type=whole_number(0), default=0)
    p.add_argument("--probe", default="linear")
    p.add_argument("--task-version", help="the task version to compare (needed only when results of several versions exist)")
    p.add_argument("--out", type=Path, default=Path("lesionbench-results"), help="results folder used by `lesionbench run`")
    p.add_argument("--n-boot", type=whole_number(0), default=1000)
    p.add_argument("--n-perm", type=whole_number(0), default=1000)
    p.add_argument(
        "--alternative", choices=["two-sided", "greater", "less"], default="two-sided",
        help="H1 of the test: A differs from B (default), A is better (greater) or A is worse (less)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_compare)


_P_HEADER = {"two-sided": "p (A!=B)", "greater": "p (A>B)", "less": "p (A<B)"}


def _cmd_compare(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.scorer import compare_saved

    rows = compare_saved(
        args.out, args.task, args.encoder_a, args.encoder_b, fraction=args.fraction, seed=args.seed, probe=args.probe,
        n_boot=args.n_boot, n_perm=args.n_perm, version=args.task_version, alternative=args.alternative,
    )  # fmt: skip
    sys.stdout.write(
        f"{args.task}: {args.encoder_a} (A) vs {args.encoder_b} (B), fraction {args.fraction:g}, seed {args.seed}, "
        f"{rows[0].n if rows else 0} test lesions\n"
    )
    sys.stdout.write(f"{'metric':>18} {'A':>7} {'B':>7} {'A-B':>7} {'95% CI':>17} {_P_HEADER[args.alternative]:>8}\n")
    for r in rows:
        sys.stdout.write(f"{r.metric:>18} {r.value_a:7.3f} {r.value_b:7.3f} {r.difference:+7.3f} [{r.ci_low:+.3f},{r.ci_high:+.3f}] {r.p_value:8.4f}\n")
    return 0


# --------------------------------------------------------------------------------------- synth
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="Generate the synthetic CT cohort (the data of the synthetic_* tasks).",
        description="Generate the deterministic synthetic CT cohort: NIfTI volumes, lesion masks and the manifests "
        "of synthetic_site, synthetic_malignancy and synthetic_survival. Same --patients and --seed, same files.",
    )
    p.add_argument("--out", type=Path, help="output folder (default: $LESIONBENCH_DATA/synthetic, where the tasks look)")
    p.add_argument("--patients", type=whole_number(1), default=None, help="number of patients, 1-4 lesions each (default: 96, 211 lesions with seed 0)")
    p.add_argument("--seed", type=whole_number(0), default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=whole_number(1), default=None, help="parallel worker processes (default: CPU count, at most 4)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    import json
    import time

    from lesionbench.benchmark.host import usable_cores
    from lesionbench.tasks.synthetic import DEFAULT_PATIENTS, TASK_NAMES, default_cohort_dir, generate_cohort

    out = args.out if args.out is not None else default_cohort_dir()
    patients = args.patients if args.patients is not None else DEFAULT_PATIENTS
    workers = args.workers if args.workers is not None else min(4, usable_cores())
    start = time.perf_counter()
    generate_cohort(out, patients=patients, seed=args.seed, workers=workers, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    info = json.loads((out / "cohort.json").read_text())
    sys.stdout.write(
        f"synthetic cohort: {info['patients']} patients, {info['lesions']} lesions (seed {info['seed']}) "
        f"in {elapsed:.1f} s -> {out}\n"
    )
    for task in TASK_NAMES:
        sys.stdout.write(f"  {task:<22} {out / task / 'manifest.csv'}\n")
    if args.out is not None:  # elsewhere than where the tasks look by default
        sys.stdout.write(f"use it with: lesionbench run --task {TASK_NAMES[0]} --data-dir {out / TASK_NAMES[0]} ... (--data-dir {out}/<task>)\n")
    return 0


# ------------------------------------------------------------------------------------ download
def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="Download a dataset's public DICOM from NCI Imaging Data Commons (needs idc-index).",
        description="Resolve the dataset's series from idc-index's offline index, report patients, series and "
        "size, then download them (resumable) with the clinical table. --dry-run only reports (works offline).",
    )
    p.add_argument("dataset", choices=["lung1", "radio", "lidc"], help="lung1 (NSCLC-Radiomics), radio (NSCLC-Radiogenomics), lidc (LIDC-IDRI)")
    p.add_argument("--out", type=Path, help="download folder (then: lesionbench prepare TASK --raw this folder)")
    p.add_argument("--dry-run", action="store_true", help="print the patients, series and total size; download nothing")
    p.add_argument("--patients", nargs="+", metavar="ID", help="only these PatientIDs (e.g. to try a few first)")
    p.set_defaults(func=_cmd_download)


def _cmd_download(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.tasks import _idc

    plan = _idc.resolve_download(args.dataset, patients=args.patients)
    if args.dry_run:
        sys.stdout.write(f"{'PatientID':<16} {'Modality':<9} {'instances':>9} {'MB':>9}  SeriesInstanceUID\n")
        for row in plan.series.itertuples(index=False):
            sys.stdout.write(
                f"{row.PatientID:<16} {row.Modality:<9} {int(row.instanceCount):>9} {row.series_size_MB:>9.1f}  {row.SeriesInstanceUID}\n"
            )
        sys.stdout.write(f"dry run, nothing downloaded: {plan.summary()}\n")
        return 0
    if args.out is None:
        raise ConfigurationError("lesionbench download needs --out DIR (or --dry-run to only list what it would fetch).")
    sys.stdout.write(f"downloading {plan.summary()}\n")
    out = _idc.download(plan, args.out)
    sys.stdout.write(f"downloaded into {out}; next: lesionbench prepare TASK --raw {out}\n")
    return 0



# ---------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="Run the whole benchmark on the embedded synthetic cohort (generated when absent).",
        description="Generate the synthetic CT cohort when absent, run every available encoder on the three synthetic "
        "tasks (features through the cache, limited-label probes, bootstrap CIs), log every run to MLflow and build "
        "the leaderboard. Offline, FMCIB's released weights cannot be fetched: the demo says so once and runs the "
        "same architecture with random weights (fmcib-random-init) as a labelled control.",
    )
    p.add_argument("--out", type=Path, default=Path("lesionbench-results"), help="results folder (default: ./lesionbench-results)")
    p.add_argument("--data-dir", type=Path, help="synthetic cohort folder (default: $LESIONBENCH_DATA/synthetic)")
    p.add_argument("--patients", type=whole_number(1), help="cohort size when it is generated (default: the synthetic default)")
    p.add_argument("--encoders", nargs="+", help="encoders to run (default: every available one)")
    p.add_argument("--weights", type=Path, help="FMCIB weights file (model_weights.torch) if you have it")
    p.add_argument("--fractions", type=finite_number, nargs="+", help="training fractions (default: 1.0 0.5 0.2 0.1)")
    p.add_argument("--seeds", type=whole_number(None), nargs="+", help="subset seeds (default: 0 1 2 3 4)")
    p.add_argument("--val", choices=["fraction", "full"], default="fraction",
                   help="what tunes each limited-label run (C, threshold, Cox penalty, early stopping): 'fraction' (default) a "
                   "validation subset with the run's training fraction; 'full' the whole validation split (the paper's protocol)")  # fmt: skip
    p.add_argument("--full", action="store_true", help="also run the heavy variants (supervised-resnet50, full radiomics, the zoo's random-init controls)")
    p.add_argument("--random-init", action="store_true",
                   help="run the random-init controls of --encoders (default: of every zoo model, with the default encoders)")  # fmt: skip
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="write the local results only")
    p.add_argument("--jobs", type=whole_number(1), default=None,
                   help="(fraction, seed) runs fitted in parallel processes (default: the usable CPU cores, at most 4; "
                   "the numbers do not depend on it)")  # fmt: skip
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.host import usable_cores
    from lesionbench.demo import run_demo

    encoders = args.encoders
    if args.random_init:
        from lesionbench.baselines._zoo_catalog import demo_random_init

        encoders = demo_random_init(args.encoders)
    report = run_demo(
        out_dir=args.out,
        data_dir=args.data_dir,
        tracking_uri=args.tracking_uri,
        encoders=encoders,
        fractions=args.fractions,
        seeds=args.seeds,
        weights=str(args.weights) if args.weights else None,
        full=args.full,
        patients=args.patients,
        use_mlflow=not args.no_mlflow,
        progress=not args.quiet,
        jobs=args.jobs if args.jobs is not None else min(4, usable_cores()),
        val=args.val,
    )
    for result in report.results:
        sys.stdout.write(_summary_table(result) + "\n")
    for what, why in report.skipped.items():
        sys.stdout.write(f"skipped {what}: {why}\n")
    sys.stdout.write("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report.timings.items()) + "\n")
    if report.leaderboard is not None:
        sys.stdout.write(f"leaderboard: open {report.leaderboard.resolve()} in a browser\n")
    return 0 if report.results else 1


# ------------------------------------------------------------------------------------- parser
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_tasks,
    _add_encoders,
    _add_validate,
    _add_prepare,
    _add_run,
    _add_compare,
    add_robustness,
    _add_synth,
    _add_download,
    _add_extract,
    _add_leaderboard,
    _add_submit,
    _add_select,
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
    return parser


def _quiet_third_party(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith(("radiomics", "pykwalify"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2, message printed), --help and --version (0): an exit code like the rest
        return exc.code if isinstance(exc.code, int) else 2
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # PyRadiomics logs a line per lesion at INFO (and resets its logger's level on import); with the
        # progress bar that buries the one error message, so the console handler drops those below WARNING
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_third_party)
    try:
        return int(args.func(args) or 0)
    except LesionbenchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept (caches and logged runs); re-run to resume.\n")
        return 130


def console() -> None:
    """The ``lesionbench`` command: :func:`main`, then a quick exit.

    Every result is written and closed by then; ``gc.freeze()`` only spares the interpreter's shutdown the
    garbage-collector passes over torch's and pandas' module objects (~0.2 s of every command)."""
    import gc

    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()
    raise SystemExit(rc)


if __name__ == "__main__":
    console()
