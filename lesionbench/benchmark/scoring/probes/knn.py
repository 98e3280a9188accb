"""The k-NN probe (TumorImagingBench's protocol) for classification and for the 2-year survival label.

:class:`KNNProbe`: the linear probe's :class:`FeatureFilter` and ``StandardScaler`` fitted on the
training subset, then scikit-learn's ``KNeighborsClassifier`` with cosine distance and
distance-weighted votes (``weights="distance"``, brute force). The vote shares are the scores, so AUC
and AP are defined. ``k`` is chosen over the odd numbers 1, 3, 5, ... up to about sqrt(n_train)
(:func:`k_grid`) by the task's main metric on the run's validation rows, or by grouped stratified
cross-validation on the training subset when there are none (filter and scaler refitted per fold);
ties go to the middle of the plateau, as for C. Test rows are never seen by ``fit``.

Binary: the operating threshold for balanced accuracy is chosen as for the linear probe (the
BA-maximising cut on validation, on out-of-fold training scores when validation has fewer than
:data:`MIN_THRESHOLD_PER_CLASS` lesions of a class) and folded into the scores by a monotone map
(``logit(p) - logit(t)``, clipped away from 0 and 1), so ``score > 0.5`` is the probe's call and the
ranking (AUC, AP) is the vote share's.

:class:`KNNSurvivalProbe`: the 2-year label (censored before 730 days left out and counted) through a
:class:`KNNProbe`; its P(death within 2 years) is both the ``score`` (2-year AUC) and the ``risk``
(C-index, Kaplan-Meier groups split at the median leave-one-out risk of the training lesions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import KNeighborsClassifier

from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.scoring.probes.base import ProbeError, SelectedProbe, balanced_threshold, plateau_middle

#: Scores are kept this far from 0 and 1 when the threshold is folded in (logit of 0 is -inf).
_EPS = 1e-6


def k_grid(n_train: int, max_k: int | None = None) -> tuple[int, ...]:
    """Odd k from 1 up to about sqrt(n_train) (at least 1, at most n_train and ``max_k``)."""
    top = max(1, int(round(math.sqrt(max(n_train, 1)))))
    top = min(top, max(n_train, 1), max_k or top)
    return tuple(range(1, top + 1, 2))


def fold_threshold(p: np.ndarray, t: float) -> np.ndarray:
    """Monotone map of probabilities ``p`` with ``fold_threshold(t) == 0.5``: ``sigmoid(logit(p) - logit(t))``."""
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    t = float(np.clip(t, _EPS, 1 - _EPS))
    z = np.log(p / (1 - p)) - math.log(t / (1 - t))
    return 1.0 / (1.0 + np.exp(-z))


class KNNProbe(SelectedProbe):
    """Standardisation + cosine, distance-weighted k-NN with k chosen on validation data (or grouped CV).

    ``fit(X, y, *, X_val=None, y_val=None, groups=None)`` like :class:`LinearProbe`; ``predict_proba``
    has ``n_classes`` columns. Fitted: ``filter_``, ``scaler_``, ``model_``, ``k_``, ``search_``
    ([(k, score), ...]), ``selection_`` ("val" or "cv"), ``threshold_``, ``threshold_selection_``.
    """

    def __init__(self, *, metric: str = "auc", n_classes: int | None = None, max_k: int | None = None, cv_folds: int = 5, random_state: int = 0, threshold: str = "balanced"):
        self.metric = metric
        self.n_classes = n_classes
        self.max_k = max_k
        self.cv_folds = cv_folds
        self.random_state = random_state
        self.threshold = threshold

    @staticmethod
    def _knn(Xs: np.ndarray, y: np.ndarray, k: int) -> KNeighborsClassifier:
        return KNeighborsClassifier(n_neighbors=min(k, len(y)), metric="cosine", weights="distance", algorithm="brute").fit(Xs, y)

    def _search(self, evaluate: Callable[[int], float]) -> int:
        scores = {float(k): evaluate(k) for k in self.grid_}
        self.search_ = [(int(k), float(s)) for k, s in sorted(scores.items())]
        return int(plateau_middle(scores, "k"))

    def fit(self, X: np.ndarray, y: np.ndarray, *, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None, groups: np.ndarray | None = None) -> KNNProbe:
        X, y, groups, Xs = self._start(X, y, groups)
        self.grid_ = k_grid(len(y), self.max_k)
        Xv = None
        if X_val is not None and y_val is not None and len(y_val) > 0:
            y_val = np.asarray(y_val).astype(int)
            Xv = self.scaler_.transform(self.filter_.transform(X_val))
            if not self._can_score(y_val):
                Xv = None  # a class is missing there: the selection metric is undefined
        if Xv is not None:
            self.selection_ = "val"
            self.k_ = self._search(lambda k: self._score(y_val, self._full_proba(self._knn(Xs, y, k), Xv)))
        else:
            self.selection_ = "cv"
            folds = self._cv_data(X, y, groups)

            def cv_score(k: int) -> float:
                vals = np.array([self._score(y[te], self._full_proba(self._knn(xtr, ytr, k), xte)) for _, xtr, ytr, xte, te in folds], dtype=float)
                return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

            try:
                self.k_ = self._search(cv_score) if folds else self._no_search()
            except ProbeError:  # no fold could score the metric
                self.k_ = self._no_search()
        self.model_ = self._knn(Xs, y, self.k_)
        self._set_threshold(X, y, groups, Xv, y_val if Xv is not None else None)
        return self

    def _no_search(self) -> int:
        """Too few training patients for folds (a handful of shots): the smallest k, nothing to choose by."""
        self.search_, self.selection_ = [], "none"
        return int(self.grid_[0])

    def _set_threshold(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, Xv: np.ndarray | None, y_val: np.ndarray | None) -> None:
        self.threshold_, self.threshold_selection_ = 0.5, "none"
        if self.threshold == "none" or self.n_classes_ != 2:
            return
        data = self._threshold_data(X, y, groups, Xv, y_val, lambda xtr, ytr: self._knn(xtr, ytr, self.k_))
        if data is None:
            return  # no usable folds (a handful of shots): the vote share's own 0.5
        p, truth, self.threshold_selection_ = data
        self.threshold_ = float(np.clip(balanced_threshold(truth, p), _EPS, 1 - _EPS))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self._full_proba(self.model_, self.scaler_.transform(self.filter_.transform(X)))
        if self.n_classes_ == 2 and self.threshold_selection_ != "none":
            s = fold_threshold(p[:, 1], self.threshold_)
            p = np.column_stack([1 - s, s])
        return p

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def report(self) -> dict[str, Any]:
        """Fitted choices worth logging (chosen k, how it was chosen, threshold, feature cleaning)."""
        return {
            "k": int(self.k_),
            "k_selection": self.selection_,
            "k_grid": ",".join(str(k) for k in self.grid_),
            "selection_metric": self.metric_,
            "threshold": float(self.threshold_),
            "threshold_selection": self.threshold_selection_,
            **self.filter_.report(),
        }


class KNNSurvivalProbe(BaseEstimator):
    """The 2-year label through a :class:`KNNProbe`; ``predict(X)`` -> ``score`` = ``risk`` = P(death within 2 years)."""

    def __init__(self, *, max_k: int | None = None, cv_folds: int = 5, random_state: int = 0):
        self.max_k = max_k
        self.cv_folds = cv_folds
        self.random_state = random_state

    def fit(self, X, time, event, *, X_val=None, time_val=None, event_val=None, groups=None) -> KNNSurvivalProbe:
        X = np.asarray(X, dtype=np.float64)
        y2 = two_year_label(np.asarray(time, float), np.asarray(event, float))
        known = np.isfinite(y2)
        self.n_censored_excluded_ = int((~known).sum())
        groups = np.asarray(groups) if groups is not None else np.arange(len(y2))
        val_args: dict[str, Any] = {}
        if X_val is not None and time_val is not None and event_val is not None and len(time_val):
            y2v = two_year_label(np.asarray(time_val, float), np.asarray(event_val, float))
            kv = np.isfinite(y2v)
            val_args = {"X_val": np.asarray(X_val, dtype=np.float64)[kv], "y_val": y2v[kv].astype(int)}
        self.classifier_ = KNNProbe(metric="auc", n_classes=2, max_k=self.max_k, cv_folds=self.cv_folds, random_state=self.random_state, threshold="none")
        self.classifier_.fit(X[known], y2[known].astype(int), groups=groups[known], **val_args)
        # Kaplan-Meier split at the median training risk, each training lesion scored without its own vote
        c = self.classifier_
        Xs = c.scaler_.transform(c.filter_.transform(X[known]))
        if len(Xs) > 1:
            k = min(c.k_, len(Xs) - 1)
            dist, idx = c.model_.kneighbors(Xs, n_neighbors=k + 1)
            dist, idx = dist[:, 1:], idx[:, 1:]  # drop each lesion itself (first, at distance 0)
            w = 1.0 / np.maximum(dist, 1e-12)
            loo = (w * y2[known].astype(int)[idx]).sum(axis=1) / w.sum(axis=1)
            self.risk_threshold_ = float(np.median(loo))
        else:
            self.risk_threshold_ = 0.5
        self.filter_ = c.filter_
        return self

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        p = self.classifier_.predict_proba(np.asarray(X, dtype=np.float64))[:, 1]
        return {"score": p, "risk": p}

    def report(self) -> dict[str, Any]:
        return {**self.classifier_.report(), "n_censored_2y_excluded_train": self.n_censored_excluded_, "km_risk_threshold": self.risk_threshold_}


__all__ = ["KNNProbe", "KNNSurvivalProbe", "fold_threshold", "k_grid"]
