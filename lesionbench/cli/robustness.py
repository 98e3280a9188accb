"""``lesionbench robustness``: feature and prediction stability of an encoder under perturbations and test-retest."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lesionbench.cli._common import add_cache_dir, add_data_dir, add_encoder_options, add_results_dir, add_tracking_options, finite_number, get_encoder, whole_number


def add_robustness(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "robustness",
        help="Feature and prediction stability of an encoder under seeded perturbations (and test-retest scans).",
        description="Re-extract every test lesion under seeded perturbations (seed shift, rotation about the seed, in-plane "
        "resampling, additive noise) and/or from its second scan, then report per perturbation the ICC(2,1) (absolute agreement) distribution "
        "over features, the cosine similarity to the unperturbed embedding, the share of test predictions that change "
        "class and the drop of the main metric (linear probe fitted at 100% labels, seed 0), with patient-bootstrap CIs. "
        "Writes <results>/<task>/<version>/<encoder>/robustness.json and one MLflow run.",
    )
    p.add_argument("--task", help="task name (see `lesionbench tasks list`); leave out with --retest-manifest for feature stability only")
    add_encoder_options(p)
    add_data_dir(p)
    p.add_argument("--perturb", default="shift,rotate,spacing,noise",
                   help="comma-separated perturbations out of shift, rotate, spacing, noise, retest")  # fmt: skip
    p.add_argument("--retest-manifest", type=Path, help="second scans in the RIDER layout (lesion_id, patient_id, scan=test/retest, image_path, coordX/Y/Z)")
    p.add_argument("--repeats", type=whole_number(1), default=3, help="seeded draws of each perturbation per lesion (default: 3)")
    p.add_argument("--shift-mm", type=finite_number, nargs=2, default=(1.0, 5.0), metavar=("LOW", "HIGH"), help="seed shift range in mm (default: 1 5)")
    p.add_argument("--rotate-deg", type=finite_number, nargs=2, default=(5.0, 10.0), metavar=("LOW", "HIGH"), help="rotation range in degrees (default: 5 10)")
    p.add_argument("--spacing-mm", type=finite_number, nargs=2, default=(1.0, 1.5), metavar=("LOW", "HIGH"), help="in-plane spacing range in mm (default: 1 1.5)")
    p.add_argument("--noise-hu", type=finite_number, default=20.0, help="sd of the additive Gaussian noise in HU (default: 20)")
    p.add_argument("--seed", type=whole_number(0), default=0, help="seed of the perturbation draws and the bootstrap (default: 0)")
    p.add_argument("--n-boot", type=whole_number(0), default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--bootstrap-unit", choices=["patient", "lesion"], default="patient", help="resample patients or lesions")
    add_results_dir(p, old_out=True)
    add_cache_dir(p)
    add_tracking_options(p, local="write the local result only")
    p.set_defaults(func=cmd_robustness)


def cmd_robustness(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.robustness.perturb import PerturbationSettings
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.benchmark.robustness.retest import evaluate_retest
    from lesionbench.benchmark.robustness import evaluate_robustness, log_robustness, robustness_path

    encoder = get_encoder(args)  # --weights, and the zoo's --recipe / --random-init as `run` takes them
    if args.task is None:
        if args.retest_manifest is None:
            raise ConfigurationError("Give --task (perturbations of its test lesions) or --retest-manifest (test-retest pairs), or both.")
        name = args.retest_manifest.parent.name or "retest"
        result = evaluate_retest(args.retest_manifest, encoder, name=name, out_dir=args.results, cache_dir=args.cache_dir, n_boot=args.n_boot,
                                 seed=args.seed, progress=not args.quiet)  # fmt: skip
    else:
        settings = PerturbationSettings(shift_mm=tuple(args.shift_mm), rotate_deg=tuple(args.rotate_deg), spacing_mm=tuple(args.spacing_mm),
                                        noise_hu=args.noise_hu, repeats=args.repeats, seed=args.seed)  # fmt: skip
        task = get_task(args.task, data_dir=args.data_dir)
        result = evaluate_robustness(task, encoder, perturbations=args.perturb.split(","), settings=settings, out_dir=args.results,
                                     cache_dir=args.cache_dir, n_boot=args.n_boot, bootstrap_unit=args.bootstrap_unit,
                                     progress=not args.quiet, retest=args.retest_manifest)  # fmt: skip
    path = robustness_path(args.results, result.task["name"], result.task["version"], result.encoder["name"])
    if not args.no_mlflow:
        run_id = log_robustness(result, path, tracking_uri=args.tracking_uri, experiment=args.experiment)
        if run_id:
            sys.stdout.write(f"MLflow: experiment {args.experiment!r}, run {run_id}\n")
    sys.stdout.write(_table(result))
    sys.stdout.write(f"results: {path}\n")
    return 0


def _fmt(block: dict | None, pct: bool = False) -> str:
    if block is None:
        return "-".rjust(22)
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")
    lo, hi = block["ci_low"], block["ci_high"]
    ci = f" [{f(lo)},{f(hi)}]" if math.isfinite(lo) else ""
    return (f(block["value"]) + ci).rjust(22)


def _table(result) -> str:
    main = result.task.get("main_metric") or "-"
    lines = [f"{result.task['name']} / {result.encoder['name']} / robustness ({result.n_test} test lesions, {result.n_test_patients} patients)",
             f"{'perturbation':>12}  {'ICC median [q25,q75]':>22}  {'ICC>=0.75':>9}  {'cosine':>22}  {'changed':>22}  {main + ' drop':>22}"]  # fmt: skip
    for k, b in result.perturbations.items():
        icc = b["icc"]
        spread = "{:.3f} [{:.3f},{:.3f}]".format(icc["median"], icc["q25"], icc["q75"])
        lines.append(f"{k:>12}  {spread:>22}  {icc['share_good']:>9.2f}  "
                     f"{_fmt(b['cosine'])}  {_fmt(b['prediction_change'], pct=True)}  {_fmt(b['metric_drop'])}")  # fmt: skip
    lines.append(f"[95% bootstrap CI, {result.bootstrap_unit}s resampled]; ICC(2,1) (absolute agreement) over features; undefined ICCs (constant features) left out")
    return "\n".join(lines) + "\n"
