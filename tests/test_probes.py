"""Probes: the FMCIB linear probe, C selection, feature cleaning, the survival probe."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lesionbench.benchmark._fabricate import fabricate
from lesionbench.benchmark.errors import UnknownNameError
from lesionbench.benchmark.probes import C_GRID, LinearProbe, ProbeError, SurvivalProbe, make_probe


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
    np.testing.assert_allclose(probe.predict_proba(Xte), ref.predict_proba(sc.transform(Xte.astype(np.float64))), atol=1e-6)
    assert probe.C_ == 0.1 and probe.selection_ == "val"


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
    probe = SurvivalProbe(c_grid=(1e-2, 1.0), refine=False, penalizer_grid=(0.1, 1.0)).fit(
        X[tr], t[tr], e[tr], X_val=X[va], time_val=t[va], event_val=e[va], groups=df["patient_id"].to_numpy()[tr]
    )
    censored_early = int(((t[tr] <= 730) & (e[tr] == 0)).sum())
    assert probe.n_censored_excluded_ == censored_early > 0
    assert probe.n_components_ == min(10, int(e[tr].sum()) // 10)
    out = probe.predict(X[te])
    assert set(out) == {"score", "risk"} and out["risk"].shape == (te.sum(),)
    from lifelines.utils import concordance_index

    assert concordance_index(t[te], -out["risk"], e[te]) > 0.6  # the planted risk direction is found
    assert probe.risk_threshold_ == pytest.approx(np.median(probe.predict(X[tr])["risk"]))
    assert probe.report()["cox_penalizer"] in (0.1, 1.0)


def test_survival_probe_without_validation_split_uses_grouped_cv() -> None:
    task, X = fabricate("survival", n_lesions=300, feature_dim=8, seed=6)
    df = task.manifest()
    tr = (df["split"] == "train").to_numpy()
    t, e = df["time"].to_numpy(float), df["event"].to_numpy(float)
    probe = SurvivalProbe(c_grid=(1e-2, 1.0), refine=False, penalizer_grid=(0.1, 1.0)).fit(X[tr], t[tr], e[tr], groups=df["patient_id"].to_numpy()[tr])
    assert probe.penalizer_selection_ == "cv" and probe.classifier_.selection_ == "cv"
    assert all(np.isfinite(s) for _, s in probe.penalizer_search_)


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
    from lesionbench.benchmark.probes import FeatureFilter

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
    from lesionbench.benchmark.probes import FeatureFilter, LinearProbe

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
