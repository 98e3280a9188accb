"""Radiomics encoder throughput: lesions per second in one process and in a pool of all cores.

Synthetic CTs are written to a temporary folder (NIfTI image + per-image label mask, one label per
lesion, like the synthetic cohort), then their lesions go through the harness's own
``extract_features`` (each image read once, its lesions encoded by ``RadiomicsEncoder.encode_lesions``),
in one process and with ``--workers`` processes (``lesionbench run --workers``). Example::

    PYTHONPATH=. python benchmarks/radiomics_speed.py                  # light parameters
    PYTHONPATH=. python benchmarks/radiomics_speed.py --params full --images 4
    PYTHONPATH=. python benchmarks/radiomics_speed.py --cohort /tmp/synth   # the demo's synthetic cohort
                                                     # (generated there first if it is not yet)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from lesionbench.baselines.radiomics import RadiomicsEncoder
from lesionbench.benchmark.encoders.features import extract_features


def make_cohort(out: Path, *, images: int, lesions_per_image: int, size: tuple[int, int, int], seed: int = 0) -> pd.DataFrame:
    """Chest-CT-like volumes (air -800 HU, noise 25 HU) with spherical lesions of 4-12 mm radius."""
    rng = np.random.default_rng(seed)
    spacing = (0.8, 0.8, 2.5)
    rows = []
    for i in range(images):
        nx, ny, nz = size
        arr = rng.normal(-800, 25, (nz, ny, nx)).astype(np.float32)
        mask = np.zeros(arr.shape, dtype=np.uint8)
        z, y, x = np.ogrid[:nz, :ny, :nx]
        for k in range(lesions_per_image):
            r = rng.uniform(4, 12)
            c = [rng.uniform(r + 5, n * s - r - 5) for n, s in zip((nx, ny, nz), spacing)]
            d2 = ((x * spacing[0] - c[0]) ** 2 + (y * spacing[1] - c[1]) ** 2 + (z * spacing[2] - c[2]) ** 2)
            inside = (d2 <= r * r) & (mask == 0)
            arr[inside] = rng.normal(rng.uniform(-50, 150), 40, int(inside.sum()))
            mask[inside] = k + 1
            rows.append({"lesion_id": f"img{i}_l{k}", "coordX": c[0], "coordY": c[1], "coordZ": c[2],
                         "image_path": str(out / f"img{i}.nii.gz"), "mask_path": str(out / f"img{i}_mask.nii.gz"),
                         "diameter_mm": 2 * r})
        img = sitk.GetImageFromArray(arr.astype(np.int16))
        img.SetSpacing(spacing)
        m = sitk.GetImageFromArray(mask)
        m.CopyInformation(img)
        sitk.WriteImage(img, str(out / f"img{i}.nii.gz"))
        sitk.WriteImage(m, str(out / f"img{i}_mask.nii.gz"))
    return pd.DataFrame(rows)


def run(manifest: pd.DataFrame, *, params: str, workers: int) -> tuple[float, np.ndarray]:
    """Seconds and features of ``extract_features`` (no cache) with ``workers`` processes, as ``run`` does it."""
    t0 = time.perf_counter()
    feats = extract_features(manifest, RadiomicsEncoder(params=params), workers=workers, cache=False, progress=False)
    return time.perf_counter() - t0, feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="light", help="light (default), full, or a parameter file")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--lesions-per-image", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 80), metavar=("X", "Y", "Z"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes of the parallel run")
    ap.add_argument("--cohort", type=Path, help="use the synthetic cohort in this folder instead (generated if absent)")
    ap.add_argument("--patients", type=int, default=64, help="patients when --cohort has to be generated")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.cohort:
            from lesionbench.benchmark.encoders.plugins import get_task
            from lesionbench.tasks.synthetic import generate_cohort

            if not (args.cohort / "cohort.json").exists():
                generate_cohort(args.cohort, patients=args.patients, workers=args.workers, progress=False)
            manifest = get_task("synthetic_site", data_dir=args.cohort / "synthetic_site").manifest()
            args.images = int(manifest["image_path"].nunique())
            args.size = ["synthetic cohort"]
        else:
            manifest = make_cohort(Path(tmp), images=args.images, lesions_per_image=args.lesions_per_image, size=tuple(args.size))
        n = len(manifest)
        t1, f1 = run(manifest, params=args.params, workers=1)
        tp, fp = run(manifest, params=args.params, workers=args.workers)
    assert np.array_equal(f1, fp, equal_nan=True), "parallel features differ from sequential ones"
    res = {
        "params": args.params, "features": int(f1.shape[1]), "lesions": n, "images": args.images,
        "image_size": list(args.size), "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
        "seconds_1_process": round(t1, 2), "lesions_per_s_1_process": round(n / t1, 2),
        "workers": args.workers, "seconds_pool": round(tp, 2), "lesions_per_s_pool": round(n / tp, 2),
        "speedup": round(t1 / tp, 2), "nan_rows": int(np.isnan(f1).all(axis=1).sum()),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
