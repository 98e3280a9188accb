"""Probes: the FMCIB linear probe, C selection, feature cleaning, the survival probe."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lesionbench.benchmark.scoring._fabricate import fabricate
from lesionbench.benchmark.errors import UnknownNameError
from lesionbench.benchmark.scoring.probes.linear import DEFAULT_C
from lesionbench.benchmark.scoring.probes import C_GRID, LinearProbe, ProbeError, SurvivalProbe, make_probe


@pytest.fixture(scope="module")
def data():
    task, X = fabricate("multiclass", n_lesions=400, n_classes=3, feature_dim=20, signal=0.7, seed=2)
    df = task.manifest()
    s = df["split"].to_numpy()
    y = df["label"].to_numpy()
    return X[s == "train"], y[s == "train"], X[s == "val"], y[s == "val"], X[s == "test"], y[s == "test"], df["patient_id"].to_numpy()[s == "train"]


def test_single_c_equals_sklearn_directly(data) -> None:
    Xtr, ytr, Xv, yv, Xte, _, _ = data
    probe = LinearProbe(metric="balanced_accuracy", n_classes=3, c_grid=(0.1,), refine=False).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    sc = StandardScaler().fit(Xtr.astype(np.float64))
    ref = LogisticRegression(C=0.1, max_iter=5000).fit(sc.transform(Xtr.astype(np.float64)), ytr)
    # the multiclass decision rule: each class probability divided by its training share, renormalised
    shares = np.bincount(ytr, minlength=3) / len(ytr)
    expected = ref.predict_proba(sc.transform(Xte.astype(np.float64))) / shares
    np.testing.assert_allclose(probe.predict_proba(Xte), expected / expected.sum(1, keepdims=True), atol=1e-6)
    assert probe.C_ == 0.1 and probe.selection_ == "val" and probe.threshold_selection_ == "class_shares"


def test_c_search_on_validation(data) -> None:
    Xtr, ytr, Xv, yv, Xte, _, _ = data
    probe = LinearProbe(metric="balanced_accuracy", n_classes=3).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    tried = [c for c, _ in probe.search_]
    assert set(C_GRID) <= set(tried) and len(tried) == len(C_GRID) + 6  # decades + quarter-decade refinement
    assert min(tried) >= 1e-6 and max(tried) <= 1e3
    best_score = max(s for _, s in probe.search_)
    assert dict(probe.search_)[probe.C_] == best_score
    # the warm-started fit at the chosen C is the cold fit at that C
    cold = LinearProbe(metric="balanced_accuracy", n_classes=3, c_grid=(probe.C_,), refine=False).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    np.testing.assert_allclose(probe.predict_proba(Xte), cold.predict_proba(Xte), atol=2e-3)
    p = probe.predict_proba(Xte)
    assert p.shape == (len(Xte), 3) and np.allclose(p.sum(1), 1)


def test_cross_validation_without_validation_split(data) -> None:
    Xtr, ytr, _, _, _, _, groups = data
    probe = LinearProbe(metric="auc", n_classes=3, c_grid=(1e-3, 1.0), refine=False).fit(Xtr, ytr, groups=groups)
    assert probe.selection_ == "cv" and probe.C_ in (1e-3, 1.0)
    assert all(np.isfinite(s) for _, s in probe.search_)


def test_feature_cleaning_on_training_rows_only(data) -> None:
    Xtr, ytr, Xv, yv, Xte, _, _ = data
    Xtr = Xtr.astype(np.float64).copy()
    Xtr[3, 0] = np.nan
    Xtr[5, 1] = np.inf
    Xtr[:, 2] = 7.0
    Xv = Xv.astype(np.float64).copy()
    Xv[0, 4] = np.nan  # a kept column: imputed, not dropped
    probe = LinearProbe(metric="auc", n_classes=3, c_grid=(1.0,), refine=False).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    rep = probe.report()
    assert (rep["n_features_dropped_nonfinite"], rep["n_features_dropped_constant"], rep["n_values_imputed"]) == (2, 1, 1)
    assert probe.filter_.keep_.sum() == Xtr.shape[1] - 3
    assert np.isfinite(probe.predict_proba(Xv)).all()


def test_clone_is_fresh(data) -> None:
    Xtr, ytr, Xv, yv, *_ = data
    template = make_probe("linear", "multiclass", metric="map", n_classes=3, c_grid=(1.0,), refine=False)
    fitted = clone(template).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert hasattr(fitted, "model_") and not hasattr(template, "model_")
    with pytest.raises(UnknownNameError, match="Unknown probe 'mlp'"):
        make_probe("mlp", "binary", metric="auc", n_classes=2)


def test_survival_probe() -> None:
    task, X = fabricate("survival", n_lesions=500, feature_dim=16, seed=4)
    df = task.manifest()
    s = df["split"].to_numpy()
    t, e = df["time"].to_numpy(float), df["event"].to_numpy(float)
    tr, va, te = s == "train", s == "val", s == "test"
    probe = SurvivalProbe(c_grid=(1e-2, 1.0), refine=False).fit(
        X[tr], t[tr], e[tr], X_val=X[va], time_val=t[va], event_val=e[va], groups=df["patient_id"].to_numpy()[tr]
    )
    censored_early = int(((t[tr] < 730) & (e[tr] == 0)).sum())
    assert probe.n_censored_excluded_ == censored_early > 0
    out = probe.predict(X[te])
    assert set(out) == {"score", "risk"} and out["risk"].shape == (te.sum(),)
    from lifelines.utils import concordance_index

    assert concordance_index(t[te], -out["risk"], e[te]) > 0.6  # the planted risk direction is found
    assert probe.risk_threshold_ == pytest.approx(np.median(probe.predict(X[tr])["risk"]))
    rep = probe.report()
    assert rep["cox_penalty_selection"] == "val" and rep["cox_alpha"] in probe.alphas_ and rep["cox_n_nonzero"] > 0
    # the chosen penalty is the best on validation
    assert dict(probe.penalty_search_)[probe.alpha_] == max(c for _, c in probe.penalty_search_ if np.isfinite(c))


def test_survival_probe_without_validation_split_uses_grouped_cv() -> None:
    task, X = fabricate("survival", n_lesions=300, feature_dim=8, seed=6)
    df = task.manifest()
    tr = (df["split"] == "train").to_numpy()
    t, e = df["time"].to_numpy(float), df["event"].to_numpy(float)
    probe = SurvivalProbe(c_grid=(1e-2, 1.0), refine=False).fit(X[tr], t[tr], e[tr], groups=df["patient_id"].to_numpy()[tr])
    assert probe.penalty_selection_ == "cv" and probe.classifier_.selection_ == "cv"
    assert np.isfinite([s for _, s in probe.penalty_search_]).any()


def _messy_features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = (X[:, 0] > 0).astype(int)
    X[3, 1] = np.nan  # a NaN in a training row
    X[5, 2] = np.inf  # an infinity in a training row
    X[:, 3] = 7.25  # constant
    X[:, 4] = 1e6 + 1e-9 * rng.normal(size=40)  # constant up to float noise
    return X, y


def test_feature_filter_decides_on_training_rows_only() -> None:
    from lesionbench.benchmark.scoring.probes import FeatureFilter

    X, _ = _messy_features()
    f = FeatureFilter().fit(X[:30])
    assert f.keep_.tolist() == [True, False, False, False, False, True]
    assert (f.n_nonfinite_, f.n_constant_, f.n_failed_rows_) == (2, 2, 0)
    np.testing.assert_array_equal(f.transform(X[30:]), X[30:][:, [0, 5]])
    # Fitted on rows without the NaN/inf, columns 1 and 2 are kept and the other rows' values are imputed.
    f = FeatureFilter().fit(X[10:])
    assert f.keep_[1] and f.keep_[2]
    out, n = f.transform_count(X[:10])
    assert n == 2
    assert out[3, 1] == pytest.approx(X[10:, 1].mean())


def test_a_failed_lesion_does_not_drop_every_column() -> None:
    """Radiomics fills a failed lesion's row with NaN: that row must not decide the columns."""
    from lesionbench.benchmark.scoring.probes import FeatureFilter, LinearProbe

    X, y = _messy_features()
    X[7] = np.nan
    f = FeatureFilter().fit(X[:30])
    assert f.keep_.tolist() == [True, False, False, False, False, True]
    assert f.n_failed_rows_ == 1 and f.report()["n_train_rows_without_features"] == 1
    assert np.isfinite(f.transform(X[:30])).all()
    probe = LinearProbe(metric="auc", n_classes=2, c_grid=(0.1, 1.0), refine=False).fit(X[:30], y[:30])
    assert probe.predict_proba(X[30:]).shape == (10, 2)
    with pytest.raises(ProbeError, match="no usable feature"):
        FeatureFilter().fit(np.full((3, 4), np.nan))


