"""The code-submission sandbox's overhead against running the same encoder directly: start-up and per lesion.

One encoder (the example plug-in), one staged input, three ways, each a whole process timed from launch to exit:

* **direct**: ``python -m lesionbench serve-contract --input IN --output OUT`` on the host (the same entry
  command and code the sandboxes run);
* **podman**: the example encoder's image (built here from the base image, as a participant would) under the
  runner's default restrictions (``--network none --read-only --cap-drop all`` ..., memory/pids/cpu limits);
* **bubblewrap**: the example encoder's wheel in a venv on the base root filesystem (the venv's install is
  timed separately: it happens once per submission).

Each way runs on a small subset (``--small`` lesions) and a large one (every lesion of the cohort ``--copies``
times under new ids); start-up is the intercept and the per-lesion cost the slope of the two (best of
``--repeats``). Outputs are checked and must be identical.

``python benchmarks/sandbox_overhead.py --workdir /tmp/sandbox-bench`` (root: podman is rootful here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.sandbox.base_image import ensure_base
from lesionbench.sandbox.contract import read_outputs
from lesionbench.sandbox.evaluate import PACKAGE_COMMAND, install_package, package_binds, stage_inputs
from lesionbench.sandbox.runner import EngineConfig, Limits, output_area, run_bubblewrap, run_container
from lesionbench.tasks.synthetic import ensure_cohort

ENCODER = "example-intensity-histogram"
EXAMPLE = ROOT / "examples" / "lesionbench-example-encoder"


def _example_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dest), str(EXAMPLE)], check=True)
    return next(dest.glob("*.whl"))


def _example_image(engine: EngineConfig, base_image: str, ctx: Path) -> str:
    _example_wheel(ctx / "wheels")
    (ctx / "Containerfile").write_text(f"""FROM {base_image}
USER 0:0
COPY wheels /tmp/wheels
RUN pip=$(ls /usr/share/python-wheels/pip-*.whl) && python3 $pip/pip install -q --no-index --no-deps --break-system-packages /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER 65534:65534
ENV LESIONBENCH_ENCODER={ENCODER}
""")
    tag = "localhost/lesionbench-bench-example:1"
    subprocess.run([*engine.command, "build", "-q", "--layers=false", "--network", "none", "--pull=never", "-t", tag, str(ctx)], check=True, capture_output=True)
    return tag


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--patients", type=int, default=12, help="synthetic patients (lesions: about 2.2 per patient)")
    p.add_argument("--small", type=int, default=2, help="lesions of the small subset")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--copies", type=int, default=5, help="the large subset: every lesion of the cohort this many times, under new ids")
    args = p.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cohort = ensure_cohort(work / "cohort", patients=args.patients, seed=7, progress=False)
    manifest = get_task("synthetic_malignancy", data_dir=cohort / "synthetic_malignancy").manifest().reset_index(drop=True)
    podman, bwrap = EngineConfig.podman(), EngineConfig.bubblewrap()
    base = ensure_base(engine=list(podman.command))  # cached in $LESIONBENCH_SANDBOX_CACHE
    image = _example_image(podman, base.image, work / "ctx")
    limits = Limits(wall_s=1800)
    t_install = []
    for k in range(args.repeats):
        inst = work / f"install{k}"
        shutil.rmtree(inst, ignore_errors=True)
        inst.mkdir()
        inst.chmod(0o755)
        t_install.append(_timed(lambda inst=inst: install_package([_example_wheel(work / "wheels")], inst, engine=bwrap, base=base, limits=limits)))
    venv_work = work / f"install{args.repeats - 1}"

    times: dict[str, dict[int, float]] = {"direct": {}, "podman": {}, "bubblewrap": {}}
    # the large subset repeats the cohort's lesions (each copy is encoded again: patch cut + forward pass)
    large = pd.concat([manifest.assign(lesion_id=manifest["lesion_id"] + f"#{k}") for k in range(args.copies)], ignore_index=True)
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    sizes = (args.small, len(large))
    for n in sizes:
        stage = work / f"stage{n}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        stage.chmod(0o755)
        ids = stage_inputs(large.iloc[:n], stage / "input")
        feats = {}
        for way, per_size in times.items():
            best = float("inf")
            for r in range(args.repeats):
                with output_area(stage / f"out-{way}-{r}", limits) as out:
                    if way == "direct":
                        env = {**os.environ, "PYTHONPATH": str(ROOT)}
                        cmd = [sys.executable, "-m", "lesionbench", "-q", "serve-contract", "--encoder", ENCODER, "--input", str(stage / "input"), "--output", str(out)]
                        t = _timed(lambda cmd=cmd, env=env: subprocess.run(cmd, env=env, check=True))
                    elif way == "podman":
                        rec = run_container(podman, image, stage / "input", out, limits)
                        assert rec.exit_code == 0, rec.log_tail
                        t = rec.wall_s
                    else:
                        rec = run_bubblewrap(bwrap, base.rootfs, package_binds(stage / "input", out, venv_work), PACKAGE_COMMAND, out, limits, {"LESIONBENCH_ENCODER": ENCODER})
                        assert rec.exit_code == 0, rec.log_tail
                        t = rec.wall_s
                    feats[way] = read_outputs(out, ids, max_bytes=limits.output_bytes).vectors
                best = min(best, t)
            per_size[n] = best
        assert np.array_equal(feats["direct"], feats["podman"]) and np.array_equal(feats["direct"], feats["bubblewrap"]), "features differ"
    subprocess.run([*podman.command, "rmi", "-f", image], capture_output=True, check=False)

    small, large = sizes
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; lesions {small} and {large}; best of {args.repeats}")
    print(f"bubblewrap venv install (once per submission): {min(t_install):.2f} s")
    print("| way | wall, small | wall, large | start-up | per lesion | start-up overhead | per-lesion ratio |")
    print("|---|---|---|---|---|---|---|")
    d_slope = (times["direct"][large] - times["direct"][small]) / (large - small)
    d_start = times["direct"][small] - d_slope * small
    for way, t in times.items():
        slope = (t[large] - t[small]) / (large - small)
        start = t[small] - slope * small
        print(f"| {way} | {t[small]:.2f} s | {t[large]:.2f} s | {start:.2f} s | {slope * 1000:.0f} ms | {start - d_start:+.2f} s | {slope / d_slope:.2f}x |")
    print("features identical in all three ways: yes")


if __name__ == "__main__":
    main()
