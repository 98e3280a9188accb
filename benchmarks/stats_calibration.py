"""Calibration of lesionbench's paired tests and patient-bootstrap CIs on clustered lesions.

Null simulations (two equally good models) with several lesions per patient whose labels and model
errors are correlated within the patient, as in DeepLesion or LUNA16. Measures, each with its
Monte-Carlo standard error sqrt(r (1 - r) / reps):

- type-I error at alpha 0.05 of ``lesionbench compare``'s test (:func:`metrics.paired_comparison`,
  two-sided, patients as the resampling unit), for (a) two exchangeable models, one of them reported
  on another scale (a monotone transform: the metric is unchanged, so must be p), and (b) two models
  with the same AUC whose errors differ in structure (one mostly shared by a patient's lesions, one
  mostly per lesion), which are not exchangeable;
- the same for the leaderboard page's tests (:func:`lesionbench.leaderboard._stats.versus_top`: the
  entry with the best observed AUC against each other entry, two-sided, step-down max-T over all pairs): the rate
  of any entry marked significant among three equally good models;
- coverage of the 95% patient-bootstrap CI of one model's AUC and of the difference of two models'
  AUCs (null and non-null difference), against the true values from one large simulated cohort.

Reference rows (not what lesionbench does) show why: the same tests resampling single lesions, and
the one-sided "top is better" test after picking the top from the data; and what a BCa interval on the
same patient resamples would cover instead of the percentile interval.

Issue 21's designs (``calibration_designs.py``, each a ``--part``): crossing ROC curves (binormal, equal
AUC 0.75, B's positives 3x as spread, r = 0.9; n = 100, n = 300 and 40 patients x 5 lesions with a
shared patient effect), a ``synthetic_site``-like multiclass split (19 patients / 42 lesions / 8
classes, models good at different classes), binary AUC coverage on small or imbalanced splits,
clustered survival under heavy censoring (19 / 42 and 50 / 110, the logged log-rank), families of
K = 2..20 entries on the page (Holm against step-down max-T on the same draws, ``calibration_families.py``),
and rank-interval coverage. Coverage rows are read against 0.95: the
last column is (rate - 0.95) / MC SE; intervals that stay below 0.93 are named "approximate" at the end.

    PYTHONPATH=. python benchmarks/stats_calibration.py --quick --part clustered   # < 60 s
    PYTHONPATH=. python benchmarks/stats_calibration.py --part crossing            # one design
    PYTHONPATH=. python benchmarks/stats_calibration.py --n-boot 500 --n-perm 500  # the tables in benchmarks/README.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # calibration_designs, beside this file


@dataclass(frozen=True)
class Design:
    """Cohort shape and correlation: ``rho`` is the within-patient correlation of the lesions' latent
    malignancy (labels are correlated through it, less so with more ``label_noise``); a model's
    error has variance ``noise**2``, a share ``tau`` of it common to the patient's lesions (the
    error-structure scenario uses 0.9 and 0.1 instead)."""

    patients: int = 40
    lesions: int = 5
    rho: float = 0.5
    noise: float = 1.0
    label_noise: float = 0.7
    tau: float = 0.6


def simulate(rng: np.random.Generator, d: Design, models: list[tuple[float, float]]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Labels, one score vector per ``(noise, tau)`` model and the patient id of each lesion."""
    shape = (d.patients, d.lesions)
    z = np.sqrt(d.rho) * rng.normal(size=(d.patients, 1)) + np.sqrt(1 - d.rho) * rng.normal(size=shape)
    y = (z + d.label_noise * rng.normal(size=shape) > 0.3).astype(int)
    scores = []
    for sd, tau in models:
        err = np.sqrt(tau) * rng.normal(size=(d.patients, 1)) + np.sqrt(1 - tau) * rng.normal(size=shape)
        scores.append((z + sd * err).ravel())
    return y.ravel(), scores, np.repeat(np.arange(d.patients), d.lesions)


def true_auc(d: Design, models: list[tuple[float, float]], patients: int = 40_000, seed: int = 12345) -> list[float]:
    """Population AUC of each model: one large cohort of the same design."""
    from sklearn.metrics import roc_auc_score

    big = Design(patients, d.lesions, d.rho, d.noise, d.label_noise, d.tau)
    y, scores, _ = simulate(np.random.default_rng(seed), big, models)
    return [float(roc_auc_score(y, s)) for s in scores]


