"""How far extraction hides reading, decoding and patch cutting behind the forward pass.

The encoder is a simulated accelerator: its ``encode`` sleeps ``--forward-s`` per batch (a GPU's forward pass
holds no CPU and releases the GIL), so the wall time against the forward-only time (batches x forward-s)
measures the CPU side of the pipeline alone: issue 16's GPU target asks for lesions/s at least 80% of the
forward-only rate. In-process ``extract_features`` (no start-up, no cache) on the seeds CSV that
``extract_speed.py`` writes; run it with another checkout first on ``PYTHONPATH`` to compare.

    PYTHONPATH=. python benchmarks/pipeline_overlap.py /tmp/lesionbench-speed/seeds_4x24_200_noise.csv [--forward-s 0.3]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd


class SimulatedDevice:
    """An FMCIB-shaped patch encoder whose forward pass is a sleep of ``forward_s`` per batch."""

    def __init__(self, forward_s: float, batch_size: int):
        from lesionbench.benchmark.types import EncoderMeta, PatchSpec

        self.meta = EncoderMeta(name="simulated-device", version="1", feature_dim=8, patch=PatchSpec())
        self.batch_size = batch_size
        self.forward_s = forward_s
        self.busy = 0.0

    def encode(self, patches: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        time.sleep(self.forward_s)
        out = np.stack([patches.mean(axis=(1, 2, 3, 4)), patches.std(axis=(1, 2, 3, 4))] * 4, axis=1).astype(np.float32)
        self.busy += time.perf_counter() - t
        return out


def main() -> None:
    import lesionbench
    from lesionbench.benchmark.encoders.features import extract_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", type=Path)
    ap.add_argument("--forward-s", type=float, default=0.3, help="simulated forward pass per batch (s)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    df = pd.read_csv(a.csv)
    df["image_path"] = [str((a.csv.parent / p).resolve()) for p in df["image_path"]]
    n = len(df)
    batches = -(-n // a.batch_size)
    print(f"lesionbench from {Path(lesionbench.__file__).parent}; {n} lesions in {df['image_path'].nunique()} images; load {os.getloadavg()[0]:.1f}")
    for _ in range(a.repeat):
        enc = SimulatedDevice(a.forward_s, a.batch_size)
        t0 = time.perf_counter()
        feats = extract_features(df, enc, cache=False, progress=False, batch_size=a.batch_size)
        wall = time.perf_counter() - t0
        fwd = batches * a.forward_s
        print(f"wall {wall:.2f} s, forward-only {fwd:.2f} s: {n / wall:.2f} lesions/s = {fwd / wall:.0%} of the forward-only rate "
              f"{n / fwd:.2f}; digest {float(np.abs(feats).sum()):.6f}; load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
