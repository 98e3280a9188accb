"""``lesionbench submit`` and ``lesionbench select``: score an untrusted predictions file on the hidden test
labels, and choose which of a team's submissions count for the final ranking."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionbench.cli._common import TASK_HELP, add_data_dir, add_results_dir, add_tracking_options

_DATA_DIR_HELP = "the task's prepared data folder (default: $LESIONBENCH_DATA/<task>)"


def add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="Score a predictions (or features) file on a task's hidden test labels.",
        description="Validate an untrusted predictions CSV (lesion_id + score columns: score_<class> for multiclass, "
        "score for binary, risk for survival; every test lesion exactly once), score it on the public and private parts "
        "of the test set, and record it like any run. With --features, a CSV of lesion_id + feature columns for every "
        "lesion is scored by the standard linear probe. Every problem is reported at once; nothing is written for a rejected file.",
    )
    p.add_argument("--task", help=TASK_HELP + " (required for a local submission)")
    p.add_argument("predictions", nargs="?", type=Path, help="predictions CSV (with --template: where to write it; default: TASK-template.csv)")
    p.add_argument("--features", type=Path, help="features CSV instead of predictions")
    p.add_argument("--name", help="submission name shown on the leaderboard (letters, digits, space, ._+()-; required for a local submission)")
    p.add_argument("--template", metavar="TASK", help="write a sample predictions file for TASK instead (every test lesion_id, the score "
                   "columns it needs, chance-level values) and exit; nothing is submitted")  # fmt: skip
    p.add_argument("--server", help="submit to a challenge server at this URL instead (token: $LESIONBENCH_TOKEN or --token-file); needs --phase")
    p.add_argument("--phase", type=int, help="with --server: the phase id to submit to")
    p.add_argument("--token-file", type=Path, help="with --server: file holding the API token")
    p.add_argument("--wait", action="store_true", help="with --server: wait until the submission is scored and print its score")
    p.add_argument("--model-card", type=Path, metavar="JSON", help="with --server: the model card shown on the submission's page, a JSON object: model "
                   "(required), parameters, embedding_dim, licence, pretraining_sets (list), weights_sha256, url")  # fmt: skip
    add_data_dir(p, help=_DATA_DIR_HELP)
    add_tracking_options(p, uri_help="MLflow tracking URI to log to (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
                         experiment=False, local="write the local result only")  # fmt: skip
    add_results_dir(p)
    p.add_argument("--organiser-dir", type=Path, help="organiser-only store of private scores, labelled predictions and the quota ledger (default: lesionbench-organiser beside --results)")
    p.add_argument("--organiser-tracking-uri", help="MLflow store for the organiser's runs (default: sqlite mlflow.db in the organiser folder; none with --no-mlflow)")
    p.add_argument("--challenge", type=Path, help="challenge configuration, .toml or .json (default: challenge.toml/.json in the organiser folder, else 5 a day, 100 in total, 2 selected)")
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.leaderboard import submit

    if args.template:
        return _write_template(args)
    if (args.predictions is None) == (args.features is None):
        raise ConfigurationError("Give either a predictions CSV or --features FILE (exactly one).")
    if args.server is not None:
        return _submit_to_server(args)
    missing = [flag for flag, value in (("--task", args.task), ("--name", args.name)) if not value]
    if missing:
        raise ConfigurationError(f"A local submission needs {' and '.join(missing)} (or --template TASK to write a sample file, "
                                 "or --server URL --phase ID to submit to a challenge server).")  # fmt: skip
    from lesionbench.benchmark.tracking.mlflow_sink import resolve_tracking_uri
    from lesionbench.leaderboard.submissions.organiser import organiser_tracking_default, resolve_organiser_dir

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


def _submit_to_server(args: argparse.Namespace) -> int:
    """``submit --server``: upload to a challenge server (the labels stay there)."""
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.server.client import ChallengeClient, format_submission

    if args.phase is None:
        raise ConfigurationError("--server needs --phase ID (the phase id is on the challenge page).")
    client = ChallengeClient(args.server, args.token_file.read_text().strip() if args.token_file else None)
    kind = "embeddings" if args.features is not None else "predictions"
    card = None
    if args.model_card is not None:
        import json

        try:
            card = json.loads(args.model_card.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigurationError(f"--model-card {args.model_card}: not a readable JSON file ({exc}); write a JSON object such as "
                                     '{"model": "my-encoder", "licence": "MIT", "pretraining_sets": ["DeepLesion"]}.') from None  # fmt: skip
        if not isinstance(card, dict):
            raise ConfigurationError(f"--model-card {args.model_card}: the JSON must be an object with at least a 'model' key.")
    sub = client.submit(args.phase, args.features or args.predictions, kind=kind, description=args.name or "", model_card=card)
    sys.stdout.write(f"submission {sub['id']} queued on {args.server} (phase {args.phase}).\n")
    if args.wait:
        sub = client.wait(sub["id"])
        sys.stdout.write(format_submission(sub) + "\n")
        if sub.get("message"):
            sys.stdout.write(sub["message"] + "\n")
        return 0 if sub["status"] == "scored" else 1
def template_table(task: object) -> "pd.DataFrame":  # noqa: F821 - pandas is imported when called
    """A valid predictions table for ``task``: every test ``lesion_id`` and its score columns at chance level
    (each class 1/k for multiclass, ``score`` 0.5 for binary, ``risk`` 0 for survival)."""
    import pandas as pd

    from lesionbench.benchmark.types import TaskKind

    meta, manifest = task.meta, task.manifest()
    ids = manifest.loc[manifest["split"] == "test", "lesion_id"].astype(str).to_numpy()
    table = pd.DataFrame({"lesion_id": ids})
    if meta.kind == TaskKind.MULTICLASS:
        names = list(meta.class_names) if meta.class_names else [str(c) for c in range(meta.n_classes)]
        for name in names:
            table[f"score_{name}"] = 1.0 / len(names)
    elif meta.kind == TaskKind.BINARY:
        table["score"] = 0.5
    else:
        table["risk"] = 0.0
    return table


def _write_template(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.host import atomic_write
    from lesionbench.benchmark.encoders.plugins import get_task

    task = get_task(args.template, data_dir=args.data_dir)
    table = template_table(task)
    out = args.predictions or Path(f"{task.meta.name}-template.csv")
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    cols = ", ".join(c for c in table.columns if c != "lesion_id")
    sys.stdout.write(f"{out}: {len(table)} test lesions of {task.meta.name} with lesion_id, {cols} (chance-level values): fill in your "
                     f"model's scores, then `lesionbench submit --task {task.meta.name} {out} --name TEAM`.\n")  # fmt: skip
    return 0


def add_select(sub: argparse._SubParsersAction) -> None:
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
    add_data_dir(p, help=_DATA_DIR_HELP)
    add_results_dir(p, help="results folder (the organiser folder is looked for beside it)")
    p.add_argument("--organiser-dir", type=Path, help="organiser store (default: lesionbench-organiser beside --results)")
    p.add_argument("--challenge", type=Path, help="challenge configuration (default: the organiser folder's)")
    p.set_defaults(func=cmd_select)


def cmd_select(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.leaderboard.submissions.organiser import resolve_organiser_dir, select, team_submissions
    from lesionbench.leaderboard.submissions.submission_file import name_slug

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
