"""Seconds per lesion and peak memory of every zoo encoder on CPU (random weights), per recipe.

Each (encoder, recipe) runs in its own process, so that peak memory (the process's max RSS: Python, torch,
the network, the image and the patches) is its own. Reported: the time to build the encoder (random
initialisation), seconds per lesion of ``extract_features`` (cutting the patch crop-first and the forward
pass, after one warm-up lesion, at the encoder's default batch size), and the peak RSS.

    python benchmarks/zoo_speed.py [--lesions 4] [--models ct-fm vista3d ...] [--recipes official tib]
        [--threads 2] [--workdir /tmp/lesionbench-zoo-speed]

Synthetic CTs (320 x 320 x 160 voxels, 0.8 x 0.8 x 1.5 mm) are written once into the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lesionbench, also when another copy is installed


def make_cohort(workdir: Path, n_lesions: int, seed: int = 0) -> Path:
    """Two chest-like CTs and a seeds CSV of ``n_lesions + 1`` lesions (the first one warms up)."""
    import SimpleITK as sitk

    csv = workdir / f"seeds_{n_lesions}.csv"
    if csv.exists():
        return csv
    rng = np.random.default_rng(seed)
    rows = []
    shape = (160, 320, 320)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for v in range(2):
        arr = np.full(shape, -1000, dtype=np.int16)
        arr[np.broadcast_to(((xx - 160) / 140.0) ** 2 + ((yy - 160) / 100.0) ** 2 <= 1, shape)] = 40
        arr += rng.normal(0, 20, shape).astype(np.int16)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.8, 0.8, 1.5))
        path = workdir / f"ct{v}.nii.gz"
        sitk.WriteImage(img, str(path))
        for i in range(v, n_lesions + 1, 2):
            idx = (float(rng.uniform(110, 210)), float(rng.uniform(110, 210)), float(rng.uniform(50, 110)))
            x, y, z = img.TransformContinuousIndexToPhysicalPoint(idx)
            rows.append({"lesion_id": f"l{i}", "image_path": str(path), "coordX": x, "coordY": y, "coordZ": z})
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def run_one(name: str, recipe: str, seeds_csv: Path, threads: int) -> dict:
    """In this process: build ``name``'s random-init encoder with ``recipe`` and time it on the seeds."""
    import torch

    from lesionbench.benchmark.encoders.features import extract_features
    from lesionbench.benchmark.encoders.plugins import get_encoder

    torch.set_num_threads(threads)
    seeds = pd.read_csv(seeds_csv)
    t0 = time.perf_counter()
    enc = get_encoder(f"{name}-random-init", recipe=recipe, device="cpu", threads=threads)
    build_s = time.perf_counter() - t0
    extract_features(seeds.iloc[:1], enc, cache=False, progress=False)  # warm-up: first-call costs
    t1 = time.perf_counter()
    feats = extract_features(seeds.iloc[1:], enc, cache=False, progress=False)
    per_lesion = (time.perf_counter() - t1) / (len(seeds) - 1)
    return {
        "encoder": enc.meta.name,
        "patch": "x".join(map(str, enc.meta.patch.size)),
        "dim": int(feats.shape[1]),
        "parameters": dict(enc.meta.card).get("parameters", ""),
        "build_s": round(build_s, 2),
        "s_per_lesion": round(per_lesion, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "finite": bool(np.isfinite(feats).all()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lesions", type=int, default=4, help="lesions timed per encoder (after one warm-up lesion)")
    ap.add_argument("--models", nargs="+", help="zoo model names (default: every registered one)")
    ap.add_argument("--recipes", nargs="+", default=["official", "tib"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lesionbench-zoo-speed"))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per (encoder, recipe) before it is reported as timed out")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "RECIPE", "SEEDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], Path(args.one[2]), args.threads)))
        return 0
    from lesionbench.baselines.zoo.catalog import _zoo

    zoo = _zoo()
    args.workdir.mkdir(parents=True, exist_ok=True)
    seeds = make_cohort(args.workdir, args.lesions)
    rows = []
    for name in args.models or list(zoo):
        for recipe in args.recipes:
            if recipe not in [r.name for r in zoo[name].model.recipes]:
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, recipe, str(seeds), "--threads", str(args.threads)]
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
                line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
                row = json.loads(line) if line else {"encoder": f"{name} ({recipe})", "error": proc.stderr.strip().splitlines()[-1:]}
            except subprocess.TimeoutExpired:
                row = {"encoder": f"{name} ({recipe})", "error": f"timed out after {args.timeout} s"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| encoder | patch | dim | parameters | build (s) | s / lesion | peak RSS (MiB) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['encoder']} | failed: {r['error']} | | | | | |")
        else:
            print(f"| {r['encoder']} | {r['patch']} | {r['dim']} | {r['parameters']} | {r['build_s']} | {r['s_per_lesion']} | {r['peak_rss_mib']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
