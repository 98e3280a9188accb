"""Supervised baseline training time per (task, fraction, seed) fit, on CPU, at the demo's size.

Synthetic 50^3 patches in the harness's scaling ((HU + 1024) / 3072) with a planted signal (a
lesion of class-dependent brightness and size in lung-like background) stand in for the synthetic
cohort: ``--n-train`` training and ``--n-val`` validation patches (the demo has ~100 and ~30). For
each label fraction the encoder is fitted on that share of the training patches (one fit = what the
scorer does per (fraction, seed)), then encodes all patches. Reported: seconds per fit, epochs run,
held-out AUC of the network's own predictions, and the projected total for the demo's
3 tasks x 4 fractions x 5 seeds. Example::

    PYTHONPATH=. python benchmarks/supervised_speed.py
    PYTHONPATH=. python benchmarks/supervised_speed.py --encoder supervised-cnn --seeds 2

With ``--cohort-patches FILE.npz`` it runs on the synthetic cohort's own patches instead, for its
three tasks (site, 8 classes; malignancy; survival through the 2-year label) and their train / val /
test splits. The file holds ``patches`` (from ``load_patches(manifest, encoder.meta.patch)``),
``split``, ``site``, ``malignant``, ``time`` and ``event`` in manifest row order.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lesionbench.benchmark.encoders.plugins import get_encoder


def make_patches(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Binary task: class 1 lesions are denser (+60 HU vs -40 HU) and larger, with 40 HU noise."""
    z, y, x = np.mgrid[:50, :50, :50]
    labels = rng.integers(0, 2, n)
    patches = rng.normal(-750, 40, (n, 1, 50, 50, 50)).astype(np.float32)
    for i, lab in enumerate(labels):
        c = 25 + rng.integers(-3, 4, 3)
        r = rng.uniform(7, 11) if lab else rng.uniform(5, 9)
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
        patches[i, 0][inside] = rng.normal(60 if lab else -40, 40, int(inside.sum()))
    return (patches + 1024) / 3072, labels


def cohort_runs(path: Path, args: argparse.Namespace) -> list[dict]:
    """Fits on the synthetic cohort's tasks: per task, fraction and seed, like the scorer."""
    from sklearn.metrics import balanced_accuracy_score

    from lesionbench.benchmark.scoring.endpoints import two_year_label

    d = np.load(path, allow_pickle=False)
    x, split = d["patches"], d["split"]
    tasks = {
        "synthetic_site": d["site"].astype(float),
        "synthetic_malignancy": d["malignant"].astype(float),
        "synthetic_survival": np.asarray(two_year_label(d["time"], d["event"]), dtype=float),
    }
    runs = []
    for task, y in tasks.items():
        ok = np.isfinite(y)
        tr, va, te = (np.flatnonzero((split == s) & ok) for s in ("train", "val", "test"))
        n_classes = int(np.nanmax(y)) + 1
        for frac in args.fractions:
            for seed in range(args.seeds):
                k = max(4, int(round(frac * len(tr))))
                sub = np.sort(np.random.default_rng([seed, int(frac * 1000)]).choice(tr, k, replace=False))
                enc = get_encoder(args.encoder, seed=seed, device="cpu", n_classes=n_classes)
                t0 = time.perf_counter()
                enc.fit(x[sub], y[sub].astype(int), val=(x[va], y[va].astype(int)))
                t_fit = time.perf_counter() - t0
                t0 = time.perf_counter()
                enc.encode(x)
                t_enc = time.perf_counter() - t0
                proba = enc.predict_proba(x[te])
                yt = y[te].astype(int)
                if n_classes > 2:
                    score = {"balanced_accuracy": balanced_accuracy_score(yt, proba.argmax(1))}
                else:
                    score = {"auc": roc_auc_score(yt, proba[:, 1]) if len(set(yt)) > 1 else float("nan")}
                runs.append({"task": task, "fraction": frac, "seed": seed, "n_train": k, "fit_s": round(t_fit, 2),
                             "epochs": len(enc.history_), "encode_all_s": round(t_enc, 2),
                             **{f"test_{m}": round(float(v), 3) for m, v in score.items()}})
                print(json.dumps(runs[-1]), flush=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="supervised-cnn")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-val", type=int, default=30)
    ap.add_argument("--n-test", type=int, default=60)
    ap.add_argument("--fractions", type=float, nargs="+", default=(1.0, 0.5, 0.2, 0.1))
    ap.add_argument("--seeds", type=int, default=1, help="seeds per fraction")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--cohort-patches", type=Path, help="run on the synthetic cohort's patches (see the docstring)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cohort_patches:
        runs = cohort_runs(args.cohort_patches, args)
        per_fit = float(np.mean([r["fit_s"] + r["encode_all_s"] for r in runs]))
        n_tasks = len({r["task"] for r in runs})
        res = {"encoder": args.encoder, "cohort": str(args.cohort_patches), "load_avg_1min": os.getloadavg()[0],
               "mean_fit_plus_encode_s": round(per_fit, 2),
               "total_s": round(sum(r["fit_s"] + r["encode_all_s"] for r in runs), 1),
               f"projected_demo_s ({n_tasks} tasks x {len(args.fractions)} fractions x 5 seeds)":
                   round(per_fit * n_tasks * len(args.fractions) * 5, 1),
               "runs": runs}
        print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=2))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return
    rng = np.random.default_rng(0)
    xtr, ytr = make_patches(args.n_train, rng)
    xva, yva = make_patches(args.n_val, rng)
    xte, yte = make_patches(args.n_test, rng)
    # One untimed warm-up fit: first-call costs (lazy imports, allocator) are not per-fit costs.
    get_encoder(args.encoder, epochs=1, device="cpu").fit(xtr[:8], ytr[:8])
    runs = []
    for frac in args.fractions:
        for seed in range(args.seeds):
            k = max(4, int(round(frac * args.n_train)))
            sub = np.random.default_rng([seed, int(frac * 1000)]).choice(args.n_train, k, replace=False)
            enc = get_encoder(args.encoder, seed=seed, device="cpu")
            t0 = time.perf_counter()
            enc.fit(xtr[sub], ytr[sub], val=(xva, yva))
            t_fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            enc.encode(np.concatenate([xtr, xva, xte]))
            t_enc = time.perf_counter() - t0
            auc = roc_auc_score(yte, enc.predict_proba(xte)[:, 1])
            runs.append({"fraction": frac, "seed": seed, "n_train": k, "fit_s": round(t_fit, 2),
                         "epochs": len(enc.history_), "encode_all_s": round(t_enc, 2), "test_auc": round(float(auc), 3)})
            print(json.dumps(runs[-1]), flush=True)
    per_fit = float(np.mean([r["fit_s"] + r["encode_all_s"] for r in runs]))
    res = {
        "encoder": args.encoder, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0], "n_train": args.n_train, "n_val": args.n_val,
        "mean_fit_plus_encode_s": round(per_fit, 2),
        "projected_demo_s (3 tasks x 4 fractions x 5 seeds)": round(per_fit * 60, 1),
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
