"""Partial reading: seconds and peak RSS to cut the patches of one CT, read lazily vs read whole.

Three files of one 512 x 512 x ``--slices`` int16 volume (0.7 x 0.7 x 1.25 mm, noise-like texture): a DICOM
series (one uncompressed file per slice, written with SimpleITK), the same series JPEG 2000 (lossless)
compressed, and a raw ``.nrrd``. For each, ``cut_patches`` cuts the FMCIB patches (50^3 at 1 mm) of
``--lesions`` seeds spread along the volume (each count in turn), in a fresh process per measurement:

- **lazy**: the code as it is (the series decoded slice file by slice file, the ``.nrrd`` memory-mapped);
- **whole**: the same code with ``map_image`` switched off, so the image is read whole by ``read_image``
  (what lesionbench did before for both formats).

Reported per run: seconds of ``cut_patches`` (opening the image included), the process's peak RSS, and its
RSS after the imports (the rest is the reading). The patches of both modes must be equal (checked). Runs
alternate lazy/whole ``--repeats`` times; the files are read once first so that both see a warm page cache.

    python benchmarks/partial_reading.py [--workdir /tmp/lesionbench-partial] [--slices 200] [--lesions 1,4] [--repeats 1]
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

REPO = Path(__file__).resolve().parents[1]


def make_volume(workdir: Path, slices: int) -> dict[str, Path]:
    """The DICOM series folders and the raw .nrrd of one synthetic chest-like CT (made once per size)."""
    import SimpleITK as sitk

    files = {"DICOM series": workdir / f"series_{slices}", "DICOM series, JPEG 2000": workdir / f"series_j2k_{slices}", "raw .nrrd": workdir / f"volume_{slices}.nrrd"}
    if all((f / f"s{slices - 1:04d}.dcm").exists() for f in list(files.values())[:2]) and files["raw .nrrd"].exists():
        return files
    rng = np.random.default_rng(0)
    zz, yy, xx = np.ogrid[:slices, :512, :512]
    arr = np.full((slices, 512, 512), -1000, dtype=np.int16)
    arr[np.broadcast_to(((xx - 256) / 220.0) ** 2 + ((yy - 256) / 160.0) ** 2 <= 1, arr.shape)] = 40
    arr += rng.normal(0, 300, arr.shape).astype(np.int16)  # a noise-like texture, as extract_speed --texture noise
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 1.25))
    img.SetOrigin((-179.0, -170.0, -300.0))
    sitk.WriteImage(img, str(files["raw .nrrd"]), useCompression=False)
    for name, uid in (("DICOM series", "1.2.826.0.1.3680043.8.498.77"), ("DICOM series, JPEG 2000", "1.2.826.0.1.3680043.8.498.78")):
        files[name].mkdir(parents=True, exist_ok=True)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        if "JPEG" in name:
            writer.SetUseCompression(True)
            writer.SetCompressor("JPEG2000")
        for k in range(slices):
            plane = img[:, :, k : k + 1]
            pos = img.TransformIndexToPhysicalPoint((0, 0, k))
            for key, value in {
                "0008|0060": "CT", "0020|000d": uid + ".1", "0020|000e": uid, "0008|0018": f"{uid}.2.{k}", "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.4f}" for v in pos), "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": "1.25",
            }.items():  # fmt: skip
                plane.SetMetaData(key, value)
            writer.SetFileName(str(files[name] / f"s{k:04d}.dcm"))
            writer.Execute(plane)
    return files


def lesions_of(path: Path, n: int) -> list[dict[str, float]]:
    from lesionbench.benchmark.data.reading import read_image

    img = read_image(path)
    nz = img.GetSize()[2]
    rng = np.random.default_rng(1)
    out = []
    for z in np.linspace(30, nz - 30, n) if n > 1 else [nz / 2]:
        pt = img.TransformContinuousIndexToPhysicalPoint((float(rng.uniform(150, 360)), float(rng.uniform(150, 360)), float(z)))
        out.append({"coordX": pt[0], "coordY": pt[1], "coordZ": pt[2]})
    return out


def _peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM: ru_maxrss would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: str, mode: str, lesions_json: str, out: str) -> None:
    """One measurement, in a process of its own."""
    import scipy.ndimage  # noqa: F401 (imported before the clock starts, as in a running extraction)
    import SimpleITK  # noqa: F401
    import torch  # noqa: F401 (the patch grid uses it)

    import lesionbench.benchmark.encoders.features as features
    import lesionbench.benchmark.patches.cutting as patches_module
    from lesionbench.benchmark.types import PatchSpec

    if mode == "whole":
        patches_module.map_image = lambda p: None  # the whole read, as before partial reading
    lesions = json.loads(lesions_json)
    rss0 = _peak_rss()
    t = time.perf_counter()
    patches = features.cut_patches(path, lesions, PatchSpec())
    seconds = time.perf_counter() - t
    peak = _peak_rss()
    if any(isinstance(p, str) for p in patches):
        raise SystemExit(f"a lesion failed: {patches}")
    np.save(out, np.stack(patches))
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "rss_after_imports": rss0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lesionbench-partial"))
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--lesions", default="1,4", help="lesion counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    files = make_volume(args.workdir, args.slices)
    print(f"volume 512x512x{args.slices}: {time.perf_counter() - t:.1f} s to make or find; load average {os.getloadavg()}")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for (name, path), count in ((f, int(n)) for f in files.items() for n in args.lesions.split(",")):
        lesions = json.dumps(lesions_of(path, count))  # also warms the page cache
        rows: dict[str, list[dict]] = {"lazy": [], "whole": []}
        for _ in range(args.repeats):
            for mode in rows:
                out = args.workdir / f"patches_{mode}.npy"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), mode, lesions, str(out)]
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                rows[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
        same = np.array_equal(np.load(args.workdir / "patches_lazy.npy"), np.load(args.workdir / "patches_whole.npy"))
        print(f"\n{name}, {count} lesion(s) (patches equal: {same}); load average {os.getloadavg()}")
        for mode, rs in rows.items():
            secs = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            peak = max(r["peak_rss"] for r in rs) / 2**20
            base = max(r["rss_after_imports"] for r in rs) / 2**20
            print(f"  {mode:5s}: cut_patches {secs} s; peak RSS {peak:.0f} MiB ({peak - base:.0f} MiB above the {base:.0f} MiB after imports)")
        if not same:
            raise SystemExit("the patches differ")


if __name__ == "__main__":
    main()
