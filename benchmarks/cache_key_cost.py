"""What the feature cache's content-sensitive image key costs (issue 20, item 14).

The old key of an image was ``resolved path | size | mtime``; an image rewritten with the same size and
mtime reused stale features. The new key (:func:`lesionbench.benchmark.data.reading.file_identity`) adds the
inode and the ctime (a header's data file and each file of a DICOM folder too). The alternative, a sha256
of the content, is timed for comparison. Reported: seconds per key and the ratio to the old key.

    python benchmarks/cache_key_cost.py                 # 200 files of 8 MB, a DICOM folder of 200 slices
    python benchmarks/cache_key_cost.py --mb 100 --files 50
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path


def _old_identity(path: str | Path) -> str:
    """The key before issue 20 (kept here only to measure against)."""
    p = Path(path).resolve()
    st = p.stat()
    if p.is_dir():
        files = [f.stat() for f in p.iterdir() if f.is_file()]
        return f"{p}|dir|{len(files)}|{sum(f.st_size for f in files)}|{max((f.st_mtime_ns for f in files), default=0)}"
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def _content_digest(path: str | Path) -> str:
    p = Path(path)
    files = sorted(p.iterdir()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def _time(fn, paths: list[Path], repeats: int) -> float:
    """Median over ``repeats`` of the seconds per path (the page cache is warm after the first pass)."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for p in paths:
            fn(p)
        runs.append((time.perf_counter() - t) / len(paths))
    return statistics.median(runs)


def main() -> None:
    from lesionbench.benchmark.data.reading import file_identity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200, help="image files")
    ap.add_argument("--mb", type=float, default=8.0, help="size of each image file in MB")
    ap.add_argument("--slices", type=int, default=200, help="files in the DICOM folder (512 KiB each)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        block = os.urandom(int(args.mb * 1e6))
        files = []
        for i in range(args.files):
            files.append(root / f"img{i}.nii")
            files[-1].write_bytes(block)
        series = root / "series"
        series.mkdir()
        for k in range(args.slices):
            (series / f"{k:04d}.dcm").write_bytes(block[: 512 * 1024])
        print(f"{args.files} files of {args.mb:g} MB; a folder of {args.slices} slices of 512 KiB; median of {args.repeats}")
        print(f"{'key':<28} {'per file':>12} {'ratio':>7} {'per folder':>12} {'ratio':>7}")
        base_f = _time(_old_identity, files, args.repeats)
        base_d = _time(_old_identity, [series], args.repeats)
        for name, fn in (("old: path|size|mtime", _old_identity), ("new: + inode, ctime", file_identity), ("sha256 of the content", _content_digest)):
            tf = _time(fn, files, args.repeats)
            td = _time(fn, [series], args.repeats)
            print(f"{name:<28} {tf * 1e6:>10.1f}us {tf / base_f:>7.2f} {td * 1e3:>10.2f}ms {td / base_d:>7.2f}")


if __name__ == "__main__":
    main()