# ---------------------------------------------------------------- binary operating threshold, C ties (issue 12, item 6)
def _imbalanced(n: int, rng: np.random.Generator, d: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The review's case: 512-d features, 25% positives, a weak signal spread over 16 features."""
    y = (rng.random(n) < 0.25).astype(int)
    X = rng.normal(size=(n, d))
    X[:, :16] += 0.5 * y[:, None]
    return X, y


@pytest.fixture(scope="module")
def imbalanced():
    rng = np.random.default_rng(0)
    return _imbalanced(200, rng), _imbalanced(100, rng), _imbalanced(400, rng)


def test_binary_balanced_accuracy_does_not_collapse_next_to_a_fine_auc(imbalanced) -> None:
    """Before: C 1e-6 (the smallest tied C), probabilities at the prior, every lesion called negative: AUC 0.69, BA 0.500."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    (Xtr, ytr), (Xv, yv), (Xte, yte) = imbalanced
    probe = LinearProbe(metric="auc", n_classes=2).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    p = probe.predict_proba(Xte)
    assert roc_auc_score(yte, p[:, 1]) > 0.65
    assert balanced_accuracy_score(yte, p.argmax(1)) > 0.58
    assert probe.threshold_selection_ == "val" and 0 < probe.threshold_ < 0.5
    # the threshold is folded into the intercept: ranking unchanged, 0.5 on the new scale is the chosen cut
    raw = LinearProbe(metric="auc", n_classes=2, threshold="none").fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert raw.C_ == probe.C_ and raw.threshold_selection_ == "none"
    np.testing.assert_array_equal(p[:, 1] > 0.5, raw.predict_proba(Xte)[:, 1] > probe.threshold_)
    assert roc_auc_score(yte, p[:, 1]) == pytest.approx(roc_auc_score(yte, raw.predict_proba(Xte)[:, 1]), abs=1e-9)
    assert probe.report()["threshold_selection"] == "val"


def test_threshold_from_out_of_fold_training_predictions_when_validation_is_small(imbalanced) -> None:
    (Xtr, ytr), (Xv, yv), (Xte, yte) = imbalanced
    few = np.concatenate([np.flatnonzero(yv == 1)[:5], np.flatnonzero(yv == 0)[:40]])  # 5 positives < MIN_THRESHOLD_PER_CLASS
    groups = np.arange(len(ytr)) // 2
    probe = LinearProbe(metric="auc", n_classes=2, c_grid=(1e-4, 1e-2), refine=False).fit(Xtr, ytr, X_val=Xv[few], y_val=yv[few], groups=groups)
    assert probe.selection_ == "val" and probe.threshold_selection_ == "train_oof"
    assert 0 < probe.threshold_ < 0.5  # near the 25% prior, not 0.5
    from sklearn.metrics import balanced_accuracy_score

    assert balanced_accuracy_score(yte, probe.predict(Xte)) > 0.55


def test_balanced_threshold_is_the_middle_of_the_best_cuts() -> None:
    from lesionbench.benchmark.scoring.probes.base import balanced_threshold

    assert balanced_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(0.25)
    # BA 1 for any cut in (0.2, 0.3) and at no other: the cut is in there whatever the score scale
    assert 0.2 < balanced_threshold(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3])) < 0.3


def test_c_ties_go_to_the_middle_of_the_plateau(imbalanced) -> None:
    """At tiny C the ranking (AUC) no longer changes: every C of the plateau ties; the smallest was chosen before."""
    from lesionbench.benchmark.scoring.probes.base import plateau_middle

    (Xtr, ytr), (Xv, yv), _ = imbalanced
    probe = LinearProbe(metric="auc", n_classes=2, c_grid=(1e-9, 1e-8, 1e-7), refine=False).fit(Xtr, ytr, X_val=Xv, y_val=yv)
    assert len({s for _, s in probe.search_}) == 1  # a plateau
    assert probe.C_ == 1e-8
    assert plateau_middle({1e-3: 0.7, 1e-2: 0.7, 1e-1: 0.7, 1.0: 0.7, 10.0: 0.6}) == 1e-1  # even run: the larger middle
    assert plateau_middle({1e-3: 0.7, 1e-2: 0.6, 1e-1: 0.7, 1.0: 0.7}) == 1.0  # the longer run of ties
    assert plateau_middle({1e-3: float("nan"), 1e-2: 0.7}) == 1e-2


def test_cv_fallback_fits_the_feature_filter_per_fold(imbalanced, monkeypatch) -> None:
    """Without a validation split the filter is refitted on each fold's training rows, not on the whole subset."""
    from lesionbench.benchmark.scoring.probes import base as probe_base

    (Xtr, ytr), _, _ = imbalanced
    seen: list[int] = []
    real_fit = probe_base.FeatureFilter.fit

    def spy(self, X, y=None):
        seen.append(len(X))
        return real_fit(self, X, y)

    monkeypatch.setattr(probe_base.FeatureFilter, "fit", spy)
    probe = LinearProbe(metric="auc", n_classes=2, c_grid=(1e-2,), refine=False, cv_folds=4).fit(Xtr, ytr, groups=np.arange(len(ytr)))
    assert probe.selection_ == "cv"
    assert seen[0] == len(Xtr) and len(seen) >= 5 and all(n < len(Xtr) for n in seen[1:5])


# ---------------------------------------------------------------- survival: penalised Cox on all features (item 8)
def _survival_sim(n: int, rng: np.random.Generator, d: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five strong shared factors (what PCA finds first) plus per-feature noise; the hazard depends on the
    noise of six features only, i.e. on directions outside the leading principal components."""
    F = rng.normal(size=(n, 5)) * 1.5
    L = np.random.default_rng(99).normal(size=(5, d))
    E = rng.normal(size=(n, d))
    T = rng.exponential(900 * np.exp(-0.5 * E[:, :6].sum(1)))
    C = rng.uniform(300, 2500, n)
    return F @ L + E, np.minimum(T, C), (T <= C).astype(float)


def test_penalised_cox_finds_a_signal_outside_the_leading_components() -> None:
    """Before: Cox on <= 10 principal components chosen without the outcome, test C 0.45 here; now 0.71."""
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(1)
    (Xt, tt, et), (Xv, tv, ev), (Xs, ts, es) = _survival_sim(300, rng), _survival_sim(120, rng), _survival_sim(300, rng)
    probe = SurvivalProbe(c_grid=(1e-2,), refine=False).fit(Xt, tt, et, X_val=Xv, time_val=tv, event_val=ev)
    assert probe.penalty_selection_ == "val"
    assert concordance_index(ts, -probe.predict(Xs)["risk"], es) > 0.65


def test_cox_penalty_falls_back_to_grouped_cv_when_validation_has_no_event(caplog) -> None:
    rng = np.random.default_rng(2)
    (Xt, tt, et), (Xv, tv, _) = _survival_sim(200, rng), _survival_sim(40, rng)
    with caplog.at_level("WARNING"):
        probe = SurvivalProbe(c_grid=(1e-2,), refine=False).fit(Xt, tt, et, X_val=Xv, time_val=tv, event_val=np.zeros(len(tv)))
    assert probe.penalty_selection_ == "cv" and "0 event(s)" in caplog.text and "cross-validation" in caplog.text
    assert np.isfinite([s for _, s in probe.penalty_search_]).any() and probe.report()["cox_n_nonzero"] > 0


def test_censored_at_exactly_two_years_is_a_two_year_survivor() -> None:
    """Followed 730 days alive: label 0 (was: unknown, excluded)."""
    from lesionbench.benchmark.scoring.endpoints import two_year_label

    t = np.array([729.0, 730.0, 730.0, 731.0, 100.0, 900.0])
    e = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(two_year_label(t, e), [np.nan, 0.0, 1.0, 0.0, 1.0, 0.0])


def test_c_is_the_default_when_no_data_can_score_it(caplog: pytest.LogCaptureFixture) -> None:
    """A 10% subset of an 8-class task whose validation subset misses classes: C is chosen by grouped CV on
    the training subset, and with a class held by one patient no fold can be made, so the selection metric
    is undefined for every C. The probe fits at the default C and says so (before: a ProbeError ended the
    whole sweep, and the demo lost synthetic_site)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 2)
    X = rng.normal(size=(16, 5)) + y[:, None]
    groups = np.repeat(np.arange(8), 2)  # both lesions of a class from one patient
    probe = LinearProbe(metric="balanced_accuracy", n_classes=8)
    with caplog.at_level(logging.INFO):
        probe.fit(X, y, groups=groups)
    assert probe.C_ == DEFAULT_C and probe.report()["c_selection"] == "default"
    assert probe.search_ and all(not np.isfinite(score) for _, score in probe.search_)
    assert any("undefined for every C" in r.getMessage() for r in caplog.records)
    assert probe.predict_proba(X).shape == (16, 8)


def test_fits_that_stop_at_max_iter_are_counted_from_the_fit_also_beside_another_thread() -> None:
    """n_not_converged (saved in every run's params) counts fits that stopped at max_iter. It used to be read
    from recorded warnings, and warnings.catch_warnings is process-wide before Python 3.14: another thread
    entering and leaving it (a probe on another Dask worker thread, a logging thread) lost some of the count."""
    import threading
    import warnings

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 30)), rng.integers(0, 2, 80)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")

    other = threading.Thread(target=busy)
    other.start()
    try:
        probe = LinearProbe(n_classes=2, max_iter=1)
        probe.n_not_converged_ = 0  # as fit() starts it
        fits = [probe._fit_one(X, y, 1.0, None) for _ in range(200)]
    finally:
        stop.set()
        other.join()
    assert all(int(np.max(m.n_iter_)) >= 1 for m in fits)
    assert probe.n_not_converged_ == 200
