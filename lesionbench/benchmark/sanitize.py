"""Drop unusable feature columns before a probe is fitted, deciding on the training subset only.

Hand-crafted features (PyRadiomics above all) can be NaN (a failed extraction, a feature undefined
for a region), infinite, or constant across the lesions of a subset. A linear probe can use none of
them. :class:`FeatureSanitizer` is a scikit-learn transformer, so it sits first in the probe's
pipeline and is refitted (``clone``) for every (fraction, seed) run::

    make_pipeline(FeatureSanitizer(), StandardScaler(), LogisticRegression(...))

At ``fit`` it keeps the columns that are finite for every training row and not constant. Rows with no
finite value at all (a lesion whose extraction failed) are left out of that decision, otherwise a
single failed lesion would drop every column; they are counted (``n_failed_rows``) and, like any
stray non-finite value, replaced by training medians in ``transform``. At ``transform`` a non-finite value left in a kept column (a lesion
outside the training subset whose extraction failed) is replaced by that column's training median,
counted in ``n_imputed_`` and warned about, because a probe cannot score a NaN; pass
``on_nonfinite="raise"`` to refuse instead. What was dropped is in ``report_``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from lesionbench.benchmark.errors import ConfigurationError, LesionbenchError

logger = logging.getLogger(__name__)

__all__ = ["FeatureSanitizer", "NonFiniteFeatureError"]


class NonFiniteFeatureError(LesionbenchError, ValueError):
    """Non-finite feature values met at transform time with ``on_nonfinite="raise"``."""


class FeatureSanitizer(TransformerMixin, BaseEstimator):
    """Keep the feature columns that are finite and non-constant on the training rows.

    Parameters
    ----------
    constant_tol:
        A column is constant when ``max - min <= constant_tol * max(1, |median|)`` over the training rows.
    on_nonfinite:
        What ``transform`` does with a NaN/inf in a kept column: ``"impute"`` (the training median,
        with a warning) or ``"raise"`` (:class:`NonFiniteFeatureError`).

    Attributes
    ----------
    keep_ : ndarray of bool, shape (n_features_in_,)
    medians_ : ndarray, the kept columns' training medians
    report_ : dict with n_features_in, n_kept, n_dropped_nonfinite, n_dropped_constant,
        n_failed_rows and, when ``feature_names_in_`` is known, the dropped names.
    n_imputed_ : number of values replaced by the last ``transform``.
    """

    def __init__(self, *, constant_tol: float = 1e-12, on_nonfinite: str = "impute"):
        self.constant_tol = constant_tol
        self.on_nonfinite = on_nonfinite

    def fit(self, X: Any, y: Any = None) -> FeatureSanitizer:
        if self.on_nonfinite not in ("impute", "raise"):
            raise ConfigurationError(f"on_nonfinite must be 'impute' or 'raise', got {self.on_nonfinite!r}.")
        names = getattr(X, "columns", None)
        arr = _as_2d(X)
        if arr.shape[0] == 0:
            raise ConfigurationError("FeatureSanitizer.fit got no training rows.")
        self.n_features_in_ = arr.shape[1]
        if names is not None:
            self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)
        # A row with no finite value at all is a lesion whose extraction failed (radiomics fills NaN):
        # it says nothing about the columns, and letting it decide would drop every column at once.
        failed = ~np.isfinite(arr).any(axis=1)
        if failed.all():
            raise ConfigurationError(
                f"FeatureSanitizer: all {arr.shape[0]} training rows are entirely NaN/inf (every extraction failed)."
            )
        ok = arr[~failed]
        finite = np.isfinite(ok).all(axis=0)
        sub = ok[:, finite]
        med = np.zeros(arr.shape[1])
        med[finite] = np.median(sub, axis=0)
        constant = np.zeros(arr.shape[1], dtype=bool)
        constant[finite] = (sub.max(axis=0) - sub.min(axis=0)) <= self.constant_tol * np.maximum(1.0, np.abs(med[finite]))
        self.keep_ = finite & ~constant
        self.medians_ = med[self.keep_]
        self.n_failed_rows_ = int(failed.sum())
        self.report_ = {
            "n_features_in": int(arr.shape[1]),
            "n_kept": int(self.keep_.sum()),
            "n_dropped_nonfinite": int((~finite).sum()),
            "n_dropped_constant": int(constant.sum()),
            "n_failed_rows": self.n_failed_rows_,
        }
        if names is not None:
            self.report_["dropped_nonfinite"] = [str(n) for n in self.feature_names_in_[~finite]]
            self.report_["dropped_constant"] = [str(n) for n in self.feature_names_in_[constant]]
        if not self.keep_.any():
            raise ConfigurationError(
                f"FeatureSanitizer: every one of the {arr.shape[1]} feature columns is non-finite or constant on the "
                f"{arr.shape[0]} training rows; the encoder produced no usable features."
            )
        if self.report_["n_kept"] < arr.shape[1]:
            logger.info(
                "Feature sanitizer: kept %d of %d columns (%d with NaN/inf, %d constant on the training rows).",
                self.report_["n_kept"], arr.shape[1], self.report_["n_dropped_nonfinite"], self.report_["n_dropped_constant"],
            )
        self.n_imputed_ = 0
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "keep_")
        arr = _as_2d(X)
        if arr.shape[1] != self.n_features_in_:
            raise ConfigurationError(
                f"FeatureSanitizer was fitted on {self.n_features_in_} feature columns but got {arr.shape[1]}."
            )
        out = arr[:, self.keep_].astype(np.float64, copy=True)
        bad = ~np.isfinite(out)
        self.n_imputed_ = int(bad.sum())
        if self.n_imputed_:
            rows = np.flatnonzero(bad.any(axis=1))
            if self.on_nonfinite == "raise":
                raise NonFiniteFeatureError(
                    f"{self.n_imputed_} non-finite feature value(s) in {len(rows)} row(s) (first rows: {rows[:10].tolist()}) "
                    "in columns that were finite on the training rows. Re-extract those lesions, or use on_nonfinite='impute'."
                )
            warnings.warn(
                f"FeatureSanitizer: replaced {self.n_imputed_} non-finite value(s) in {len(rows)} row(s) "
                f"(first rows: {rows[:10].tolist()}) by the training medians.",
                stacklevel=2,
            )
            out[bad] = np.broadcast_to(self.medians_, out.shape)[bad]
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "keep_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_", None)
        if input_features is None:
            input_features = np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return np.asarray(input_features, dtype=object)[self.keep_]


def _as_2d(X: Any) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigurationError(f"Features must be a 2-D array (n_lesions, n_features), got shape {arr.shape}.")
    return arr
