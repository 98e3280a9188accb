"""Families of K = 2..20 entries on the leaderboard page (issue 21 item 5): Holm against step-down max-T.

On the same draws, each replicate runs the page's two corrections over all K (K - 1) / 2 pairs:

- **Holm** (``versus_top(..., correction="holm")``): each entry's paired studentized permutation test against
  the top, 40 permutations per pair of the family, Holm over the whole family;
- **max-T** (``versus_top``'s default from K = 3, :func:`lesionbench.benchmark.scoring.maxt.family_maxt`):
  joint permutations of all K entries within each patient, step-down over the pairs' max ``|T|``.

Designs (:func:`family`): K models of AUC 0.75 on 60 patients x 2 lesions, errors correlated 0.5 across the
models (exchangeable: the complete null), and the same with the last model at AUC 0.66 (one entry truly
worse). Rows: the family-wise error under the complete null (any entry significant), the power to mark
the worse entry, and under one worse entry the rate of any *equal* entry marked (strong control).
:func:`crossing_family` is a complete null whose entries are not exchangeable (equal AUC, crossing ROC
curves), where only the studentized statistic keeps the level (``tests/test_stats_calibration.py``).

Holm's decision of each paired test is computed exactly but stopped early: permutations are drawn in the
page's order (``paired_comparison``'s generator) and counted until enough reach the observed ``|T|`` that
even the smallest Holm multiplier cannot bring the test below alpha (:func:`holm_decisions`). That gives the
page's decisions at a fraction of the 7,600 permutations per test at K = 20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

from calibration_designs import ALPHA, Row, Tally, _seed

#: Joint permutations of the max-T arm per replicate (the page draws ``--n-perm``, 1,000 by default): fewer
#: keep the test exact (p = (1 + hits) / (1 + R)) and cost a little power, so max-T's rows understate it.
MAXT_PERMS = 200


def family(rng: np.random.Generator, k: int, worse: bool, *, patients: int = 60, lesions: int = 2) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """K models of AUC 0.75 on ``patients`` x ``lesions`` (labels correlated within the patient), errors
    correlated 0.5 across models; the last one at AUC 0.66 when ``worse``."""
    g = np.repeat(np.arange(patients), lesions)
    n = patients * lesions
    v = np.sqrt(0.5) * rng.normal(size=patients)[g] + np.sqrt(0.5) * rng.normal(size=n)
    y = (v > 0).astype(int)
    shared = rng.normal(size=n)
    mu = norm.ppf(0.75) * np.sqrt(2)
    scores = []
    for i in range(k):
        m = norm.ppf(0.66) * np.sqrt(2) if worse and i == k - 1 else mu
        scores.append(m * y + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=n))
    return y, scores, g


def crossing_family(rng: np.random.Generator, k: int, *, n: int = 300, r: float = 0.9, spread: float = 3.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """K models of equal AUC 0.75 on ``n`` single-lesion patients, alternately binormal with equal variances
    and with the positives ``spread`` times as spread (ROC curves that cross), correlated ``r`` given the class."""
    y = (rng.random(n) < 0.5).astype(int)
    z0 = rng.normal(size=n)
    mu_a, mu_b = norm.ppf(0.75) * np.sqrt(2), norm.ppf(0.75) * np.sqrt(1 + spread**2)
    out = []
    for i in range(k):
        e = np.sqrt(r) * z0 + np.sqrt(1 - r) * rng.normal(size=n)
        out.append(mu_a * y + e if i % 2 == 0 else mu_b * y + np.where(y == 1, spread, 1.0) * e)
    return y, out


def holm_decisions(y: np.ndarray, scores: list[np.ndarray], top: int, g: np.ndarray, *, n_perm: int, seed: int, alpha: float = ALPHA) -> dict[int, bool]:
    """The page's Holm decision (adjusted p < alpha) for every entry against ``top``: the same paired tests as
    ``versus_top(..., correction="holm")`` (the same permutations, in the same order), each stopped once
    ``(1 + hits) / (1 + R)`` times the smallest multiplier it can get, ``family - (K - 2)``, reaches alpha.
    A stopped test keeps a lower bound of its p; Holm is monotone in the p-values, and a stopped test fails
    wherever it sorts, so every decision is the one the full tests give."""
    from lesionbench.benchmark.scoring._kernels import _scores, _target
    from lesionbench.benchmark.scoring.metrics import _group_codes
    from lesionbench.benchmark.scoring.paired import permutation_p, swap_statistics
    from lesionbench.leaderboard import _stats

    k = len(scores)
    perms, family_size = _stats.permutations_for(k, n_perm), _stats.family_size(k)
    t = _target("binary", y)
    codes, n_groups = _group_codes(t.n, g)
    swap = np.random.default_rng([seed, 1]).random((perms, n_groups)) < 0.5  # paired_comparison's draw
    stop_at = alpha * (perms + 1) / (family_size - (k - 2)) - 1  # hits beyond which the test cannot be rejected
    others = [i for i in range(k) if i != top]
    p = []
    for i in others:
        sa, sb = _scores("binary", scores[top], t.n), _scores("binary", scores[i], t.n)
        observed = swap_statistics("auc", t, sa, sb, np.zeros((1, n_groups), bool), codes, n_groups)[0]
        nulls, hits, c, step = [], 0, 0, 64
        while c < perms:  # chunks of 64, 128, ... permutations: most null tests stop within the first
            nulls.append(swap_statistics("auc", t, sa, sb, swap[c : c + step], codes, n_groups))
            hits += int(np.sum(np.abs(nulls[-1]) >= abs(observed) - 1e-9 * max(1.0, abs(observed))))
            c, step = c + step, min(2 * step, 1024)
            if hits >= stop_at:
                break
        null = np.concatenate(nulls)
        p.append(permutation_p(observed, null[~np.isnan(null)], "two-sided") if c >= perms else (1 + hits) / (1 + perms))
    return {i: q < alpha for i, q in zip(others, _stats.holm(p, family=family_size))}


def _top(y: np.ndarray, scores: list[np.ndarray]) -> int:
    from lesionbench.benchmark.types import TaskKind
    from lesionbench.leaderboard import _stats

    return int(np.argmax([_stats.metric("auc", TaskKind.BINARY, y, s) for s in scores]))


def part_families(reps_by_k: dict[int, int], *, n_perm: int, seed: int = 0, maxt_perms: int = MAXT_PERMS, on_row: Any = None) -> list[Row]:
    """The rows of the module docstring for every K of ``reps_by_k`` (replicates per K); Holm's paired tests
    draw ``permutations_for(K, n_perm)`` permutations, max-T ``maxt_perms``. ``on_row(rows)``: called with each
    K's rows as they are done (a long run reports as it goes)."""
    from lesionbench.benchmark.scoring.maxt import family_maxt

    tally = Tally()
    rows: list[Row] = []
    for k, reps in reps_by_k.items():
        rng = np.random.default_rng([seed, k])  # each K its own draws, whichever others run with it
        for _ in range(reps):
            for worse in (False, True):
                y, scores, g = family(rng, k, worse)
                top, s = _top(y, scores), _seed(rng)
                fam = family_maxt(y, scores, "auc", kind="binary", n_perm=maxt_perms, seed=s, groups=g)
                marked = {"maxt": {i: fam.p_for(top, i) < ALPHA for i in range(k) if i != top}}
                marked["holm"] = holm_decisions(y, scores, top, g, n_perm=n_perm, seed=s)
                for method, m in marked.items():
                    if worse:
                        tally.add(f"found_{method}_{k}", m.get(k - 1, False))
                        # a false positive: an equal entry marked against an equal top (a worse top makes every test true)
                        tally.add(f"false_{method}_{k}", top != k - 1 and any(v for i, v in m.items() if i != k - 1))
                    else:
                        tally.add(f"fwer_{method}_{k}", any(m.values()))
        spec = []
        for method, name in (("maxt", "max-T"), ("holm", "Holm")):
            spec.append((f"fwer_{method}_{k}", f"type-I (any entry significant), {name}, K = {k} equal entries (60 x 2, AUC 0.75)", "<= 0.05"))
        for method, name in (("maxt", "max-T"), ("holm", "Holm")):
            spec.append((f"found_{method}_{k}", f"power, {name} marks the worse entry (AUC 0.66 vs 0.75), K = {k}", "-"))
        for method, name in (("maxt", "max-T"), ("holm", "Holm")):
            spec.append((f"false_{method}_{k}", f"type-I among the K - 1 equal entries, {name}, one worse entry, K = {k}", "<= 0.05"))
        new = tally.rows(spec)
        rows += new
        if on_row is not None:
            on_row(new)
    return rows