def _rate(hits: list[bool]) -> tuple[float, float, int]:
    r = float(np.mean(hits)) if hits else float("nan")
    return r, float(np.sqrt(r * (1 - r) / len(hits))) if hits else float("nan"), len(hits)


def squash(s: np.ndarray) -> np.ndarray:
    """A monotone transform to another scale (probabilities squeezed towards 0 and 1): AUC unchanged."""
    return 1 / (1 + np.exp(-4 * s))


def bca_interval(theta: float, boot: np.ndarray, jack: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Efron's bias-corrected and accelerated interval from the bootstrap values and the leave-one-patient-out
    jackknife values (a reference row: lesionbench reports the percentile interval)."""
    from scipy.stats import norm

    boot, jack = boot[np.isfinite(boot)], jack[np.isfinite(jack)]  # undefined where a class was not drawn (or left out)
    z0 = norm.ppf((np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / boot.size)
    dev = jack.mean() - jack
    a = np.sum(dev**3) / (6 * np.sum(dev**2) ** 1.5)
    z = norm.ppf([(1 - level) / 2, 1 - (1 - level) / 2])
    lo, hi = np.percentile(boot, 100 * norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    return float(lo), float(hi)


def auc_resamples(y: np.ndarray, scores: list[np.ndarray], g: np.ndarray, n_boot: int, seed: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each model's AUC: (models,) on the data, (models, n_boot) on the patient resamples that ``metrics`` draws
    with ``seed``, (models, patients) with one patient left out."""
    from lesionbench.benchmark.scoring._kernels import _evaluate, _scores, _target
    from lesionbench.benchmark.scoring.metrics import bootstrap_weights

    t = _target("binary", y)
    codes = np.unique(g, return_inverse=True)[1]
    jack = 1.0 - (codes[None, :] == np.arange(codes.max() + 1)[:, None])
    W = bootstrap_weights(t.n, n_boot, seed, g)
    point, boot, jk = (np.array([_evaluate("auc", t, _scores("binary", s, t.n), w) for s in scores]) for w in (np.ones((1, t.n)), W, jack))
    return point[:, 0], boot, jk


def run(reps: int, d: Design, *, n_boot: int, n_perm: int, seed: int = 0, lesion_reference: bool = True, bca: bool = True) -> list[tuple[str, str, float, float, int, str]]:
    """Every measurement of the module docstring: (key, what, rate, Monte-Carlo SE, reps, target)."""
    from lesionbench.benchmark.scoring.metrics import bootstrap_ci, paired_comparison
    from lesionbench.benchmark.types import TaskKind
    from lesionbench.leaderboard import _stats

    exch, structured = (d.noise, d.tau), [(d.noise, 0.9), (d.noise, 0.1)]
    better = (0.6 * d.noise, d.tau)
    t_exch = true_auc(d, [exch])[0]
    t_better = true_auc(d, [better, exch])
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {}

    def add(key: str, ok: bool) -> None:
        hits.setdefault(key, []).append(bool(ok))

    def test(y, a, b, g, seed=None, **kw):  # noqa: ANN001, ANN202
        seed = int(rng.integers(1 << 31)) if seed is None else seed
        return paired_comparison(y, a, b, "auc", kind="binary", n_boot=n_boot, n_perm=n_perm, seed=seed, groups=g, **kw)

    for _ in range(reps):
        # null (a): exchangeable models, B on another scale
        y, (a, b, c), g = simulate(rng, d, [exch, exch, exch])
        r = test(y, a, squash(b), g)
        add("compare_exch", r.p_value < ALPHA)
        add("cover_diff_null", r.ci_low <= 0 <= r.ci_high)
        s_boot = int(rng.integers(1 << 31))
        ci = bootstrap_ci("binary", y, a, ["auc"], n_boot=n_boot, seed=s_boot, groups=g)["auc"]
        add("cover_auc", ci.ci_low <= t_exch <= ci.ci_high)
        if bca:  # the same resamples, BCa instead of percentiles
            point, boot, jack = auc_resamples(y, [a], g, n_boot, s_boot)
            lo, hi = bca_interval(point[0], boot[0], jack[0])
            add("ref_bca_auc", lo <= t_exch <= hi)
        # page: three equally good entries, the top picked by observed AUC, max-T over the three pairs
        models = [a, squash(b), c]
        auc = [_stats.metric("auc", TaskKind.BINARY, y, m) for m in models]
        top = int(np.argmax(auc))
        page = _stats.versus_top(TaskKind.BINARY, y, dict(enumerate(models)), "auc", top=top, n_boot=0, n_perm=n_perm, seed=int(rng.integers(1 << 31)), groups=g)
        add("page_fwer", any(p < ALPHA for _, p in page.values()))
        # the same tests Holm-corrected over the K - 1 comparisons with the top only
        add("ref_holm_top_only", any(p < ALPHA for p in _stats.holm([c.p_value for c, _ in page.values()])))
        # the one-sided "top is better" after picking the top from the data (the old page test), two entries
        top2, low2 = (a, squash(b)) if auc[0] >= auc[1] else (squash(b), a)
        add("ref_onesided_top", test(y, top2, low2, g, alternative="greater").p_value < ALPHA)
        if lesion_reference:
            add("ref_lesion_exch", test(y, a, b, None).p_value < ALPHA)
        # null (b): same AUC, errors shared by a patient's lesions vs per lesion
        y, (a, b), g = simulate(rng, d, structured)
        r = test(y, a, b, g)
        add("compare_struct", r.p_value < ALPHA)
        add("cover_diff_struct", r.ci_low <= 0 <= r.ci_high)
        # non-null: A better than B, coverage of the true difference and power
        y, (a, b), g = simulate(rng, d, [better, exch])
        s_boot = int(rng.integers(1 << 31))
        r = test(y, a, b, g, seed=s_boot)
        add("cover_diff_alt", r.ci_low <= t_better[0] - t_better[1] <= r.ci_high)
        if bca:  # paired_comparison draws them from [seed, 0]
            point, boot, jack = auc_resamples(y, [a, b], g, n_boot, [s_boot, 0])
            lo, hi = bca_interval(point[0] - point[1], boot[0] - boot[1], jack[0] - jack[1])
            add("ref_bca_diff_alt", lo <= t_better[0] - t_better[1] <= hi)
        add("power_alt", r.p_value < ALPHA)

    rows = [
        ("compare_exch", "type-I, `compare` test, exchangeable models (B rescaled)", "0.03-0.07"),
        ("compare_struct", "type-I, `compare` test, same AUC, different error structure", "0.03-0.07"),
        ("page_fwer", "type-I (any entry significant), page test, 3 equal entries, max-T", "<= 0.07"),
        ("cover_auc", f"coverage, 95% patient-bootstrap CI of AUC (true {t_exch:.3f})", "0.95"),
        ("cover_diff_null", "coverage, 95% CI of AUC difference, exchangeable (true 0)", "0.95"),
        ("cover_diff_struct", "coverage, 95% CI of AUC difference, different error structure (true 0)", "0.95"),
        ("cover_diff_alt", f"coverage, 95% CI of AUC difference, A better (true {t_better[0] - t_better[1]:+.3f})", "0.95"),
        ("power_alt", "power, `compare` test, A better", "-"),
        ("ref_onesided_top", "reference: one-sided 'top is better' after picking the top (old page test)", "not used"),
        ("ref_holm_top_only", "reference: page test, 3 equal entries, Holm over the 2 tests with the top only", "not used"),
        ("ref_lesion_exch", "reference: lesions as the unit (patients ignored), exchangeable", "not used"),
        ("ref_bca_auc", "reference: coverage, BCa interval of AUC on the same resamples", "0.95"),
        ("ref_bca_diff_alt", "reference: coverage, BCa interval of the AUC difference, A better", "0.95"),
    ]
    return [(key, label, *_rate(hits[key]), target) for key, label, target in rows if key in hits]


#: The family sizes of ``--part families``, 1,000 replicates each at the full budget (``--reps 1000``); each K
#: draws from its own generator, so a K's rows are the same whichever others run with it.
FAMILY_K = (2, 3, 5, 8, 11, 15, 20)
PARTS = ("clustered", "crossing", "multiclass", "binary", "survival", "ipcw", "families", "ranks")


def run_parts(parts: tuple[str, ...], args: argparse.Namespace, reps: int, n_boot: int, n_perm: int) -> list[tuple[str, str, float, float, int, str]]:
    """The issue-21 designs (:mod:`calibration_designs`) named in ``parts``, each with its own replicate budget."""
    import calibration_designs as cd

    scale = reps / 1000  # the budgets below are for the full run (reps 1000); --quick/--reps scale them
    r = lambda n: max(20, int(round(n * scale)))  # noqa: E731
    rows: list[tuple[str, str, float, float, int, str]] = []
    if "crossing" in parts:
        rows += cd.part_crossing(r(1000), n_perm=n_perm, seed=args.seed + 1)
    if "multiclass" in parts:
        rows += cd.part_multiclass(r(1000), n_perm=min(n_perm, 300), n_boot=min(n_boot, 300), seed=args.seed + 2)
    if "binary" in parts:
        rows += cd.part_binary_coverage(r(1000), n_boot=n_boot, seed=args.seed + 3)
    if "survival" in parts:
        rows += cd.part_survival(r(2000), seed=args.seed + 4)
    if "ipcw" in parts:
        rows += cd.part_ipcw(r(1000), seed=args.seed + 7)
    if "families" in parts:
        import calibration_families as cf

        ks = args.family_k or FAMILY_K
        show = (lambda new: [print(f"| {x[1]} | {x[2]:.3f} | {x[3]:.3f} | {x[4]} | {x[5]} |", flush=True) for x in new]) if args.family_k else None  # noqa: E731
        if not args.family_k:
            rows += cf.part_crossing_family(r(500), n_perm=n_perm, seed=args.seed + 8)
        rows += cf.part_families({k: r(1000) for k in ks}, n_perm=n_perm, seed=args.seed + 5, on_row=show)
    if "ranks" in parts:
        rows += cd.part_rank_intervals(r(500), n_boot=min(n_boot, 500), seed=args.seed + 6)
    return rows


def _cell(rate: float, se: float, target: str) -> str:
    """The rate's distance from 0.95 in Monte-Carlo SEs, for coverage rows."""
    if target != "0.95" or not se:
        return ""
    return f"{(rate - 0.95) / se:+.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer replicates and resamples (< 60 s)")
    ap.add_argument("--reps", type=int, help="replicates of the clustered design, and the scale of the others' budgets (default 1000; --quick 300)")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--lesions", type=int, default=5)
    ap.add_argument("--rho", type=float, default=0.5, help="within-patient correlation of the lesions' latent malignancy")
    ap.add_argument("--tau", type=float, default=0.6, help="share of a model's error common to a patient's lesions")
    ap.add_argument("--label-noise", type=float, default=0.7, help="per-lesion label noise (smaller: labels more alike within a patient)")
    ap.add_argument("--n-boot", type=int, help="bootstrap resamples (default 1000; --quick 300)")
    ap.add_argument("--n-perm", type=int, help="permutations (default 1000; --quick 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", action="append", choices=PARTS, help="run only these designs (repeatable; default: all)")
    ap.add_argument("--family-k", type=int, action="append", metavar="K",
                    help=f"--part families: only these family sizes (repeatable; default {', '.join(map(str, FAMILY_K))}); rows print as each K is done")  # fmt: skip
    args = ap.parse_args()
    parts = tuple(args.part or PARTS)
    reps = args.reps or (300 if args.quick else 1000)
    n_boot = args.n_boot or (300 if args.quick else 1000)
    n_perm = args.n_perm or (300 if args.quick else 1000)
    d = Design(args.patients, args.lesions, args.rho, label_noise=args.label_noise, tau=args.tau)
    t0, cpu0, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    rows = run(reps, d, n_boot=n_boot, n_perm=n_perm, seed=args.seed) if "clustered" in parts else []
    rows += run_parts(parts, args, reps, n_boot, n_perm)
    wall = time.perf_counter() - t0
    print(f"{d.patients} patients x {d.lesions} lesions, rho {d.rho}, tau {d.tau}, label noise {d.label_noise}, {reps} replicates, n_boot {n_boot}, n_perm {n_perm}, alpha {ALPHA}")
    cpu = time.process_time() - cpu0
    print(f"parts: {', '.join(parts)}")
    print(f"{time.strftime('%Y-%m-%d')}, {wall:.0f} s wall, {cpu:.0f} s CPU, load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    print("| measurement | rate | MC SE | replicates | target | (rate - 0.95) / SE |\n|---|---|---|---|---|---|")
    for _, label, rate, se, n, target in rows:
        print(f"| {label} | {rate:.3f} | {se:.3f} | {n} | {target} | {_cell(rate, se, target)} |")
    short = [(label, rate, se) for key, label, rate, se, _, target in rows if target == "0.95" and not key.startswith("ref_") and rate < 0.93]
    for label, rate, se in short:  # issue 21: what is not fixed is said, and labelled on the page (leaderboard/stats_notes.py)
        print(f"\napproximate: {label}: {rate:.3f} (MC SE {se:.3f}) < 0.93; the page labels such intervals approximate")


if __name__ == "__main__":
    main()
