"""What hashing and checking a weights file costs on every load (issue 13.7/13.8).

The weights digest that keys the feature cache is the sha256 of the file's content, computed on every load
(:func:`lesionbench.benchmark.encoders.weights.read_checkpoint`: hashed, then loaded from the same open file), and
every parameter is checked to be finite. Baseline: a plain ``torch.load(path, weights_only=True)``.

    python benchmarks/weights_digest.py              # a 300 MB checkpoint (default)
    python benchmarks/weights_digest.py --mb 740     # about the size of the released FMCIB weights
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch

    from lesionbench.benchmark.host import sha256_file
    from lesionbench.benchmark.encoders.weights import check_finite_state_dict, read_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="checkpoint size in MB (float32 tensors)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.torch"
        n = args.mb * 1_000_000 // 4 // 40
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.save({"trunk_state_dict": {f"layer{i}.weight": torch.randn(n) for i in range(40)}}, path)
        print(f"checkpoint {path.stat().st_size / 1e6:.0f} MB")
        rows = {"torch.load(path) (baseline)": [], "sha256 of the file": [], "read_checkpoint (sha256 + load)": [], "check_finite_state_dict": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            torch.load(path, map_location="cpu", weights_only=True)
            rows["torch.load(path) (baseline)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sha256_file(path)
            rows["sha256 of the file"].append(time.perf_counter() - t)
            t = time.perf_counter()
            checkpoint, _ = read_checkpoint(path)
            rows["read_checkpoint (sha256 + load)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            check_finite_state_dict(checkpoint["trunk_state_dict"], str(path))
            rows["check_finite_state_dict"].append(time.perf_counter() - t)
        for name, times in rows.items():
            print(f"{name:<34} best {min(times):.3f} s   median {sorted(times)[len(times) // 2]:.3f} s")


if __name__ == "__main__":
    main()
