"""How long the scorer takes for the full default sweep on cached features, and where the time goes.

Fabricates a DeepLesion-sized task (default: 3,000 lesions of 1,000 patients, 8 classes, split
60/20/20 by patient) with structured 4,096-d float32 features (class means + a shared low-rank part +
noise), caches them as .npy, then times ``evaluate_features`` with the defaults of ``lesionbench run``:
fractions 1.0/0.5/0.2/0.1 x seeds 0-4, the full C search (decades 1e-6..1e3 + quarter-decade
refinement: 16 fits per run), 1,000 bootstrap resamples; then (``--mlflow``) logging to a fresh sqlite
store. Prints the time per stage and per fraction.

    PYTHONPATH=. python benchmarks/score_speed.py                 # the issue's setting
    PYTHONPATH=. python benchmarks/score_speed.py --kind survival --mlflow
    PYTHONPATH=. python benchmarks/score_speed.py --jobs 1 2       # parallel runs against one at a time
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="multiclass", choices=["multiclass", "binary", "survival"])
    ap.add_argument("--lesions", type=int, default=3000)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--signal", type=float, default=0.05, help="class-mean scale per feature (0.05: far from trivially separable)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-refine", action="store_true", help="decade grid only (for comparison)")
    ap.add_argument("--mlflow", action="store_true", help="also time logging to a fresh sqlite MLflow store")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1],
                    help="run the sweep once per value of jobs (parallel runs), e.g. --jobs 1 2: the first is the baseline of the printed ratios")  # fmt: skip
    args = ap.parse_args()

    from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
    from lesionbench.benchmark.scoring.scorer import evaluate_features, result_dir

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        task, X = fabricate(args.kind, n_lesions=args.lesions, n_patients=args.patients, n_classes=args.classes, feature_dim=args.dim, signal=args.signal, seed=0)
        np.save(tmp / "features.npy", X)
        t_fab = time.perf_counter() - t
        t = time.perf_counter()
        X = np.load(tmp / "features.npy", mmap_mode=None)  # "cached features": what `run` loads from the cache
        t_load = time.perf_counter() - t
        df = task.manifest()
        print(f"task: {args.kind}, {len(df)} lesions ({dict(df['split'].value_counts())}), {df['patient_id'].nunique()} patients, "
              f"features {X.shape} {X.dtype}; fabricate {t_fab:.1f} s, load {t_load:.2f} s")  # fmt: skip
        t, cpu = time.perf_counter(), time.process_time()
        result = evaluate_features(
            df, X, task.meta, encoder=fabricated_encoder_meta(X.shape[1]), fractions=args.fractions, seeds=args.seeds,
            out_dir=tmp / "out", n_boot=args.n_boot, progress=True, refine=not args.no_refine, jobs=args.jobs[0], resume=False,
        )  # fmt: skip
        total, cpu = time.perf_counter() - t, time.process_time() - cpu
        for jobs in args.jobs[1:]:
            t1 = time.perf_counter()
            other = evaluate_features(
                df, X, task.meta, encoder=fabricated_encoder_meta(X.shape[1]), fractions=args.fractions, seeds=args.seeds,
                out_dir=tmp / f"out-jobs{jobs}", n_boot=args.n_boot, progress=True, refine=not args.no_refine, jobs=jobs, resume=False,
            )  # fmt: skip
            wall = time.perf_counter() - t1
            same = [r.metrics for r in other.runs] == [r.metrics for r in result.runs]
            print(f"\njobs={jobs}: {wall:.1f} s wall vs {total:.1f} s with jobs={args.jobs[0]}: {total / wall:.2f}x; same metrics: {same}  "
                  f"[load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores]")  # fmt: skip
        print(f"\nevaluate_features (jobs={args.jobs[0]}): {total:.1f} s wall, {cpu:.1f} s CPU (all threads; wall > CPU means the cores were busy with other work) for {len(result.runs)} runs ({len(args.fractions)} fractions x {len(args.seeds)} seeds), "
              f"n_boot={args.n_boot}, C fits per run: {result.runs[0].params['n_c_evaluated']}")  # fmt: skip
        timing = result.extra["timing_s"]
        print("wall time by stage:")
        for k, v in sorted(timing.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<10} {v:8.2f} s  {100 * v / total:5.1f} %")
        per_frac: dict[float, list[float]] = defaultdict(list)
        for r in result.runs:
            per_frac[r.fraction].append(r.params["probe_seconds"])
        print("probe fit + C search per run, by fraction (mean s; n_train):")
        for f, v in per_frac.items():
            n = next(r.n_train for r in result.runs if r.fraction == f)
            print(f"  {f:>4g}: {np.mean(v):6.2f} s  (n_train {n})")
        summ = result.summary()
        main_metric = result.extra["metrics"][0]
        print("main metric " + main_metric + ": " + ", ".join(f"{f:g}: {m[main_metric][0]:.3f}±{m[main_metric][1]:.3f}" for f, m in summ.items()))
        if args.mlflow:
            from lesionbench.benchmark.tracking.mlflow_sink import log_result

            t = time.perf_counter()
            run_id = log_result(result, result_dir(tmp / "out", task.meta.name, task.meta.version, "fabricated", "linear"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
            print(f"MLflow logging (fresh sqlite store incl. schema creation, {len(result.runs)} child runs with plots): "
                  f"{time.perf_counter() - t:.1f} s, parent {run_id}")  # fmt: skip


if __name__ == "__main__":
    main()
