"""Westfall-Young step-down max-T over a family of K models compared pairwise (the page's multiplicity method).

Holm over the K (K - 1) / 2 pairs treats the pairs' tests as unrelated and multiplies the smallest p by the
family size, so with 11 or more entries a difference has to be very large to count. The pairs' statistics are
strongly related (every entry takes part in K - 1 of them), and a resampling correction can use that:

- **Joint permutations.** One replicate draws, for every patient, a random permutation of the K entries
  and gives entry k that patient's predictions of entry ``perm[k]`` (all of the patient's lesions together).
  Under the complete null (each patient's K predictions exchangeable) every replicate is as likely as the
  data, for all pairs at once. With K = 2 it is the swap of :mod:`.paired`.
- **The same statistic.** Each pair's statistic is :mod:`.paired`'s studentized difference (difference over
  its patient-clustered SE, on the scale-free scores), so a monotone rescaling of an entry changes nothing,
  and equally good but non-exchangeable entries stay asymptotically calibrated pair by pair.
- **Free step-down with successive maxima** (Westfall & Young 1993, algorithm 2.8): sort the pairs by
  observed ``|T|``, largest first; the adjusted p of the j-th is the share of replicates whose maximum of
  ``|T*|`` over the j-th and all smaller pairs reaches its observed ``|T|``, made monotone. The max over
  related statistics is smaller than the Bonferroni-type bound, so more real differences are found at the
  same family-wise error; ``benchmarks/stats_calibration.py --part families`` measures both.

The joint permutation keeps every entry's scores whole per patient, so each permuted entry is scored by
the weighted kernels on the K entries' stacked cases (a weight row of ones on the cases it takes), K
kernel calls per replicate for all K (K - 1) / 2 pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.scoring._kernels import _evaluate, _scores, _Target, _target
from lesionbench.benchmark.scoring.clustered_variance import DELONG_METRICS, _macro_influence, influence_variance, jackknife_values, jackknife_variance, metric_influence
from lesionbench.benchmark.scoring.paired import scale_free, t_statistic
from lesionbench.benchmark.types import TaskKind

#: Weight-matrix cells (rows x K stacked test sets) processed at once: bounds the memory of one chunk.
_CELLS = 2_000_000
#: Joint permutations drawn per chunk (their generator runs chunk by chunk, so the draw is the same
#: whatever the memory bound).
_DRAW = 256


@dataclass(frozen=True)
class FamilyTest:
    """Every pair ``(i, j)``, ``i < j``, of K models: the studentized statistic of ``i - j`` on the data and
    its step-down max-T adjusted p (NaN for a pair whose statistic is undefined: it is left out of the family)."""

    pairs: tuple[tuple[int, int], ...]
    statistic: tuple[float, ...]
    p_adjusted: tuple[float, ...]
    n_perm: int
    n_groups: int

    def p_for(self, i: int, j: int) -> float:
        """The adjusted p of the pair of models ``i`` and ``j`` (either order)."""
        return self.p_adjusted[self.pairs.index((min(i, j), max(i, j)))]


def all_pairs(k: int) -> tuple[tuple[int, int], ...]:
    """The K (K - 1) / 2 pairs ``(i, j)``, ``i < j``, in the order of :func:`joint_statistics`' columns."""
    return tuple(combinations(range(k), 2))


def _stacked(t: _Target, scores: Sequence[dict[str, np.ndarray]]) -> tuple[_Target, dict[str, np.ndarray]]:
    """The K models' cases as one test set of K n: model m's copy of case l is row ``m * n + l``."""
    k = len(scores)
    rep = lambda a: None if a is None else np.tile(a, k)  # noqa: E731
    both = _Target(t.kind, label=rep(t.label), time=rep(t.time), event=rep(t.event))
    return both, {key: np.concatenate([s[key] for s in scores]) for key in scores[0]}


