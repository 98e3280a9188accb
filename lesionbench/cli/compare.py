"""``lesionbench compare``: paired comparison of two encoders from saved predictions."""

from __future__ import annotations

import argparse
import sys

from lesionbench.cli._common import TASK_HELP, add_data_dir, add_n_boot, add_results_dir, finite_number, whole_number


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="Paired comparison of two encoders on the same task, fraction and seed, from saved predictions.",
        description="Bootstrap CI of the metric difference (A - B) and a permutation p-value (each patient's two "
        "predictions, as ranks, swapped at random; both resample the results' bootstrap unit, patients by default), "
        "for each of the task's metrics.",
    )
    p.add_argument("--task", required=True, help=TASK_HELP)
    p.add_argument("--encoder-a", required=True, help="encoder A: the name its results are saved under (as `lesionbench run` printed it)")
    p.add_argument("--encoder-b", required=True, help="encoder B, compared with A on the same test lesions")
    p.add_argument("--fraction", type=finite_number, default=1.0, help="training fraction of the two runs to compare")
    p.add_argument("--seed", type=_seed, default=0, help="subset seed of the two runs to compare, or 'all': every seed both runs have, one block each")
    p.add_argument("--probe", default="linear", help="probe of the two runs: linear or knn")
    p.add_argument("--task-version", help="the task version to compare (needed only when results of several versions exist)")
    add_results_dir(p, help="results folder that `lesionbench run` wrote", old_out=True)
    add_data_dir(p, help="the task's prepared data folder, whose manifest holds the test labels (default: $LESIONBENCH_DATA/<task>)")
    add_n_boot(p, help="bootstrap resamples for the CI of A - B")
    p.add_argument("--n-perm", type=whole_number(0), default=1000, help="permutations for the p-value")
    p.add_argument(
        "--alternative", choices=["two-sided", "greater", "less"], default="two-sided",
        help="H1 of the test: A differs from B (two-sided), A is better (greater) or A is worse (less)",
    )  # fmt: skip
    p.set_defaults(func=cmd_compare)


def _seed(text: str) -> int | str:
    return "all" if text.strip().lower() == "all" else whole_number(0)(text)


_P_HEADER = {"two-sided": "p (A!=B)", "greater": "p (A>B)", "less": "p (A<B)"}


def cmd_compare(args: argparse.Namespace) -> int:
    from lesionbench.api import compare
    from lesionbench.benchmark.encoders.plugins import get_task

    # the saved predictions hold no labels (the results folder is public): the task's manifest has them
    labels = lambda: get_task(args.task, data_dir=args.data_dir).manifest()  # noqa: E731 - read once the results are found
    table = compare(args.task, args.encoder_a, args.encoder_b, results=args.results, fraction=args.fraction, seed=None if args.seed == "all" else args.seed,
                    probe=args.probe, n_boot=args.n_boot, n_perm=args.n_perm, alternative=args.alternative, version=args.task_version, labels=labels)  # fmt: skip
    blocks = [(int(seed), list(group.itertuples(index=False))) for seed, group in table.groupby("seed", sort=True)] if len(table) else [(args.seed, [])]
    for seed, rows in blocks:
        sys.stdout.write(
            f"{args.task}: {args.encoder_a} (A) vs {args.encoder_b} (B), fraction {args.fraction:g}, seed {seed}, "
            f"{rows[0].n if rows else 0} test lesions\n"
        )
        sys.stdout.write(f"{'metric':>18} {'A':>7} {'B':>7} {'A-B':>7} {'95% CI':>17} {_P_HEADER[args.alternative]:>8}\n")
        for r in rows:
            sys.stdout.write(f"{r.metric:>18} {r.value_a:7.3f} {r.value_b:7.3f} {r.difference:+7.3f} [{r.ci_low:+.3f},{r.ci_high:+.3f}] {r.p_value:8.4f}\n")
    if len(blocks) > 1:
        diffs: dict[str, list[float]] = {}
        for _, rows in blocks:
            for r in rows:
                diffs.setdefault(r.metric, []).append(r.difference)
        sys.stdout.write(f"over {len(blocks)} seeds (each its own training subset and test predictions; not pooled into one test):\n")
        for metric, ds in diffs.items():
            sys.stdout.write(f"{metric:>18} mean A-B {sum(ds) / len(ds):+.3f}, A ahead in {sum(d > 0 for d in ds)} of {len(ds)} seeds\n")
    sys.stdout.write("CI: paired bootstrap of A-B (how large); p: permutation test swapping patients' predictions (whether at all); near 0.05 they can disagree.\n")
    return 0
