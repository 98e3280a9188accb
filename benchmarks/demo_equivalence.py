"""Are two demo runs' outputs the same, timings aside? For refactors that must not change a number.

    python benchmarks/demo_equivalence.py RESULTS_A RESULTS_B [--cache-a DIR --cache-b DIR]

Compares every file under the two results folders: equal bytes, or equal JSON once keys that hold timings or
dates are dropped (seconds, created, generated, timings, ...); and, with the feature caches, every cached
feature vector (same fingerprint folders and lesion keys, bitwise). Prints each difference and a summary line;
exits 1 when anything differs. Issue 19's move was checked with it (README, closing note of stop 20).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

TIMING = re.compile(r"(seconds|created|generated|time_|timing|elapsed|wall|duration|started|finished)", re.I)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _text_without_dates(text: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?", "<date>", text)


def compare_results(a: Path, b: Path) -> tuple[int, list[str]]:
    same, diffs = 0, []
    for fa in sorted(p for p in a.rglob("*") if p.is_file()):
        fb = b / fa.relative_to(a)
        if not fb.is_file():
            diffs.append(f"only in {a}: {fa.relative_to(a)}")
            continue
        ba, bb = fa.read_bytes(), fb.read_bytes()
        if ba == bb:
            same += 1
        elif fa.suffix == ".json" and _strip(json.loads(ba)) == _strip(json.loads(bb)):
            same += 1
        elif fa.suffix in (".md", ".html") and _text_without_dates(ba.decode()) == _text_without_dates(bb.decode()):
            same += 1
        else:
            diffs.append(f"differs: {fa.relative_to(a)}")
    diffs += [f"only in {b}: {fb.relative_to(b)}" for fb in sorted(p for p in b.rglob("*") if p.is_file()) if not (a / fb.relative_to(b)).is_file()]
    return same, diffs


def _features(root: Path) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for f in root.rglob("*.npz"):
        z = np.load(f, allow_pickle=False)
        keys = z[next(k for k in z.files if "key" in k)]
        feats = z[next(k for k in z.files if "feat" in k or k in ("X", "values"))]
        for k, v in zip(keys, feats):
            out[(str(f.parent.relative_to(root)), str(k))] = v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--cache-a", type=Path, help="feature cache of run A ($LESIONBENCH_CACHE/features)")
    p.add_argument("--cache-b", type=Path, help="feature cache of run B")
    args = p.parse_args(argv)
    same, diffs = compare_results(args.a, args.b)
    for d in diffs:
        sys.stdout.write(d + "\n")
    line = f"{same} result files equal (timings and dates aside), {len(diffs)} differ"
    if args.cache_a and args.cache_b:
        fa, fb = _features(args.cache_a), _features(args.cache_b)
        equal = set(fa) == set(fb) and all(np.array_equal(fa[k], fb[k], equal_nan=True) for k in fa)
        line += f"; {len(fa)} vs {len(fb)} cached feature vectors, {'bitwise equal' if equal else 'DIFFERENT'}"
        diffs += [] if equal else ["features"]
    sys.stdout.write(line + "\n")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
