"""Metrics agree with scikit-learn / lifelines, bootstrap CIs behave, paired tests are sound."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index
from scipy.stats import norm
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError
from lesionbench.benchmark.scoring.metrics import (
    bootstrap_ci,
    bootstrap_weights,
    canonical_metric,
    compute_metrics,
    paired_comparison,
)


def _multiclass(n=240, k=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    p[:20] = p[20:40]  # tied scores across cases
    return y, p


def _sk_multiclass(y, p):
    present = [k for k in range(p.shape[1]) if (y == k).any()]
    return {
        "balanced_accuracy": balanced_accuracy_score(y, p.argmax(1)),
        "map": np.mean([average_precision_score(y == k, p[:, k]) for k in present]),
        "auc": np.mean([roc_auc_score(y == k, p[:, k]) for k in present]),
    }


def _survival(n=200, seed=0):
    rng = np.random.default_rng(seed)
    risk = np.round(rng.normal(size=n), 1)  # tied risks
    t = np.round(rng.exponential(700 * np.exp(-0.5 * risk)), -1) + 10  # tied times
    e = (rng.random(n) < 0.7).astype(int)
    score = 1 / (1 + np.exp(-risk + rng.normal(scale=0.5, size=n)))
    return t, e, risk, score


def test_multiclass_metrics_match_sklearn() -> None:
    y, p = _multiclass()
    ours = compute_metrics("multiclass", y, p)
    ref = _sk_multiclass(y, p)
    ref_auc = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert ours == pytest.approx(ref, abs=1e-12)
    assert ours["auc"] == pytest.approx(ref_auc, abs=1e-12)


def test_binary_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1), 2)
    ours = compute_metrics("binary", y, s, ["auc", "average_precision", "balanced_accuracy"])
    assert ours["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ours["average_precision"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, np.column_stack([1 - s, s]).argmax(1)), abs=1e-12)
    # (n, 2) probabilities give the same numbers as P(class 1)
    assert compute_metrics("binary", y, np.column_stack([1 - s, s]), ["auc"])["auc"] == ours["auc"]


def test_survival_metrics_match_lifelines_and_censoring_rule() -> None:
    t, e, risk, score = _survival()
    ours = compute_metrics("survival", np.column_stack([t, e]), {"risk": risk, "score": score})
    assert ours["c_index"] == pytest.approx(concordance_index(t, -risk, e), abs=1e-12)
    y2 = two_year_label(t, e)
    known = np.isfinite(y2)
    assert (~known).sum() > 5  # the case is meaningful: some lesions censored before 2 years
    # the headline 2-year AUC is scikit-survival's IPCW cumulative/dynamic AUC; the plain one drops early censoring
    assert ours["auc_2y"] == pytest.approx(_sksurv_auc_2y(t, e, score), abs=1e-12)
    plain = compute_metrics("survival", np.column_stack([t, e]), {"risk": risk, "score": score}, ["auc_2y_known"])["auc_2y_known"]
    assert plain == pytest.approx(roc_auc_score(y2[known], score[known]), abs=1e-12) and plain != ours["auc_2y"]
    # censored before 730 d are neither cases nor controls (they only inform the censoring weights): their scores change nothing
    score2 = score.copy()
    score2[~known] = np.random.default_rng(0).random((~known).sum())
    again = compute_metrics("survival", np.column_stack([t, e]), {"risk": risk, "score": score2}, ["auc_2y", "auc_2y_known"])
    assert again == {"auc_2y": ours["auc_2y"], "auc_2y_known": plain}


def _sksurv_auc_2y(t, e, score):
    from sksurv.metrics import cumulative_dynamic_auc
    from sksurv.util import Surv

    y = Surv.from_arrays(np.asarray(e).astype(bool), np.asarray(t, float))
    return float(cumulative_dynamic_auc(y, y, score, [730.0])[0][0])


def test_auc_2y_without_any_known_two_year_status_is_undefined_not_an_error() -> None:
    """A small test split whose lesions are all censored before 730 days (the 12-patient synthetic cohort's) leaves
    no case for the 2-year AUC: NaN like any undefined metric, never an IndexError from the empty score groups."""
    y = np.column_stack([[100.0, 400.0, 700.0], [0, 0, 0]])
    scores = {"risk": np.array([0.3, 0.1, 0.2]), "score": np.array([0.6, 0.2, 0.4])}
    assert np.isnan(compute_metrics("survival", y, scores, ["auc_2y"])["auc_2y"])
    ci = bootstrap_ci("survival", y, scores, n_boot=20, groups=["a", "a", "b"])
    assert np.isnan(ci["auc_2y"].value) and np.isnan(ci["c_index"].value)  # no event: no comparable pair either
    assert np.isnan(paired_comparison(y, scores, {"risk": scores["risk"][::-1], "score": scores["score"][::-1]}, "auc_2y", n_boot=20, n_perm=20).p_value)


def test_two_year_label_rule() -> None:
    y = two_year_label(np.array([100, 730, 730, 731, 731, 2000, 500]), np.array([1, 1, 0, 1, 0, 0, 0]))
    np.testing.assert_array_equal(y, [1, 1, 0, 0, 0, 0, np.nan])  # censored on day 730: followed two years alive


@pytest.mark.parametrize("kind", ["multiclass", "binary", "survival"])
def test_bootstrap_resamples_equal_metrics_of_resampled_data(kind) -> None:
    """A weight row of the vectorised bootstrap equals the metric on the explicitly resampled cases."""
    if kind == "survival":
        t, e, risk, score = _survival(120, seed=4)
        y, s = np.column_stack([t, e]), {"risk": risk, "score": score}
    elif kind == "binary":
        y, p = _multiclass(150, 2, seed=4)
        s = p[:, 1]
    else:
        y, s = _multiclass(150, 6, seed=4)
    W = bootstrap_weights(len(y), 5, 11)
    for w in W:
        idx = np.repeat(np.arange(len(y)), w.astype(int))
        ys = y[idx]
        ss = {k: v[idx] for k, v in s.items()} if isinstance(s, dict) else s[idx]
        ours = compute_metrics(kind, ys, ss)
        if kind == "survival":
            assert ours["c_index"] == pytest.approx(concordance_index(t[idx], -risk[idx], e[idx]), abs=1e-12)
            assert ours["auc_2y"] == pytest.approx(_sksurv_auc_2y(t[idx], e[idx], score[idx]), abs=1e-12)
        elif kind == "binary":
            assert ours["auc"] == pytest.approx(roc_auc_score(ys, ss), abs=1e-12)
            assert ours["average_precision"] == pytest.approx(average_precision_score(ys, ss), abs=1e-12)
        else:
            assert ours == pytest.approx(_sk_multiclass(ys, ss), abs=1e-12)
    # and the vectorised path gives the same numbers
    from lesionbench.benchmark.scoring import metrics as M

    t_ = M._target(M.TaskKind(kind), y)
    s_ = M._scores(M.TaskKind(kind), s, len(y))
    for name in M.DEFAULT_METRICS[M.TaskKind(kind)]:
        vec = M._evaluate(name, t_, s_, W)
        one = [M._evaluate(name, t_, s_, W[i : i + 1])[0] for i in range(len(W))]
        np.testing.assert_allclose(vec, one, atol=1e-12)


def test_multiclass_resample_missing_a_class_is_handled() -> None:
    y, p = _multiclass(60, 5, seed=2)
    y[y == 4] = 3  # class 4 absent: macro averages run over present classes, as sklearn's balanced accuracy
    ours = compute_metrics("multiclass", y, p)
    assert ours == pytest.approx(_sk_multiclass(y, p), abs=1e-12)
    ci = bootstrap_ci("multiclass", y, p, n_boot=200, seed=0)
    assert all(np.isfinite([v.ci_low, v.ci_high]).all() and v.ci_low <= v.value <= v.ci_high for v in ci.values())


def test_bootstrap_is_seeded() -> None:
    y, p = _multiclass()
    a = bootstrap_ci("multiclass", y, p, n_boot=100, seed=[3, 1])
    assert a == bootstrap_ci("multiclass", y, p, n_boot=100, seed=[3, 1])
    assert a != bootstrap_ci("multiclass", y, p, n_boot=100, seed=[4, 1])
    assert np.isnan(bootstrap_ci("multiclass", y, p, n_boot=0)["auc"].ci_low)


def test_ci_coverage_on_a_known_auc() -> None:
    """Scores N(d, 1) vs N(0, 1) have AUC = Phi(d / sqrt 2); the 95% CI should cover it ~95% of the time."""
    d, true_auc = 1.0, float(norm.cdf(1.0 / np.sqrt(2)))
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    n_sets = 150
    for i in range(n_sets):
        y = np.r_[np.ones(100, int), np.zeros(100, int)]
        s = np.r_[rng.normal(d, 1, 100), rng.normal(0, 1, 100)]
        ci = bootstrap_ci("binary", y, s, ["auc"], n_boot=400, seed=i)["auc"]
        covered += ci.ci_low <= true_auc <= ci.ci_high
        widths.append(ci.ci_high - ci.ci_low)
    assert 0.88 <= covered / n_sets <= 0.99
    # analytic standard error of the AUC here is about 0.029: the 95% CI is about 4 SE wide
    assert 0.08 < np.mean(widths) < 0.15


def test_paired_comparison() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    good = y + rng.normal(scale=0.6, size=200)
    bad = y + rng.normal(scale=3.0, size=200)
    r = paired_comparison(y, good, bad, "auc", n_boot=300, n_perm=300, seed=1)
    assert r.difference == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, bad), abs=1e-12)
    assert r.ci_low > 0 and r.p_value < 0.01
    rev = paired_comparison(y, bad, good, "auc", n_boot=300, n_perm=300, seed=1)
    # two-sided by default: the same evidence either way round
    assert rev.difference == pytest.approx(-r.difference) and rev.p_value == r.p_value and rev.alternative == "two-sided"
    assert paired_comparison(y, bad, good, "auc", n_boot=0, n_perm=300, seed=1, alternative="greater").p_value > 0.9
    assert paired_comparison(y, bad, good, "auc", n_boot=0, n_perm=300, seed=1, alternative="less").p_value < 0.01
    same = paired_comparison(y, good, good, "auc", n_boot=50, n_perm=50)
    assert same.difference == 0 and same.p_value == 1.0
    # survival and multiclass go through the same machinery
    t, e, risk, score = _survival()
    rs = paired_comparison(np.column_stack([t, e]), {"risk": risk, "score": score}, {"risk": -risk, "score": score}, "c_index", n_boot=50, n_perm=50)
    assert rs.value_a == pytest.approx(concordance_index(t, -risk, e)) and rs.p_value < 0.05


def test_metric_names() -> None:
    assert canonical_metric("mAP") == "map" and canonical_metric("C-index") == "c_index"
    with pytest.raises(UnknownNameError, match="Did you mean 'balanced_accuracy'"):
        canonical_metric("balanced_accuracy_score")


def test_patient_bootstrap() -> None:
    """One lesion per patient: identical to the lesion bootstrap; clustered lesions: wider, honest CIs."""
    y, p = _multiclass(120, 3, seed=6)
    single = bootstrap_ci("multiclass", y, p, n_boot=200, seed=4, groups=[f"p{i}" for i in range(120)])
    assert single == bootstrap_ci("multiclass", y, p, n_boot=200, seed=4)
    W = bootstrap_weights(6, 50, 0, groups=["a", "a", "b", "b", "b", "c"])
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 2] == W[:, 4]).all() and (W.sum(1) % 1 == 0).all()
    # every patient contributes 4 copies of one lesion: the information is that of n_patients lesions
    rng = np.random.default_rng(0)
    true_auc = float(norm.cdf(1 / np.sqrt(2)))
    cover_patient = cover_lesion = 0
    for i in range(80):
        yp = np.r_[np.ones(25, int), np.zeros(25, int)]
        sp = np.r_[rng.normal(1, 1, 25), rng.normal(0, 1, 25)]
        y4, s4, g4 = np.repeat(yp, 4), np.repeat(sp, 4), np.repeat(np.arange(50), 4)
        ci_p = bootstrap_ci("binary", y4, s4, ["auc"], n_boot=300, seed=i, groups=g4)["auc"]
        ci_l = bootstrap_ci("binary", y4, s4, ["auc"], n_boot=300, seed=i)["auc"]
        cover_patient += ci_p.ci_low <= true_auc <= ci_p.ci_high
        cover_lesion += ci_l.ci_low <= true_auc <= ci_l.ci_high
    assert cover_patient / 80 >= 0.85 and cover_lesion / 80 < 0.8  # the lesion bootstrap under-covers


# ------------------------------------------------------------------- paired test (issue 12)
def _clustered(patients=40, lesions=5, seed=0):
    """Labels and two models' scores with patient-level correlation of labels and model errors."""
    rng = np.random.default_rng(seed)
    z = 0.7 * rng.normal(size=(patients, 1)) + 0.7 * rng.normal(size=(patients, lesions))
    y = (z + 0.7 * rng.normal(size=z.shape) > 0.3).astype(int).ravel()
    a = (z + 0.8 * rng.normal(size=(patients, 1)) + 0.6 * rng.normal(size=z.shape)).ravel()
    b = (z + 0.8 * rng.normal(size=(patients, 1)) + 0.6 * rng.normal(size=z.shape)).ravel()
    return y, a, b, np.repeat([f"P{i}" for i in range(patients)], lesions)


@pytest.mark.parametrize("transform", [lambda s: 1 / (1 + np.exp(-4 * s)), lambda s: np.exp(3 * s), lambda s: 10 * s - 7])
def test_paired_test_does_not_depend_on_either_models_scale(transform) -> None:
    """A monotone rescaling of one model leaves its AUC, hence the difference, the CI and p, unchanged."""
    y, a, b, g = _clustered(seed=3)
    a = a + 0.3 * (2 * y - 1)  # A is better, p small but not the smallest possible: it moves with the swaps
    ref = paired_comparison(y, a, b, "auc", n_boot=200, n_perm=2000, seed=4, groups=g)
    moved = paired_comparison(y, a, transform(b), "auc", n_boot=200, n_perm=2000, seed=4, groups=g)
    assert moved.difference == pytest.approx(ref.difference, abs=1e-12)
    assert (moved.ci_low, moved.ci_high) == pytest.approx((ref.ci_low, ref.ci_high), abs=1e-12)
    assert moved.p_value == ref.p_value < 0.05


def test_paired_test_is_scale_free_for_survival_too() -> None:
    t, e, risk, score = _survival(seed=2)
    rng = np.random.default_rng(0)
    other = risk + rng.normal(scale=1.0, size=len(risk))
    y = np.column_stack([t, e])
    ref = paired_comparison(y, {"risk": risk, "score": score}, {"risk": other, "score": score}, "c_index", n_boot=0, n_perm=500, seed=1)
    moved = paired_comparison(y, {"risk": risk, "score": score}, {"risk": np.exp(2 * other), "score": score}, "c_index", n_boot=0, n_perm=500, seed=1)
    assert moved.p_value == ref.p_value and moved.difference == pytest.approx(ref.difference, abs=1e-12)


def test_permutations_swap_whole_patients() -> None:
    """Each patient's lesions are 4 copies of one lesion: with patients as the unit the test is that of
    the single lesions, swap for swap; swapping the copies one by one would understate the null spread."""
    rng = np.random.default_rng(7)
    y = (rng.random(50) < 0.4).astype(int)
    a, b = y + rng.normal(size=50), y + rng.normal(size=50)
    single = paired_comparison(y, a, b, "auc", n_boot=300, n_perm=1000, seed=2)
    copies = paired_comparison(np.repeat(y, 4), np.repeat(a, 4), np.repeat(b, 4), "auc", n_boot=300, n_perm=1000, seed=2, groups=np.repeat(np.arange(50), 4))
    assert copies.difference == pytest.approx(single.difference, abs=1e-12)
    assert copies.p_value == single.p_value and copies.n_groups == 50 and copies.n == 200
    assert (copies.ci_low, copies.ci_high) == pytest.approx((single.ci_low, single.ci_high), abs=1e-12)


def test_undefined_observed_metric_gives_no_p_value() -> None:
    """AUC with one class only is undefined: p is NaN, never the smallest possible p."""
    rng = np.random.default_rng(0)
    y = np.ones(30, int)
    r = paired_comparison(y, rng.random(30), rng.random(30), "auc", n_boot=50, n_perm=100)
    assert np.isnan(r.difference) and np.isnan(r.p_value)
    assert np.isnan(paired_comparison(np.r_[0, y], rng.random(31), rng.random(31), "auc", n_boot=0, n_perm=0).p_value)


def test_alternatives() -> None:
    y, a, b, g = _clustered(seed=5)
    kw = {"n_boot": 0, "n_perm": 400, "seed": 9, "groups": g}
    two = paired_comparison(y, a, b, "auc", **kw)
    assert two.p_value == paired_comparison(y, b, a, "auc", **kw).p_value
    assert paired_comparison(y, a, b, "auc", alternative="greater", **kw).p_value == paired_comparison(y, b, a, "auc", alternative="less", **kw).p_value
    with pytest.raises(ConfigurationError, match="alternative must be one of two-sided, greater, less"):
        paired_comparison(y, a, b, "auc", alternative="one-sided")


def test_balanced_accuracy_test_uses_the_predicted_classes() -> None:
    """Balanced accuracy depends on the predicted class only: scores giving the same classes give the same p."""
    y, p = _multiclass(200, 4, seed=3)
    q = np.roll(p, 1, axis=0)
    sharp = np.eye(4)[p.argmax(1)] * 0.7 + 0.1  # same argmax, other probabilities
    ref = paired_comparison(y, p, q, "balanced_accuracy", n_boot=0, n_perm=300, seed=0)
    assert paired_comparison(y, sharp, q, "balanced_accuracy", n_boot=0, n_perm=300, seed=0).p_value == ref.p_value


def test_map_on_a_binary_task_is_the_positive_class_ap() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(150) < 0.3).astype(int)
    s = 1 / (1 + np.exp(-(y + rng.normal(size=150))))
    got = compute_metrics("binary", y, s, ["map", "average_precision"])
    assert got["map"] == pytest.approx(average_precision_score(y, s), abs=1e-12) == got["average_precision"]
    assert bootstrap_ci("binary", y, s, ["map"], n_boot=100, seed=1)["map"] == bootstrap_ci("binary", y, s, ["average_precision"], n_boot=100, seed=1)["average_precision"]
