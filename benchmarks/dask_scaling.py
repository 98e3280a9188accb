"""Dask scale-out: extraction throughput with 1 and 2 local worker processes, and the on-paper plan
for DeepLesion x 10 encoders on a cluster.

Part 1 (measured): a synthetic cohort of small CTs (``--images``, 2 lesions each) is extracted with
``--encoder`` (default ``medicalnet-r10-random-init``, the cheapest zoo network on CPU) three ways, each
into a fresh cache: the local path in this process (torch limited to 1 thread), ``--dask local:1`` and
``--dask local:2`` (one thread per worker). Scaling efficiency = rate(2 workers) / (2 x rate(1 worker)).
The features of every way must be equal (checked). The 1-minute load average is printed: on a shared
machine other jobs take cores, and the efficiency drops with them.

Part 2 (on paper): hours and cost of extracting DeepLesion with 10 zoo encoders, from the per-lesion CPU
times measured by ``benchmarks/zoo_speed.py`` (benchmarks/README.md, 2026-11-30, under load: upper
bounds). The GPU column rests on an ASSUMED speed-up (``--gpu-speedup``) and price (``--gpu-price``): no
GPU was available to measure one; both are parameters, printed with the table.

    PYTHONPATH=. python benchmarks/dask_scaling.py [--images 20] [--encoder medicalnet-r10-random-init]
        [--workdir /tmp/lesionbench-dask-scaling] [--plan-only]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: s / lesion on CPU (2 threads, load 7-10), official recipes, from benchmarks/README.md `zoo_speed.py`.
CPU_S_PER_LESION = {
    "ct-fm": 4.193, "medicalnet-r10": 0.796, "medicalnet-r18": 2.708, "medicalnet-r34": 3.399, "medicalnet-r50": 1.614,
    "models-genesis": 4.132, "suprem": 4.578, "voco-b": 4.494, "voco-l": 7.497, "vista3d": 21.033,
}  # fmt: skip
#: Lesions: the deeplesion_site task (2,610 train + 2,441 val/test, lesionbench/tasks/deeplesion.py) and all of DeepLesion.
WORKLOADS = {"deeplesion_site task (5,051 lesions)": 5051, "all DeepLesion (32,735 lesions)": 32735}


def make_cohort(root: Path, n_images: int) -> pd.DataFrame:
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_images):
        img = sitk.GetImageFromArray(rng.normal(-600, 200, size=(48, 64, 64)).astype(np.float32))
        img.SetSpacing((1.0, 1.0, 1.5))
        path = root / f"ct{i:03d}.nii.gz"
        sitk.WriteImage(img, str(path))
        for j, idx in enumerate(((20, 20, 16), (44, 40, 30))):
            x, y, z = img.TransformIndexToPhysicalPoint(idx)
            rows.append({"lesion_id": f"{i}_{j}", "patient_id": str(i), "image_path": str(path), "coordX": x, "coordY": y, "coordZ": z})
    return pd.DataFrame(rows)


def measure(args: argparse.Namespace) -> None:
    from lesionbench.benchmark.encoders.features import extract_features
    from lesionbench.benchmark.encoders.plugins import get_encoder
    from lesionbench.scaleout.cluster import connect
    from lesionbench.scaleout.extract import extract_features_dask, worker_encoder

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    manifest = make_cohort(work / "data", args.images)
    n = len(manifest)
    # one torch thread per process everywhere (the encoder's own setting, which Dask tasks apply in their thread)
    encoder = get_encoder(args.encoder, threads=1)
    rows = []
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    ref = extract_features(manifest, encoder, cache_dir=work / "cache-local", progress=False)
    rows.append(("local, 1 process, 1 torch thread (+ reader threads)", time.perf_counter() - t0))
    for k in (1, 2):
        t0 = time.perf_counter()
        client = connect(f"local:{k}")
        try:
            build = functools.partial(get_encoder, args.encoder, threads=1)
            client.run(worker_encoder, encoder.meta.fingerprint(), build)  # each worker imports torch and builds its encoder once
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = extract_features_dask(manifest, encoder, client, cache_dir=work / f"cache-dask{k}", build=build, progress=False)
            rows.append((f"--dask local:{k} (start-up {startup:.1f} s not counted)", time.perf_counter() - t0))
        finally:
            client.close()
        diff = float(np.abs(got - ref).max())
        assert diff == 0.0, f"local:{k} features differ from the local path by {diff}"
    print(f"\n{args.encoder}, {n} lesions in {args.images} images (48x64x64), 1-minute load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| run | wall (s) | lesions/s |\n|---|---|---|")
    for name, wall in rows:
        print(f"| {name} | {wall:.1f} | {n / wall:.2f} |")
    r1, r2 = n / rows[1][1], n / rows[2][1]  # noqa: F841
    print(f"\nscaling efficiency 2 workers vs 1: {r2 / (2 * r1):.0%}; features equal on all three paths (max diff 0.0)")


def plan(args: argparse.Namespace) -> None:
    total = sum(CPU_S_PER_LESION.values())
    print(f"\nOn paper: 10 encoders ({', '.join(CPU_S_PER_LESION)}), {total:.1f} CPU-s per lesion for all ten "
          f"(zoo_speed.py, 2 threads, under load). GPU: assumed {args.gpu_speedup:g}x faster per lesion than those 2 CPU threads, "
          f"${args.gpu_price:g} per GPU-hour; CPU: ${args.cpu_price:g} per 2-core hour.\n")  # fmt: skip
    print("| workload | CPU core-pair hours | GPU hours (assumed speed-up) | wall on 8 GPUs | cost CPU | cost GPU |\n|---|---|---|---|---|---|")
    for name, lesions in WORKLOADS.items():
        cpu_h = lesions * total / 3600
        gpu_h = cpu_h / args.gpu_speedup
        print(f"| {name} | {cpu_h:,.0f} | {gpu_h:,.1f} | {gpu_h / 8:,.1f} h | ${cpu_h * args.cpu_price:,.0f} | ${gpu_h * args.gpu_price:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--encoder", default="medicalnet-r10-random-init")
    ap.add_argument("--workdir", default="/tmp/lesionbench-dask-scaling")
    ap.add_argument("--plan-only", action="store_true")
    ap.add_argument("--gpu-speedup", type=float, default=20.0, help="ASSUMED per-lesion speed-up of one GPU over 2 CPU threads")
    ap.add_argument("--gpu-price", type=float, default=2.5, help="ASSUMED $ per GPU-hour")
    ap.add_argument("--cpu-price", type=float, default=0.1, help="ASSUMED $ per 2-core hour")
    args = ap.parse_args()
    if not args.plan_only:
        measure(args)
    plan(args)


if __name__ == "__main__":
    main()
