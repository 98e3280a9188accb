"""Time and peak memory of refusing or reading hostile inputs (issue 20, item 21), before and after.

Two files, each validated in a fresh process (imports done before the clock starts), which reports the wall
time and the peak RSS above the resident size after the imports (``VmHWM - VmRSS``):

- ``ragged``: a predictions file of ``--ragged-mib`` MiB of one-field rows (the header has two);
- ``features``: a features file of about ``--features-mib`` MiB (4096 columns, ``%.6f``) for a 1000-lesion task.

With ``--src OTHER_CHECKOUT`` the same files go through another checkout too (e.g. ``git archive`` of the
code before the fix), for comparison.

    python benchmarks/integrity_bounds.py [--src /tmp/old] [--ragged-mib 49] [--features-mib 100]
"""

from __future__ import annotations

import argparse
import json
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
from lesionbench.leaderboard.submissions.submission_file import validate_features, validate_predictions
meta = TaskMeta(name="bench_binary", version="1", kind=TaskKind.BINARY, description="", main_metric="auc", metrics=("auc",))
n = 1000
man = pd.DataFrame({"lesion_id": [f"L{i:05d}" for i in range(n)], "patient_id": [f"P{i // 2}" for i in range(n)],
                    "split": ["train"] * 500 + ["val"] * 100 + ["test"] * 400, "label": np.arange(n) % 2})
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))
base = status("VmRSS")
t0 = time.perf_counter()
try:
    if sys.argv[3] == "features":
        validate_features(sys.argv[2], man, max_bytes=2**31)
    else:
        validate_predictions(sys.argv[2], meta, man, max_bytes=2**31)
    outcome = "accepted"
except SubmissionError as exc:
    outcome = "rejected: " + exc.problems[0][:60]
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mib_above_imports": (status("VmHWM") - base) / 1024, "outcome": outcome}))
"""


def make_files(folder: Path, ragged_mib: float, features_mib: float) -> dict[str, Path]:
    files = {"ragged": folder / "ragged.csv", "features": folder / "features.csv"}
    files["ragged"].write_bytes(b"lesion_id,score\n" + b"x\n" * int(ragged_mib * 2**20 / 2))
    rng = np.random.default_rng(0)
    d = 4096
    with open(files["features"], "w") as fh:
        fh.write("lesion_id," + ",".join(f"f{j}" for j in range(d)) + "\n")
        row_bytes, rows, i = 9 * d, int(features_mib * 2**20 / (9 * d)), 0
        for i in range(rows):
            vals = rng.random(d)
            fh.write(f"L{i % 1000:05d}," + ",".join(f"{v:.6f}" for v in vals) + "\n")
    del row_bytes
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, help="another checkout to compare with")
    ap.add_argument("--ragged-mib", type=float, default=49.0)
    ap.add_argument("--features-mib", type=float, default=100.0)
    ap.add_argument("--timeout", type=int, default=300)
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.ragged_mib, args.features_mib)
        for name, path in files.items():
            for label, src in (("this checkout", here), ("--src", args.src)):
                if src is None:
                    continue
                try:
                    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(path), name], capture_output=True, text=True, timeout=args.timeout, check=False)
                    res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr.strip()[-200:]}
                except subprocess.TimeoutExpired:
                    res = {"error": f"over {args.timeout} s"}
                print(f"{name:<9} {path.stat().st_size / 2**20:7.1f} MiB  {label:<14} {json.dumps(res)}", flush=True)


if __name__ == "__main__":
    main()
