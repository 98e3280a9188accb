"""FeatureSanitizer: NaN / infinite / constant columns are dropped, decided on the training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.sanitize import FeatureSanitizer, NonFiniteFeatureError


def _features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = (X[:, 0] > 0).astype(int)
    X[3, 1] = np.nan  # a NaN in a training row
    X[5, 2] = np.inf  # an infinity in a training row
    X[:, 3] = 7.25  # constant
    X[:, 4] = 1e6 + 1e-9 * rng.normal(size=40)  # constant up to float noise
    return X, y


def test_drops_on_training_rows_and_reports() -> None:
    X, _ = _features()
    s = FeatureSanitizer().fit(X[:30])
    assert s.keep_.tolist() == [True, False, False, False, False, True]
    assert s.report_ == {"n_features_in": 6, "n_kept": 2, "n_dropped_nonfinite": 2, "n_dropped_constant": 2, "n_failed_rows": 0}
    out = s.transform(X[30:])
    assert out.shape == (10, 2)
    np.testing.assert_array_equal(out, X[30:][:, [0, 5]])


def test_decision_uses_the_training_rows_only() -> None:
    X, _ = _features()
    # Rows 10.. have no NaN/inf in columns 1 and 2: fitted there, those columns are kept ...
    s = FeatureSanitizer().fit(X[10:])
    assert s.keep_[1] and s.keep_[2]
    # ... and the NaN/inf that only the other rows carry are imputed with training medians, and counted.
    with pytest.warns(UserWarning, match="replaced 2 non-finite"):
        out = s.transform(X[:10])
    assert s.n_imputed_ == 2
    assert out[3, 1] == pytest.approx(np.median(X[10:, 1]))
    assert out[5, 2] == pytest.approx(np.median(X[10:, 2]))
    with pytest.raises(NonFiniteFeatureError, match="2 non-finite"):
        FeatureSanitizer(on_nonfinite="raise").fit(X[10:]).transform(X[:10])


def test_a_failed_lesion_does_not_drop_every_column() -> None:
    X, y = _features()
    X[7] = np.nan  # radiomics fills a failed lesion's row with NaN
    s = FeatureSanitizer().fit(X[:30])
    assert s.keep_.tolist() == [True, False, False, False, False, True]
    assert s.report_["n_failed_rows"] == 1
    with pytest.warns(UserWarning, match="replaced 2 non-finite"):
        out = s.transform(X[:30])
    np.testing.assert_allclose(out[7], np.median(np.delete(X[:30], 7, axis=0)[:, [0, 5]], axis=0))
    with pytest.raises(ConfigurationError, match="every extraction failed"):
        FeatureSanitizer().fit(np.full((3, 4), np.nan))


def test_feature_names_and_pipeline() -> None:
    X, y = _features()
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    s = FeatureSanitizer().fit(df)
    assert s.report_["dropped_constant"] == ["f3", "f4"]
    assert s.report_["dropped_nonfinite"] == ["f1", "f2"]
    assert s.get_feature_names_out().tolist() == ["f0", "f5"]
    probe = make_pipeline(FeatureSanitizer(), StandardScaler(), LogisticRegression(max_iter=1000))
    fitted = clone(probe).fit(X, y)  # a plain LogisticRegression would fail on the NaN/inf
    assert fitted.predict_proba(X).shape == (40, 2)
    assert not hasattr(probe[0], "keep_")  # clone() leaves the template unfitted


def test_refuses_useless_input() -> None:
    with pytest.raises(ConfigurationError, match="every one of the 2 feature columns"):
        FeatureSanitizer().fit(np.ones((5, 2)))
    with pytest.raises(ConfigurationError, match="2-D"):
        FeatureSanitizer().fit(np.ones(5))
    s = FeatureSanitizer().fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ConfigurationError, match="fitted on 3 feature columns but got 2"):
        s.transform(np.ones((2, 2)))
    with pytest.raises(ConfigurationError, match="on_nonfinite"):
        FeatureSanitizer(on_nonfinite="ignore").fit(np.ones((3, 2)))
