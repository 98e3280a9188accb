"""How the leaderboard's ranking across tasks behaves: its tiers under equal encoders and under a known order.

:func:`lesionbench.leaderboard.aggregate.aggregate_ranks` (mean rank over tasks, joint patient bootstrap,
tiers from Holm-corrected adjacent tests) is run on simulated test sets with the numbers of tasks and
test patients of this benchmark:

- ``benchmark``: the ten real tasks, test patients per task from each task's split rule and cohort size
  (DeepLesion's published lesion-level test split 2,441; LUNA16's published test split 170 nodules;
  one fold of five of LUNG1 422 -> 84, RADIO 144 -> 29, NSCLC-Radiogenomics EGFR 211 -> 42, C4KC-KiTS
  malignancy 210 -> 42 and subtype 42, CRLM 197 -> 39, HCC-TACE-Seg 105 -> 21, LNDb 294 -> 59);
- ``demo``: the five synthetic tasks on the demo's default cohort (96 patients: about 19 test patients,
  the same patients in every task, so the joint bootstrap draws them alike).

Every task is simulated as a binary task scored by AUC (a simplification: multiclass and survival tasks
have other metrics, with similar sampling noise per patient), one lesion per patient, prevalence 0.4.
Encoder k scores ``q_k y + sqrt(rho) c + sqrt(1 - rho) e_k`` (``c`` noise shared by all encoders on a
case, ``rho`` = 0.5: encoders make correlated errors on the same lesions). Scenarios:

- ``null``: six equal encoders (q = 0.8, AUC about 0.71 each): a split into more than one tier is a
  false separation; its rate should stay at or below the page's level 0.05;
- ``order``: six encoders with AUCs about ``step`` apart on every task (the typical gap between
  neighbours on TumorImagingBench's board is 0.01-0.05): how often the tiers contradict the true order
  (an encoder placed in a better tier than a truly better one), how many tiers there are, and how
  often all six are separated.

Each rate is printed with its Monte-Carlo standard error sqrt(r (1 - r) / reps).

    PYTHONPATH=. python benchmarks/aggregate_tiers.py --quick     # a few minutes on 2 cores
    PYTHONPATH=. python benchmarks/aggregate_tiers.py             # the table in benchmarks/README.md
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.stats import norm

from lesionbench.benchmark.types import TaskKind
from lesionbench.leaderboard.aggregate import TaskScores, aggregate_ranks

#: Test patients per task (module docstring).
BENCHMARK = {
    "deeplesion_site": 2441, "luna16_malignancy": 170, "lung1_survival": 84, "radio_survival": 29, "radiogenomics_egfr": 42,
    "kits_malignancy": 42, "kits_subtype": 42, "crlm_survival": 39, "hcc_tace_response": 21, "lndb_malignancy": 59,
}  # fmt: skip
DEMO = {f"synthetic_{t}": 19 for t in ("site", "malignancy", "survival", "abdominal_malignancy", "mutation")}
RHO = 0.5
K = 6


def q_for_auc(auc: float, rho: float = RHO) -> float:
    """Signal q giving a binormal AUC of ``auc`` (the shared noise does not change one encoder's AUC)."""
    return float(np.sqrt(2.0) * norm.ppf(auc))


def simulate(rng: np.random.Generator, sizes: dict[str, int], aucs: list[float], shared_patients: bool) -> list[TaskScores]:
    tasks = []
    qs = [q_for_auc(a) for a in aucs]
    for name, n in sizes.items():
        y = (rng.random(n) < 0.4).astype(float)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        c = rng.normal(size=n)
        scores = {f"enc{k}": q * y + np.sqrt(RHO) * c + np.sqrt(1 - RHO) * rng.normal(size=n) for k, q in enumerate(qs)}
        patients = np.array([f"P{i}" for i in range(n)]) if shared_patients else np.array([f"{name}:{i}" for i in range(n)])
        tasks.append(TaskScores(name, TaskKind.BINARY, "auc", y, scores, patients))
    return tasks


def run(config: str, scenario: str, *, reps: int, n_boot: int, step: float, seed: int) -> dict[str, float]:
    sizes = BENCHMARK if config == "benchmark" else DEMO
    aucs = [0.71] * K if scenario == "null" else [0.71 + step * (K - 1 - k) for k in range(K)]  # enc0 best
    split = wrong = full = 0
    tiers = []
    for r in range(reps):
        rng = np.random.default_rng([seed, r])
        agg = aggregate_ranks(simulate(rng, sizes, aucs, config == "demo"), n_boot=n_boot, seed=r)
        tier = {row.encoder: row.tier for row in agg.rows}
        n_tiers = max(tier.values())
        tiers.append(n_tiers)
        split += n_tiers > 1
        # a contradiction: a truly worse encoder (higher index) in a strictly better tier than a truly better one
        wrong += any(tier[f"enc{j}"] < tier[f"enc{i}"] for i in range(K) for j in range(i + 1, K))
        full += n_tiers == K and all(tier[f"enc{k}"] == k + 1 for k in range(K))
    se = lambda p: float(np.sqrt(p * (1 - p) / reps))  # noqa: E731
    return {"split": split / reps, "split_se": se(split / reps), "wrong": wrong / reps, "wrong_se": se(wrong / reps),
            "full": full / reps, "full_se": se(full / reps), "tiers": float(np.mean(tiers))}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="200 repetitions, 300 resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reps, n_boot = (200, 300) if args.quick else (args.reps, args.n_boot)
    print(f"K = {K} encoders, rho = {RHO}, {reps} repetitions, {n_boot} joint bootstrap resamples, load {os.getloadavg()[0]:.1f}")
    print("config     tasks  scenario      P(>1 tier)        P(order contradicted)  P(all 6 separated)  mean tiers")
    for config, sizes in (("benchmark", BENCHMARK), ("demo", DEMO)):
        for scenario, step in (("null", 0.0), ("order", 0.02), ("order", 0.05)):
            t0 = time.perf_counter()
            r = run(config, scenario, reps=reps, n_boot=n_boot, step=step, seed=args.seed)
            label = "null" if scenario == "null" else f"step {step:.2f}"
            print(f"{config:<10} {len(sizes):>5}  {label:<12} {r['split']:.3f} ± {r['split_se']:.3f}    {r['wrong']:.3f} ± {r['wrong_se']:.3f}"
                  f"          {r['full']:.3f} ± {r['full_se']:.3f}       {r['tiers']:.2f}   ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