def part_crossing_family(reps: int, *, k: int = 4, n_perm: int = 1000, seed: int = 0, maxt_perms: int = MAXT_PERMS) -> list[Row]:
    """Complete null whose entries are not exchangeable (:func:`crossing_family`, K = 4, 300 patients): the
    family-wise error of max-T and of Holm, and of max-T on the raw differences (the reference row: the
    studentized statistic is what keeps the level)."""
    from lesionbench.benchmark.scoring import maxt

    rng = np.random.default_rng([seed, k])
    tally = Tally()
    g = None
    for _ in range(reps):
        y, scores = crossing_family(rng, k)
        top, s = _top(y, scores), _seed(rng)
        fam = maxt.family_maxt(y, scores, "auc", kind="binary", n_perm=maxt_perms, seed=s, groups=g)
        tally.add("xfwer_maxt", any(fam.p_for(top, i) < ALPHA for i in range(k) if i != top))
        tally.add("xfwer_holm", any(holm_decisions(y, scores, top, np.arange(len(y)), n_perm=n_perm, seed=s).values()))
        raw = maxt.stepdown_maxt(*_raw_differences(y, scores, maxt_perms, s))
        tally.add("ref_xfwer_raw", any(raw[maxt.all_pairs(k).index((min(top, i), max(top, i)))] < ALPHA for i in range(k) if i != top))
    return tally.rows([
        ("xfwer_maxt", f"type-I (any entry significant), max-T, K = {k} equal entries with crossing ROC curves (300 patients)", "<= 0.05"),
        ("xfwer_holm", f"type-I (any entry significant), Holm, K = {k} equal entries with crossing ROC curves", "<= 0.05"),
        ("ref_xfwer_raw", f"reference: max-T on raw AUC differences (not studentized), the same draws", "not used"),
    ])  # fmt: skip


def _raw_differences(y: np.ndarray, scores: list[np.ndarray], n_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(observed, permuted) AUC differences of every pair on :func:`family_maxt`'s joint permutations, unstudentized."""
    from lesionbench.benchmark.scoring import maxt
    from lesionbench.benchmark.scoring._kernels import _scores, _target

    t, k = _target("binary", y), len(scores)
    parsed = [_scores("binary", s, t.n) for s in scores]
    codes = np.arange(t.n)
    perms = np.vstack([np.broadcast_to(np.arange(k), (1, t.n, k)), maxt.joint_permutations(np.random.default_rng([seed, 2]), n_perm, t.n, k)])
    original = maxt.t_statistic
    try:  # the same code path with the statistic's denominator left out
        maxt.t_statistic = lambda d, se: d
        stats = maxt.joint_statistics("auc", t, parsed, perms, codes, t.n)
    finally:
        maxt.t_statistic = original
    return stats[0], stats[1:]
