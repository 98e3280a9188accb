"""Time the whole ``lesionbench demo`` from a cold feature cache, and show where the time goes.

Runs the demo exactly as ``lesionbench demo`` does (every default encoder, the three synthetic tasks,
the default fractions and seeds, its parallel (fraction, seed) runs, MLflow, leaderboard) in fresh data,
cache, results and MLflow folders, then prints the wall time of each part and the 1-minute load average at
the start and the end (the machine may be shared: note it with the numbers). Budget (issue 8): at most 10
minutes on a 2-core machine.

    python benchmarks/demo_time.py                 # cold: generates the cohort too
    python benchmarks/demo_time.py --cohort DIR    # reuse an already generated cohort (cold features)
    python benchmarks/demo_time.py --keep DIR      # keep the cohort, results and MLflow store (e.g. for --cohort DIR/data/synthetic)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", type=Path, help="an existing synthetic cohort folder to reuse (its generation is not timed)")
    ap.add_argument("--keep", type=Path, help="keep the run's folders here instead of a temporary folder")
    ap.add_argument("--json", type=Path, help="also write the timings as JSON")
    ap.add_argument("--jobs", type=int, help="(fraction, seed) runs in parallel (default: as `lesionbench demo`, the usable cores, at most 4)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("radiomics").setLevel(logging.WARNING)  # one INFO line per feature class and lesion otherwise

    root = Path(args.keep or tempfile.mkdtemp(prefix="lesionbench-demo-time-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["LESIONBENCH_DATA"] = str(root / "data")
    os.environ["LESIONBENCH_CACHE"] = str(root / "cache")
    data_dir = None
    if args.cohort is not None:
        data_dir = root / "data" / "synthetic"
        if not data_dir.exists():
            shutil.copytree(args.cohort, data_dir)
    from lesionbench.benchmark.host import usable_cores
    from lesionbench.demo import run_demo

    # the CLI's default: without it the runs went one at a time, slower than the README's command
    jobs = args.jobs if args.jobs is not None else min(4, usable_cores())
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    report = run_demo(
        out_dir=root / "results", data_dir=data_dir, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", progress=False, jobs=jobs
    )
    total = time.perf_counter() - t0
    load = os.getloadavg()[0]
    print(f"lesionbench demo from a cold feature cache: {total:.0f} s total on {os.cpu_count()} cores, {jobs} parallel runs "
          f"(1-min load average {load_start:.1f} at the start, {load:.1f} at the end)")
    print(f"{'part':<48} {'seconds':>8} {'share':>6}")
    for part, secs in report.timings.items():
        if part != "total":
            print(f"{part:<48} {secs:8.1f} {secs / total:6.1%}")
    for what, why in report.skipped.items():
        print(f"skipped {what}: {why.splitlines()[0][:120]}")
    print(f"leaderboard: {report.leaderboard}")
    print(f"budget 600 s: {'within' if total <= 600 else 'OVER'} ({total / 600:.0%})")
    if args.json:
        args.json.write_text(json.dumps({"total_s": total, "timings": report.timings, "jobs": jobs, "load_avg_1min": load, "load_avg_1min_start": load_start}, indent=2))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
