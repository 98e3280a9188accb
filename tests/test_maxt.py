"""Issue 21 item 5: the step-down max-T over a section's family of pairwise comparisons
(:mod:`lesionbench.benchmark.scoring.maxt`), its statistic, its step-down and what the page says about it."""

from __future__ import annotations

import numpy as np
import pytest

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.scoring._kernels import _scores, _target
from lesionbench.benchmark.scoring.maxt import all_pairs, family_maxt, joint_permutations, joint_statistics, stepdown_maxt
from lesionbench.benchmark.scoring.paired import scale_free, swap_statistics
from lesionbench.leaderboard import _stats, stats_notes


def _data(metric: str, rng: np.random.Generator, n: int, k: int) -> tuple[str, np.ndarray, list[np.ndarray]]:
    """(kind, labels, k models' scores) for ``metric``, with tied scores."""
    if metric in ("c_index", "auc_2y"):
        return "survival", np.c_[rng.exponential(700, n).round(-1), rng.random(n) < 0.6], [rng.normal(size=n).round(1) for _ in range(k)]
    if metric == "auc_binary":
        y = rng.integers(0, 2, n)
        return "binary", y, [np.round(y + rng.normal(size=n), 1) for _ in range(k)]
    y = rng.integers(0, 3, n)
    return "multiclass", y, [np.round(rng.dirichlet(np.ones(3), n), 2) for _ in range(k)]


