"""Throughput and peak memory of ``lesionbench extract`` against the reference ``fmcib.run.get_features``.

Both run on the same seeds CSV (full-size synthetic CTs, 1-6 lesions per volume) with the same random
checkpoint in the released format, one after the other in this one script run, each in its own process.
Reported per run: wall time of the whole process, lesions per second, peak RSS of the process tree
(sampled every 50 ms with psutil), and the max abs difference of the features. Both sides are whole
commands (Python start-up, imports, weights, reading, output file), timed the same way. lesionbench runs
once before and once after the reference (the machine's load drifts; the ratio is given for both), on
one lesion (its fixed cost), on the first half of the lesions (marginal cost per lesion), and on
further cohorts of ``--scaling`` sizes, to show that its peak memory does not grow with the lesion count.

    python benchmarks/extract_speed.py [--workdir /tmp/lesionbench-speed] [--volumes 5] [--lesions 24]
        [--scaling 48,96] [--ref-tools ../shared/tools/fmcib-reference] [--checkpoint CKPT]

Needs the reference venv (``bash ../shared/tools/fmcib-reference/setup.sh /tmp/fmcib-ref``) for the
reference run and the checkpoint (made with its ``make_checkpoint.py`` when missing; 704 MiB, kept in the
work folder, never in the repository).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
#: ../shared/tools/fmcib-reference beside the checkout ($LESIONBENCH_SHARED overrides ../shared), or --ref-tools
TOOLS = Path(os.environ.get("LESIONBENCH_SHARED") or REPO.parent / "shared") / "tools" / "fmcib-reference"


#: Voxel noise (HU, standard deviation) per workload: "smooth" compresses about 3:1 in .nii.gz (the first
#: workload measured), "noise" barely (a noise-like texture, ~70 MB per volume, as in issue 16).
TEXTURES = {"smooth": 20.0, "noise": 300.0}


def make_volumes(workdir: Path, n_volumes: int, n_lesions: int, slices: int, seed: int = 0, texture: str = "smooth") -> Path:
    """Full-size synthetic chest-like CTs (512 x 512 x slices, 0.7 x 0.7 x 1.25 mm, .nii.gz) and a seeds CSV."""
    import SimpleITK as sitk

    tag = "" if texture == "smooth" else f"_{texture}"
    csv = workdir / f"seeds_{n_volumes}x{n_lesions}_{slices}{tag}.csv"
    if csv.exists():
        return csv
    rng = np.random.default_rng(seed)
    # 1-6 lesions per volume, n_lesions in total
    counts = np.ones(n_volumes, dtype=int)
    while counts.sum() < n_lesions:
        i = rng.integers(n_volumes)
        if counts[i] < 6:
            counts[i] += 1
    if counts.sum() != n_lesions:
        raise SystemExit(f"cannot place {n_lesions} lesions in {n_volumes} volumes with 1-6 each")
    rows = []
    zz, yy, xx = np.ogrid[:slices, :512, :512]
    body = ((xx - 256) / 220.0) ** 2 + ((yy - 256) / 160.0) ** 2 <= 1
    for v in range(n_volumes):
        arr = np.full((slices, 512, 512), -1000, dtype=np.int16)
        arr[np.broadcast_to(body, arr.shape)] = 40
        arr += rng.normal(0, TEXTURES[texture], arr.shape).astype(np.int16)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.7, 0.7, 1.25))
        img.SetOrigin((-179.0 + v, -170.0, -300.0 - 10 * v))
        path = workdir / f"{csv.stem}_vol{v}.nii.gz"  # volumes of one configuration (lesions are burnt in)
        for _ in range(counts[v]):
            idx = (int(rng.integers(120, 392)), int(rng.integers(150, 362)), int(rng.integers(25, slices - 25)))
            r = int(rng.integers(4, 12))
            sl = tuple(slice(c - r, c + r) for c in idx[::-1])
            arr[sl] = 60 + int(rng.integers(0, 200))
            pt = img.TransformContinuousIndexToPhysicalPoint([c + 0.3 for c in idx])
            rows.append({"image_path": path.name, "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2], "lesion": f"v{v}l{len(rows)}"})
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(path), useCompression=True)
        print(f"  wrote {path.name}: {counts[v]} lesions", flush=True)
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float, str, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in GiB, combined output, CPU seconds
    (user + system) of the whole process tree)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        import psutil
    except ImportError:  # fall back to the largest single descendant
        psutil = None
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True)
    peak = [0]
    if psutil is not None:
        def poll() -> None:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    procs = [p] + p.children(recursive=True)
                    peak[0] = max(peak[0], sum(q.memory_info().rss for q in procs if q.is_running()))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
                time.sleep(0.05)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if psutil is None:
        peak[0] = after.ru_maxrss * 1024
    return wall, peak[0] / 2**30, out, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lesionbench-speed"))
    ap.add_argument("--volumes", type=int, default=5)
    ap.add_argument("--lesions", type=int, default=24)
    ap.add_argument("--scaling", default="48,96", help="further lesion counts (lesionbench only) for the peak-memory check; '' for none")
    ap.add_argument("--slices", type=int, default=200, help="slices per volume (the reference was measured on 512x512x200 in ENVIRONMENT.md)")
    ap.add_argument("--checkpoint", type=Path, help="random checkpoint in the released format (made if missing)")
    ap.add_argument("--ref-python", default="/tmp/fmcib-ref/bin/python")
    ap.add_argument("--ref-tools", type=Path, default=TOOLS, help="folder with make_checkpoint.py and run_reference.py")
    ap.add_argument("--batch-size", type=int, default=16, help="lesionbench's patches per forward pass (its default; the reference keeps its own 4)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--texture", choices=sorted(TEXTURES), default="smooth",
                    help="smooth: the first workload (.nii.gz ~3:1); noise: the incompressible one (issue 16)")
    ap.add_argument("--reference-seconds", type=float,
                    help="with --skip-reference: a recorded reference wall time on this workload, for the ratio")
    ap.add_argument("--src", type=Path, default=REPO, help="the lesionbench checkout to measure (e.g. one before a change)")
    a = ap.parse_args()

    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"volumes: {a.volumes} x 512x512x{a.slices}, {a.lesions} lesions in {work}", flush=True)
    csv = make_volumes(work, a.volumes, a.lesions, a.slices, texture=a.texture)
    half = work / (csv.stem + "_half.csv")
    pd.read_csv(csv).iloc[: a.lesions // 2].to_csv(half, index=False)
    one = work / (csv.stem + "_one.csv")
    pd.read_csv(csv).iloc[:1].to_csv(one, index=False)
    per_volume = a.lesions / a.volumes
    scaling = sorted(int(v) for v in a.scaling.split(",") if v.strip())
    scaled = {k: make_volumes(work, max(math.ceil(k / per_volume), math.ceil(k / 6)), k, a.slices, seed=k, texture=a.texture) for k in scaling}
    ckpt = a.checkpoint or work / "bnrand.torch"
    if not ckpt.exists():
        subprocess.run([a.ref_python, str(a.ref_tools / "make_checkpoint.py"), str(ckpt), "bnrand"], check=True, stdout=subprocess.DEVNULL)
    n = len(pd.read_csv(csv))
    print(f"measuring {a.src.resolve()}; .nii.gz size {sum(p.stat().st_size for p in work.glob(csv.stem + '_vol*.nii.gz')) / 2**20:.0f} MiB in all", flush=True)
    env = dict(os.environ, PYTHONPATH=str(a.src.resolve()) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def ours(table: Path, tag: str) -> tuple[float, float, np.ndarray, float]:
        out = work / f"ours_{csv.stem}_{tag}.parquet"
        cmd = [sys.executable, "-m", "lesionbench", "-q", "extract", str(table), "--encoder", "fmcib", "--weights", str(ckpt),
               "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--no-cache", "-o", str(out)]
        wall, rss, _, cpu = run_measured(cmd, env=env)
        feats = pd.read_parquet(out)[[f"pred_{i}" for i in range(4096)]].to_numpy(np.float32)
        return wall, rss, feats, cpu

    load0 = os.getloadavg()
    # one lesion first: warms the page cache (checkpoint, volumes) for everyone and gives the fixed cost
    w_one, r_one, _, _ = ours(one, "one")
    print(f"lesionbench (1 lesion, fixed cost: start-up, imports, weights, one image): {w_one:.1f} s, peak RSS {r_one:.2f} GiB", flush=True)
    w_half, r_half, _, _ = ours(half, "half")
    n_half = len(pd.read_csv(half))
    print(f"lesionbench ({n_half} lesions): {w_half:.1f} s, peak RSS {r_half:.2f} GiB", flush=True)
    w, r, f_ours, cpu = ours(csv, "full")
    cores = os.cpu_count() or 1
    print(f"lesionbench ({n} lesions): {w:.1f} s, {n / w:.3f} lesions/s, peak RSS {r:.2f} GiB  [load {os.getloadavg()[0]:.1f}]", flush=True)
    # the work itself bounds the wall time from below: its CPU seconds spread over every core
    print(f"  CPU time {cpu:.1f} s (user + system, whole process tree) = at least {cpu / cores:.1f} s of wall on {cores} cores", flush=True)
    if not a.skip_reference:
        prefix = work / "reference"
        cmd = [a.ref_python, str(a.ref_tools / "run_reference.py"), str(csv), str(ckpt), str(prefix)]
        wr, rr, out, cpu_ref = run_measured(cmd)
        inner = next((ln for ln in out.splitlines() if ln.startswith("get_features:")), "")
        print(f"reference   ({n} lesions): {wr:.1f} s, {n / wr:.3f} lesions/s, peak RSS {rr:.2f} GiB  [{inner}]  [load {os.getloadavg()[0]:.1f}]", flush=True)
        print(f"  CPU time {cpu_ref:.1f} s; ratio of CPU times reference / lesionbench {cpu_ref / cpu:.1f}x; "
              f"best end-to-end ratio this CPU work allows on {cores} cores: {wr / (cpu / cores):.1f}x", flush=True)
        w2, r2, f_ours2, _ = ours(csv, "full_after")
        print(f"lesionbench ({n} lesions, again after the reference): {w2:.1f} s, {n / w2:.3f} lesions/s, peak RSS {r2:.2f} GiB  [load {os.getloadavg()[0]:.1f}]", flush=True)
        f_ref = np.load(str(prefix) + ".npy")
        print(f"max |features lesionbench - reference| = {np.abs(f_ours - f_ref).max():.2e} (max |feature| {np.abs(f_ref).max():.1f}); "
              f"run to run {np.abs(f_ours - f_ours2).max():.2e}")
        print(f"throughput ratio lesionbench / reference, end to end (whole processes): {wr / w:.1f}x (run before), {wr / w2:.1f}x (run after), "
              f"{wr / max(w, w2):.1f}x (slower of the two); peak RSS {max(r, r2):.2f} vs {rr:.2f} GiB")
        marginal = (w - w_half) / (n - n_half)
        ref_inner = float(inner.split(" in ")[1].split()[0]) if " in " in inner else wr
        print(f"per lesion: lesionbench {marginal:.2f} s (marginal, {n_half}->{n} lesions) vs reference {ref_inner / n:.2f} s "
              f"(get_features time / lesions) = {ref_inner / n / marginal:.1f}x")
    elif a.reference_seconds:
        print(f"throughput ratio lesionbench / recorded reference ({a.reference_seconds:.1f} s, not rerun here), end to end: {a.reference_seconds / w:.1f}x")
    np.save(work / f"ours_{csv.stem}_{a.src.resolve().name}.npy", f_ours)  # to compare features across checkouts (--src)
    sizes = {1: r_one, n_half: r_half, n: r}
    for k, table in scaled.items():
        wk, rk, _, _ = ours(table, f"scaling{k}")
        nv = pd.read_csv(table)["image_path"].nunique()
        print(f"lesionbench ({k} lesions in {nv} volumes): {wk:.1f} s, {k / wk:.3f} lesions/s, peak RSS {rk:.2f} GiB", flush=True)
        sizes[k] = rk
    print("peak RSS lesionbench by lesion count: " + ", ".join(f"{k}: {v:.2f} GiB" for k, v in sorted(sizes.items())))
    print(f"load average (1, 5, 15 min) at start {tuple(round(v, 1) for v in load0)}, at end {tuple(round(v, 1) for v in os.getloadavg())}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
