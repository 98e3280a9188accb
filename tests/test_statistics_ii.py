"""Issue 21 (Statistics II): the studentized paired test, its clustered variances, the per-patient log-rank,
the page's permutation budget, the multiclass decision rule's inputs and the run seed of trainable encoders."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.statistics import logrank_test
from scipy.stats import norm

from lesionbench.benchmark.scoring._kernels import _evaluate, _scores, _target
from lesionbench.benchmark.scoring.metrics import paired_comparison
from lesionbench.benchmark.scoring.run_one import TrainedFeatures, logrank_by_patient
from lesionbench.benchmark.scoring.clustered_variance import auc_influence, influence_variance, jackknife_values
from lesionbench.benchmark.scoring.splits import Subset
from lesionbench.leaderboard import _stats, stats_notes


def test_auc_influence_is_delong_without_clusters() -> None:
    """One lesion per patient: the clustered variance is DeLong's (up to its n/(n-1) factors), the value sklearn's AUC."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = np.round(y + rng.normal(size=80), 1)  # ties
    theta, psi = auc_influence(y == 1, s, np.ones((1, 80)), np.arange(80), 80)
    pos, neg = s[y == 1], s[y == 0]
    h = lambda a, b: (a > b) + 0.5 * (a == b)  # noqa: E731
    v10 = np.array([h(p, neg).mean() for p in pos])
    v01 = np.array([h(pos, q).mean() for q in neg])
    delong = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    assert theta[0] == pytest.approx(v10.mean(), abs=1e-12)
    assert influence_variance(psi)[0] == pytest.approx(delong, rel=0.05)


def test_c_index_jackknife_equals_leaving_each_patient_out() -> None:
    rng = np.random.default_rng(1)
    n = 45
    t = _target("survival", np.c_[rng.exponential(500, n).round(-1), rng.random(n) < 0.6])
    s = _scores("survival", rng.normal(size=n).round(1), n)
    codes = np.repeat(np.arange(15), 3)
    W = rng.integers(0, 3, size=(4, n)).astype(float)
    brute = np.column_stack([_evaluate("c_index", t, s, W * (codes != g)) for g in range(15)])
    np.testing.assert_allclose(jackknife_values("c_index", t, s, W, codes, 15), brute, atol=1e-12)