@pytest.mark.parametrize("metric", ["auc_binary", "auc", "balanced_accuracy", "map", "c_index", "auc_2y"])
def test_two_models_reduce_to_the_paired_swap_test(metric: str) -> None:
    """K = 2: a joint permutation is a swap of the two models' patients, and the statistic is the paired test's."""
    rng = np.random.default_rng(0)
    kind, y, (a, b) = _data(metric, rng, 60, 2)
    name = "auc" if metric == "auc_binary" else metric
    g = np.repeat(np.arange(20), 3)
    t, sa, sb = _target(kind, y), _scores(kind, a, 60), _scores(kind, b, 60)
    swap = rng.random((30, 20)) < 0.5
    swap[0] = False  # the data
    perms = np.where(swap[:, :, None], np.array([1, 0]), np.array([0, 1]))
    got = joint_statistics(name, t, [sa, sb], perms, g, 20)[:, 0]
    np.testing.assert_allclose(got, swap_statistics(name, t, sa, sb, swap, g, 20), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("metric", ["auc_binary", "auc", "map", "balanced_accuracy"])
def test_every_pair_is_the_paired_statistic_of_the_permuted_models(metric: str) -> None:
    """K = 3: column (i, j) of a replicate is the studentized statistic of permuted model i against permuted
    model j, each patient's predictions taken whole from the model the permutation names (the AUC's fast
    per-row DeLong included, ties and all)."""
    rng = np.random.default_rng(1)
    kind, y, models = _data(metric, rng, 48, 3)
    name = "auc" if metric == "auc_binary" else metric
    g = np.repeat(np.arange(16), 3)
    t = _target(kind, y)
    parsed = [_scores(kind, m, 48) for m in models]
    free = [scale_free(name, p) for p in parsed]  # permuted on the shared scale, as the test does
    perms = joint_permutations(rng, 5, 16, 3)
    got = joint_statistics(name, t, parsed, perms, g, 16)
    for r in range(5):
        mixed = [{key: free[0][key].copy() for key in free[0]} for _ in range(3)]
        for m in range(3):
            for key in mixed[m]:
                mixed[m][key] = np.stack([free[perms[r, g[c], m]][key][c] for c in range(48)])
        want = [swap_statistics(name, t, mixed[i], mixed[j], np.zeros((1, 16), bool), g, 16)[0] for i, j in all_pairs(3)]
        np.testing.assert_allclose(got[r], want, rtol=1e-10, atol=1e-12)


def test_stepdown_by_hand() -> None:
    """Westfall-Young's successive maxima: pairs sorted by |T| (3, 2, 0.5); the p of each counts the replicates
    whose max |T*| over it and the smaller pairs reaches it, then is made monotone. An undefined pair (NaN) is
    left out (its large permuted values count nowhere), and a NaN permuted statistic reaches nothing."""
    observed = np.array([2.0, -3.0, 0.5, np.nan])
    null = np.array([
        [0.1, 3.5, 0.2, 9.0],   # reaches 3 (3.5)
        [2.5, 0.1, 0.0, 9.0],   # reaches 2 (max of the pairs with |T| <= 2: 2.5), not 3
        [0.3, -0.2, 0.6, 9.0],  # reaches 0.5 only
        [np.nan, 0.0, 0.4, 9.0],
        [-2.2, 0.0, 0.0, 9.0],  # reaches 2
    ])  # fmt: skip
    # |T| = 3: 1 hit -> 2/6; |T| = 2: 2 hits -> 3/6; |T| = 0.5: 1 hit -> 2/6, raised to 3/6 (monotone)
    np.testing.assert_allclose(stepdown_maxt(observed, null), [3 / 6, 2 / 6, 3 / 6, np.nan])
    # a permuted maximum equal to the observed one counts (the data's own relabelling does)
    assert stepdown_maxt(np.array([1.0, 2.0]), np.array([[0.0, -2.0], [0.5, 0.5]])).tolist() == [2 / 3, 2 / 3]


def test_family_maxt_is_scale_free_and_needs_comparable_models() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 90)
    models = [y * q + rng.normal(size=90) for q in (1.5, 1.0, 0.0)]
    g = np.repeat(np.arange(45), 2)
    first = family_maxt(y, models, "auc", kind="binary", n_perm=200, seed=3, groups=g)
    rescaled = family_maxt(y, [models[0], np.exp(2 * models[1]), models[2]], "auc", kind="binary", n_perm=200, seed=3, groups=g)
    assert first.p_adjusted == rescaled.p_adjusted and first.pairs == ((0, 1), (0, 2), (1, 2))
    assert min(first.p_adjusted) >= 1 / 201 and first.p_for(2, 0) == first.p_adjusted[1]
    assert first.p_for(0, 2) < 0.05 and first.p_for(0, 2) <= first.p_for(1, 2) <= first.p_for(0, 1)  # ordered by |T|
    same = family_maxt(y, [models[0], models[0].copy(), models[2]], "auc", kind="binary", n_perm=100, groups=g)
    assert same.statistic[0] == 0.0 and same.p_for(0, 1) == 1.0
    assert np.isnan(family_maxt(y, models, "auc", kind="binary", n_perm=0).p_adjusted).all()
    with pytest.raises(LesionbenchError, match="at least two models"):
        family_maxt(y, models[:1], "auc", kind="binary")
    with pytest.raises(LesionbenchError, match="different shapes"):
        family_maxt(y, [models[0], np.c_[1 - models[1], models[1], models[1]]], "auc", kind="binary")


def test_the_page_says_which_correction_and_when_it_cannot_reach_alpha() -> None:
    """Max-T's smallest p is 1 / (n_perm + 1) at any K; with four patients the K! relabellings bound it."""
    assert _stats.smallest_adjusted_p(20, 1000, 100, "maxt") == pytest.approx(1 / 1001)
    assert _stats.smallest_adjusted_p(20, 1000, 100, "holm") == pytest.approx(190 / 7601)
    assert _stats.smallest_adjusted_p(3, 1000, 2, "maxt") == pytest.approx(1 / 6)
    note = stats_notes.reach_note(3, 1000, 2, 0.05, "maxt")
    assert note.startswith("no difference can be significant here: with 3 entries (max-T over 3 pairs) and 2 test patients")
    assert stats_notes.reach_note(11, 1000, 100, 0.05, "maxt") == ""
    assert "step-down max-T over all 55 pairs of the 11 entries" in stats_notes.method_note(11, 1000)
    assert stats_notes.method_note(2, 1000).startswith("p adjusted by Holm over all 1 pair(s)")
    assert stats_notes.method_note(11, 1000, "holm").startswith("p adjusted by Holm over all 55 pair(s) of the 11 entries (2,200")
    assert stats_notes.method_note(11, 0) == ""
