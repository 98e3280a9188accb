"""Robustness of the built-in encoders on the synthetic cohort: the numbers in benchmarks/README.md.

Runs the robustness protocol (shift, rotate, spacing, noise, and the cohort's test-retest twin) for each
encoder on one synthetic task, prints one Markdown row per (encoder, perturbation) and writes the
``robustness.json`` files under ``--results``. The cohort is generated into ``$LESIONBENCH_DATA/synthetic``
when absent (``lesionbench synth``). Wall time per encoder and the 1-minute load average are recorded,
since on 2 shared cores they matter. Example::

    PYTHONPATH=. python benchmarks/robustness_synthetic.py
    PYTHONPATH=. python benchmarks/robustness_synthetic.py --encoders radiomics --repeats 1 --n-boot 200
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from lesionbench.benchmark.robustness.perturb import PerturbationSettings
from lesionbench.benchmark.encoders.plugins import get_encoder, get_task
from lesionbench.benchmark.robustness import evaluate_robustness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="synthetic_malignancy")
    ap.add_argument("--encoders", nargs="+", default=["fmcib-random-init", "radiomics", "supervised-cnn"])
    ap.add_argument("--perturb", default="shift,rotate,spacing,noise,retest")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--results", type=Path, default=Path("robustness-results"), help="results folder, as `lesionbench robustness --results`")
    args = ap.parse_args()

    from lesionbench.tasks.synthetic import ensure_cohort

    ensure_cohort(progress=False)
    task = get_task(args.task)
    settings = PerturbationSettings(repeats=args.repeats)
    print(f"task {task.meta.name} ({task.meta.version}), settings {json.dumps(settings.to_dict())}")
    print("| encoder | perturbation | ICC(3,1) median [q25, q75] | ICC >= 0.75 | cosine [95% CI] | predictions changed [95% CI] | "
          f"{task.meta.main_metric} drop [95% CI] | wall s | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.encoders:
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        res = evaluate_robustness(task, get_encoder(name), perturbations=args.perturb.split(","), settings=settings,
                                  out_dir=args.results, n_boot=args.n_boot, progress=False)
        wall, load = time.perf_counter() - t0, (load0 + os.getloadavg()[0]) / 2
        ref = res.reference
        for k, b in res.perturbations.items():
            icc, cos = b["icc"], b["cosine"]
            pc = b["prediction_change"]
            md = b["metric_drop"]
            pc_txt = "-" if pc is None else f"{100 * pc['value']:.1f}% [{100 * pc['ci_low']:.1f}, {100 * pc['ci_high']:.1f}]"
            md_txt = "-" if md is None else f"{md['value']:+.3f} [{md['ci_low']:+.3f}, {md['ci_high']:+.3f}]"
            print(f"| {name} | {k} | {icc['median']:.3f} [{icc['q25']:.3f}, {icc['q75']:.3f}] | {icc['share_good']:.2f} | "
                  f"{cos['value']:.4f} [{cos['ci_low']:.4f}, {cos['ci_high']:.4f}] | {pc_txt} | {md_txt} | {wall:.0f} | {load:.1f} |")
        print(f"<!-- {name}: reference {ref['main_metric']} {ref['value']:.3f} (crop path), {ref['value_standard_extraction']:.3f} "
              f"(standard extraction), cosine crop vs standard {ref['cosine_crop_vs_standard']:.4f}; {res.n_test} test lesions, "
              f"{res.n_test_patients} patients; notes: {'; '.join(res.notes) or '-'} -->", flush=True)


if __name__ == "__main__":
    main()