def _auc_rows(t: _Target, proba: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`.clustered_variance.metric_influence`'s AUC (value (R,), psi (R, G)) with unit weights and a
    score row per replicate (``proba``: (R, n) binary, (R, n, classes) multiclass). A positive's placement
    value is its mid-rank among all cases minus its mid-rank among the positives, over the negatives' count."""
    from scipy.stats import rankdata

    member = np.eye(n_groups)[codes]  # (n, G): each case's patient

    def one(pos: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if not n_pos or not n_neg:
            return np.full(len(s), np.nan), np.full((len(s), n_groups), np.nan)
        every = rankdata(s, axis=1)
        own = np.empty_like(every)
        own[:, pos], own[:, ~pos] = rankdata(s[:, pos], axis=1), rankdata(s[:, ~pos], axis=1)
        below = every - own  # the other class's cases below (ties one half)
        v10, v01 = below[:, pos] / n_neg, 1.0 - below[:, ~pos] / n_pos
        theta = v10.mean(1)
        terms = np.empty_like(every)
        terms[:, pos], terms[:, ~pos] = (v10 - theta[:, None]) / n_pos, (v01 - theta[:, None]) / n_neg
        return theta, terms @ member

    if t.kind == TaskKind.BINARY:
        return one(t.label == 1, proba[:, :, 1])
    return _macro_influence([one(t.label == c, proba[:, :, c]) for c in range(proba.shape[2])])


def joint_statistics(name: str, t: _Target, scores: Sequence[dict[str, np.ndarray]], perms: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """The studentized statistic of every pair (columns, :func:`all_pairs` order) on every joint
    permutation (rows). ``perms``: (R, patients, K) ints, row r giving permuted model k patient g's
    predictions of model ``perms[r, g, k]``; the identity (``np.arange(K)`` everywhere) is the data."""
    k, n = len(scores), t.n
    both, s = _stacked(t, [scale_free(name, x) for x in scores])
    codes_k = np.tile(codes, k)
    offset = np.arange(n)
    pairs = all_pairs(k)
    left, right = np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs], int)
    out = np.empty((len(perms), len(pairs)))
    step = max(1, _CELLS // (k * n))
    for c0 in range(0, len(perms), step):
        src = perms[c0 : c0 + step][:, codes, :]  # (rows, n, K): the model each permuted model takes case l from
        rows = len(src)
        values, pieces = [], []
        for m in range(k):
            cases = src[:, :, m] * n + offset  # (rows, n): the stacked case permuted model m takes
            if name == "auc":  # every weight is 1: DeLong from per-row ranks, n instead of K n cases a row
                v, psi = _auc_rows(t, s["proba"][cases], codes, n_groups)
            else:
                W = np.zeros((rows, k * n))
                W[np.arange(rows)[:, None], cases] = 1.0
                if name in DELONG_METRICS:
                    v, psi = metric_influence(name, both, s, W, codes_k, n_groups)
                else:
                    v, psi = _evaluate(name, both, s, W), jackknife_values(name, both, s, W, codes_k, n_groups)
            values.append(v)
            pieces.append(psi)
        V, P = np.stack(values, 1), np.stack(pieces, 1)  # (rows, K), (rows, K, G or blocks)
        if name in DELONG_METRICS:  # influence_variance of psi_i - psi_j for every pair, from one Gram matrix a row
            gram = np.einsum("rkg,rlg->rkl", P, P, optimize=True)
            diag = np.einsum("rkk->rk", gram)
            g = P.shape[2]
            var = np.maximum(g / max(g - 1, 1) * (diag[:, left] + diag[:, right] - 2 * gram[:, left, right]), 0.0)
        else:
            D = P[:, left] - P[:, right]
            var = jackknife_variance(D.reshape(-1, D.shape[2])).reshape(rows, len(pairs))
        out[c0 : c0 + rows] = t_statistic(V[:, left] - V[:, right], np.sqrt(var))
    return out


def stepdown_maxt(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Westfall-Young free step-down adjusted p-values, two-sided, from the observed statistics (P,) and the
    statistics on R joint permutations (R, P). NaN observed: no test, NaN p, left out of the family; a
    NaN permuted statistic counts as not reaching anything. A permuted maximum that reproduces an observed
    ``|T|`` (up to rounding) counts, as in :func:`.paired.permutation_p`; so the data's own replicate would."""
    obs = np.abs(np.asarray(observed, dtype=float))
    null = np.abs(np.asarray(null, dtype=float))
    p = np.full(len(obs), np.nan)
    tested = np.flatnonzero(~np.isnan(obs))
    if not len(tested):
        return p
    order = tested[np.argsort(-obs[tested], kind="stable")]
    sub = np.where(np.isnan(null[:, order]), -np.inf, null[:, order])
    succ = np.maximum.accumulate(sub[:, ::-1], axis=1)[:, ::-1]  # succ[:, j]: max over the j-th and all smaller pairs
    o = obs[order]
    tol = np.where(np.isfinite(o), 1e-9 * np.maximum(1.0, np.where(np.isfinite(o), o, 0.0)), 0.0)
    hits = np.sum(succ >= (o - tol)[None, :], axis=0)
    p[order] = np.maximum.accumulate((1 + hits) / (1 + len(null)))
    return p


def joint_permutations(rng: np.random.Generator, n_perm: int, n_groups: int, k: int) -> np.ndarray:
    """``n_perm`` joint permutations (n_perm, patients, K): an independent uniform permutation of the K
    models for every patient of every replicate."""
    return np.argsort(rng.random((n_perm, n_groups, k)), axis=2)


def family_maxt(
    y_true: Any,
    scores: Sequence[Any],
    metric: str,
    *,
    kind: TaskKind | str,
    n_perm: int = 1000,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> FamilyTest:
    """Step-down max-T over all pairs of ``scores`` (K models' predictions of one test set, in the form
    :func:`.metrics.paired_comparison` takes), two-sided, resampling whole ``groups`` (patients) when given.

    ``n_perm`` joint permutations from ``np.random.default_rng([seed, 2])``; the smallest adjusted p is
    ``1 / (n_perm + 1)`` whatever K (and never below ``(K!) ** (1 - patients)``: relabelling the K models
    alike for every patient leaves the family's maximum unchanged). ``n_perm=0``: every p is NaN.
    """
    from lesionbench.benchmark.scoring.metrics import _group_codes, canonical_metric, metrics_for

    name = canonical_metric(metric)
    kind = TaskKind(kind)
    metrics_for(kind, [name])
    if len(scores) < 2:
        raise ConfigurationError(f"A family test needs at least two models' predictions; got {len(scores)}.")
    t = _target(kind, y_true)
    parsed = [_scores(kind, s, t.n) for s in scores]
    if any(p.keys() != parsed[0].keys() or any(p[x].shape != parsed[0][x].shape for x in p) for p in parsed):
        raise ConfigurationError("The models' scores have different shapes; compare predictions of the same task, one row per test case.")
    codes, n_groups = _group_codes(t.n, groups)
    k = len(parsed)
    pairs = all_pairs(k)
    identity = np.broadcast_to(np.arange(k), (1, n_groups, k))
    observed = joint_statistics(name, t, parsed, identity, codes, n_groups)[0]
    if n_perm <= 0:
        return FamilyTest(pairs, tuple(observed.tolist()), (float("nan"),) * len(pairs), 0, n_groups)
    rng = np.random.default_rng([seed, 2])
    null = np.vstack([joint_statistics(name, t, parsed, joint_permutations(rng, min(_DRAW, n_perm - r), n_groups, k), codes, n_groups) for r in range(0, n_perm, _DRAW)])
    return FamilyTest(pairs, tuple(observed.tolist()), tuple(stepdown_maxt(observed, null).tolist()), n_perm, n_groups)