def _crossing(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal AUC 0.75, B's positives 3x as spread, r = 0.9 given the class (the review's crossing ROCs)."""
    y = (rng.random(n) < 0.5).astype(int)
    za = rng.normal(size=n)
    zb = 0.9 * za + np.sqrt(1 - 0.9**2) * rng.normal(size=n)
    a = norm.ppf(0.75) * np.sqrt(2) * y + za
    b = norm.ppf(0.75) * np.sqrt(10) * y + np.where(y == 1, 3.0, 1.0) * zb
    return y, a, b


@pytest.mark.parametrize("metric", ["auc", "balanced_accuracy", "map", "c_index", "auc_2y"])
def test_studentized_test_is_scale_free(metric: str) -> None:
    """A monotone rescaling of one model changes neither the statistic nor p, for every metric."""
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(20), 3)
    if metric in ("c_index", "auc_2y"):
        y = np.c_[rng.exponential(700, 60).round(), rng.random(60) < 0.6]
        a, b = rng.normal(size=60), rng.normal(size=60)
        first = paired_comparison(y, a, b, metric, n_boot=0, n_perm=50, groups=g)
        again = paired_comparison(y, a, np.exp(3 * b), metric, n_boot=0, n_perm=50, groups=g)
    else:
        y = rng.integers(0, 3, 60)
        a, b = rng.dirichlet(np.ones(3), 60), rng.dirichlet(np.ones(3), 60)
        first = paired_comparison(y, a, b, metric, n_boot=0, n_perm=50, groups=g)
        again = paired_comparison(y, a, b**2 / (b**2).sum(1, keepdims=True) if metric == "balanced_accuracy" else b**3, metric, n_boot=0, n_perm=50, groups=g)
    assert first.p_value == again.p_value


def test_identical_models_give_p_one() -> None:
    rng = np.random.default_rng(3)
    y, a, _ = _crossing(rng, 60)
    assert paired_comparison(y, a, a.copy(), "auc", kind="binary", n_boot=0, n_perm=100).p_value == 1.0


def test_logrank_counts_each_patient_once() -> None:
    """Three lesions of one patient share its time and event: they count once, at their mean risk."""
    time = np.array([100.0, 100, 100, 400, 800, 900, 1200, 50])
    event = np.array([1.0, 1, 1, 1, 0, 1, 0, 1])
    risk = np.array([2.0, 1.0, 3.0, 0.1, -1, 0.5, -2, 1.5])
    patients = np.array(["a", "a", "a", "b", "c", "d", "e", "f"])
    out = logrank_by_patient(time, event, risk, patients, threshold=0.3)
    high = np.array([True, False, False, True, False, True])  # a (mean 2.0), b 0.1, c -1, d 0.5, e -2, f 1.5
    t, e = np.array([100.0, 400, 800, 900, 1200, 50]), np.array([1.0, 1, 0, 1, 0, 1])
    assert out["logrank_p"] == pytest.approx(logrank_test(t[high], t[~high], e[high], e[~high]).p_value)
    assert (out["km_n_high"], out["km_n_low"], out["km_unit"]) == (3, 3, "patient")


def test_page_permutations_scale_with_the_family_and_say_when_out_of_reach() -> None:
    """K = 11: Holm over 55 pairs with 1,000 permutations could not go below 0.055; the budget now can."""
    assert _stats.permutations_for(11, 1000) == 40 * 55 and _stats.permutations_for(3, 1000) == 1000
    assert _stats.permutations_for(5, 0) == 0
    assert _stats.smallest_adjusted_p(11, 1000, 100) < 0.05
    assert _stats.smallest_adjusted_p(20, 1000, 100) < 0.05
    assert stats_notes.reach_note(11, 1000, 100, 0.05) == ""
    # few patients: few distinct swaps, whatever the permutation count
    note = stats_notes.reach_note(4, 1000, 5, 0.05)
    assert "no difference can be significant" in note and "5 test patients" in note


def test_trained_features_pass_the_run_seed() -> None:
    class Seeded:
        n_classes = None

        def fit(self, x, y, *, val=None, seed=None):  # noqa: ANN001, ANN202
            self.seed = seed
            return self

        def encode(self, x):  # noqa: ANN001, ANN202
            return np.full((len(x), 1), float(self.seed))

    class Unseeded(Seeded):
        def fit(self, x, y, *, val=None):  # noqa: ANN001, ANN202
            self.seed = -1
            return self

    subset = Subset(0.5, 3, ("l0", "l1"), ("p0", "p1"), 4)
    train = np.array([True, True, False, False])
    for enc, want in ((Seeded(), 3.0), (Unseeded(), -1.0)):
        X, head = TrainedFeatures(enc, np.zeros((4, 1, 2, 2, 2)), np.array([0.0, 1, 0, 1]), 2)(subset, train, np.zeros(4, bool))
        assert (X == want).all() and head is None


def test_seed_mean_interval_adds_the_draw_variance() -> None:
    """Five k-shot draws: the interval is centred on their mean and wider than the test-set interval alone."""
    values = [0.70, 0.80, 0.75, 0.65, 0.85]
    mean, lo, hi = stats_notes.seed_mean_interval(values, [v - 0.1 for v in values], [v + 0.1 for v in values])
    assert mean == pytest.approx(0.75)
    se_test, sd = 0.2 / (2 * 1.959964), np.std(values, ddof=1)
    assert hi - mean == pytest.approx(1.959964 * np.sqrt(se_test**2 + sd**2 / 5)) and mean - lo == pytest.approx(hi - mean)
    assert hi - lo > 0.2
    assert np.isnan(stats_notes.seed_mean_interval([0.7], [np.nan], [np.nan])[1])


def test_jackknife_leaves_out_blocks_of_patients_on_large_test_sets() -> None:
    """60 patients: 20 leave-outs of three patients each, equal to the metric without those patients."""
    from lesionbench.benchmark.scoring.clustered_variance import MAX_JACKKNIFE_BLOCKS

    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 120)
    t, s = _target("multiclass", y), _scores("multiclass", rng.dirichlet(np.ones(3), 120), 120)
    codes = np.repeat(np.arange(60), 2)
    J = jackknife_values("map", t, s, np.ones((1, 120)), codes, 60)
    assert J.shape == (1, MAX_JACKKNIFE_BLOCKS)
    assert J[0, 5] == pytest.approx(_evaluate("map", t, s, (codes % 20 != 5)[None, :].astype(float))[0])


def test_page_labels_small_split_intervals_and_rank_ends_approximate() -> None:
    note = stats_notes.interval_note("auc", 19)
    assert note.startswith("approximate auc intervals: with 19 test patients") and "covered 0.868" in note
    assert stats_notes.interval_note("auc", 200) == "" and stats_notes.interval_note("c_index", 19) == ""
    assert "covered the true rank of the ends in 0.86" in stats_notes.rank_note(5) and stats_notes.rank_note(2) == ""
