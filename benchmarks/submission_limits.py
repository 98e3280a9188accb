"""Time and peak memory of validating hostile submission files (issue 13.4).

Each file is validated in a fresh process (imports done before the clock starts), which reports the
wall time of ``validate_predictions``, its peak RSS above the resident size after the imports (an
over-estimate when the imports peaked higher) and the peak of memory traced by ``tracemalloc``. With
``--src OTHER_CHECKOUT`` the same files are validated by another checkout of lesionbench (e.g. the
code before the fix) for comparison; ``--timeout`` bounds each run.

    python benchmarks/submission_limits.py [--src ../old-checkout] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd
from lesionbench.benchmark.errors import SubmissionError
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.leaderboard import validate_predictions
meta = TaskMeta(name="bench_binary", version="1", kind=TaskKind.BINARY, description="", main_metric="auc", metrics=("auc",))
n = 1000
man = pd.DataFrame({"lesion_id": [f"L{i:05d}" for i in range(n)], "patient_id": [f"P{i // 2}" for i in range(n)],
                    "split": ["train"] * 500 + ["val"] * 100 + ["test"] * 400, "label": np.arange(n) % 2})
import tracemalloc
def status(key):  # KiB; VmHWM is this process's own peak (ru_maxrss would carry the parent's across fork)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))
base = status("VmRSS")
tracemalloc.start()
t0 = time.perf_counter()
try:
    validate_predictions(sys.argv[2], meta, man)
    outcome = "accepted"
except SubmissionError as exc:
    outcome = "rejected: " + exc.problems[0][:70]
took = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1]
peak = status("VmHWM")
print(json.dumps({"seconds": took, "peak_mib_above_imports": (peak - base) / 1024, "traced_mib": traced / 2**20, "outcome": outcome}))
"""


def make_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    test_ids = [f"L{i:05d}" for i in range(600, 1000)]
    rows = "".join(f"{i},{s:.6f}\n" for i, s in zip(test_ids, rng.random(len(test_ids))))
    files = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / f"{name}.csv"
        files[name].write_bytes(data)

    put("valid (400 test lesions)", ("lesion_id,score\n" + rows).encode())
    junk = ",".join(f"junk{i}" for i in range(20_000))
    tail = "," * 20_000
    put("20,000 junk columns (~1 MB)", ("lesion_id,score," + junk + "\n" + "".join(r.rstrip("\n") + tail + "\n" for r in rows.splitlines(keepends=True)[:20])).encode())
    budget = 49 * 2**20
    put("49 MiB of rows", b"lesion_id,score\n" + b"L00600,0.5\n" * (budget // 11))
    put("49 MiB in one line", b"lesion_id,score\nL00600," + b"9" * budget + b"\n")
    put("49 MiB of columns (short names)", b"lesion_id,score," + b",".join(b"c%d" % i for i in range(budget // 9)) + b"\n")
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1], help="lesionbench checkout to measure (default: this one)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per file before giving up")
    args = ap.parse_args()
    print(f"checkout {args.src}; load average {os.getloadavg()[0]:.1f}")
    print("| file | size | time | peak RSS above imports | traced peak | outcome |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_files(Path(tmp)).items():
            try:
                out = subprocess.run([sys.executable, "-c", CHILD, str(args.src), str(path)], capture_output=True, text=True, timeout=args.timeout, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {name} | {path.stat().st_size / 2**20:.1f} MiB | {r['seconds']:.2f} s | {r['peak_mib_above_imports']:.0f} MiB | {r['traced_mib']:.0f} MiB | {r['outcome']} |")
            except subprocess.TimeoutExpired:
                print(f"| {name} | {path.stat().st_size / 2**20:.1f} MiB | > {args.timeout:.0f} s (killed) | | |")
            except subprocess.CalledProcessError as exc:
                print(f"| {name} | {path.stat().st_size / 2**20:.1f} MiB | crashed: {exc.stderr.strip().splitlines()[-1][:80]} | | |")


if __name__ == "__main__":
    main()
