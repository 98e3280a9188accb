"""What every probe shares: the feature cleaning (:class:`FeatureFilter`, :func:`standardise`), grouped
folds, the tie-breaking of a hyper-parameter search (:func:`plateau_middle`), the binary operating
threshold (:func:`balanced_threshold`) and :class:`SelectedProbe`, the base of the linear and k-NN probes.

Features are cleaned on the training rows only: columns with any NaN/inf there, or constant there,
are dropped and counted (radiomics produces both); a NaN/inf left in a kept column of another row is
replaced by the training mean (i.e. 0 after scaling) and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.scoring.metrics import canonical_metric, compute_metrics
from lesionbench.benchmark.types import TaskKind

#: Fewer validation lesions than this in either class: the binary threshold comes from out-of-fold training predictions.
MIN_THRESHOLD_PER_CLASS = 10
#: Scores within this of the best count as tied.
TIE_TOL = 1e-12


class ProbeError(LesionbenchError, RuntimeError):
    """A probe that cannot be fitted on the data it was given."""


class FeatureFilter(BaseEstimator):
    """Drop features that are non-finite or constant on the training rows; impute stray non-finite values.

    Decided on the training rows only (a fresh clone per run). A training row with no finite value
    at all is a lesion whose extraction failed (radiomics fills such a row with NaN): it says nothing
    about the columns and is left out of the decision, otherwise one failed lesion would drop every
    column; it is counted in ``n_failed_rows_`` and imputed like any stray value. A column is constant
    when its range is at most ``constant_tol * max(1, |median|)`` (float noise around a large value
    would otherwise be blown up by standardisation).
    """

    def __init__(self, *, constant_tol: float = 1e-12):
        self.constant_tol = constant_tol

    def fit(self, X: np.ndarray, y: Any = None) -> FeatureFilter:
        X = np.asarray(X, dtype=np.float64)
        failed = ~np.isfinite(X).any(axis=1) if X.shape[1] else np.zeros(len(X), dtype=bool)
        rows = X[~failed]
        finite = np.isfinite(rows).all(axis=0) if len(rows) else np.zeros(X.shape[1], dtype=bool)
        const = np.ones(X.shape[1], dtype=bool)
        if len(rows):
            sub = rows[:, finite]
            scale = np.maximum(1.0, np.abs(np.median(sub, axis=0))) if sub.size else np.ones(0)
            const[finite] = np.ptp(sub, axis=0) <= self.constant_tol * scale
        self.n_features_in_ = X.shape[1]
        self.n_failed_rows_ = int(failed.sum())
        self.n_nonfinite_ = int((~finite).sum())
        self.n_constant_ = int((finite & const).sum())
        self.keep_ = finite & ~const
        if not self.keep_.any():
            raise ProbeError(
                f"All {X.shape[1]} features are non-finite or constant on the {len(X)} training lesions "
                f"({self.n_failed_rows_} of them with no finite feature at all); the encoder produced no usable "
                "feature. Check the encoder's output (e.g. with check_encoder)."
            )
        self.mean_ = rows[:, self.keep_].mean(axis=0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.transform_count(X)[0]

    def transform_count(self, X: np.ndarray) -> tuple[np.ndarray, int]:
        """The kept columns, with stray NaN/inf set to the training mean, and how many values were set."""
        X = np.asarray(X, dtype=np.float64)[:, self.keep_]
        bad = ~np.isfinite(X)
        if bad.any():
            X = np.where(bad, self.mean_[None, :], X)
        return X, int(bad.sum())

    def report(self) -> dict[str, int]:
        return {
            "n_features": int(self.n_features_in_),
            "n_features_dropped_nonfinite": self.n_nonfinite_,
            "n_features_dropped_constant": self.n_constant_,
            "n_train_rows_without_features": self.n_failed_rows_,
        }


def standardise(X_train: np.ndarray) -> tuple[FeatureFilter, StandardScaler, np.ndarray]:
    """Feature filter and scaler fitted on ``X_train``, and ``X_train`` through both."""
    filt = FeatureFilter().fit(X_train)
    Xf = filt.transform(X_train)
    scaler = StandardScaler().fit(Xf)
    return filt, scaler, scaler.transform(Xf)


def n_folds(y: np.ndarray, groups: np.ndarray, wanted: int) -> int:
    """Folds for grouped stratified CV: at most one per patient of the rarest class (at least 2)."""
    per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
    return int(max(2, min(wanted, min(per_class), len(np.unique(groups)))))


def grouped_folds(X: np.ndarray, y: np.ndarray, groups: np.ndarray, wanted: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped stratified folds; none when a class has a single patient (a 1-shot set cannot be split)."""
    if min(len(np.unique(groups[y == c])) for c in np.unique(y)) < 2:
        return []
    k = n_folds(y, groups, wanted)
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=random_state).split(X, y, groups))


def plateau_middle(scores: dict[float, float], what: str = "C") -> float:
    """The best key of ``scores`` (larger is better), ties broken towards the middle of the plateau.

    Keys are positive and ordered (C, or 1/penalty); among the keys within :data:`TIE_TOL` of the best
    score, take the longest run of consecutive keys (an undefined score breaks a run; between equally
    long runs the one with larger keys) and return the key nearest its middle in log scale (of two,
    the larger).
    """
    keys = sorted(scores)
    finite = [np.isfinite(scores[k]) for k in keys]
    if not any(finite):
        raise ProbeError(f"The selection metric is undefined for every {what} (validation data with a single class?).")
    top = max(scores[k] for k, ok in zip(keys, finite, strict=True) if ok)
    runs: list[list[float]] = []
    current: list[float] = []
    for k, ok in zip(keys, finite, strict=True):
        if ok and scores[k] >= top - TIE_TOL:
            current.append(k)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    run = max(runs, key=lambda r: (len(r), r[-1]))
    mid = (math.log(run[0]) + math.log(run[-1])) / 2.0
    return min(run, key=lambda k: (round(abs(math.log(k) - mid), 9), -k))  # rounded: two middles are equally near


def balanced_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The cut on ``p`` that maximises balanced accuracy of ``p > cut`` on labels ``y`` (0/1).

    Candidate cuts lie midway between consecutive distinct scores (and beyond both ends); ties go to
    the middle of the best cuts, so the chosen cut does not hug one lesion's score.
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    u = np.unique(p)
    cuts = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]]) if len(u) > 1 else np.array([u[0]])
    pos, neg = p[y == 1], p[y == 0]
    tpr = 1.0 - np.searchsorted(np.sort(pos), cuts, side="right") / len(pos)
    tnr = np.searchsorted(np.sort(neg), cuts, side="right") / len(neg)
    ba = (tpr + tnr) / 2.0
    best = np.flatnonzero(ba >= ba.max() - TIE_TOL)
    return float(cuts[best[len(best) // 2]])


class SelectedProbe(ClassifierMixin, BaseEstimator):
    """What the linear and k-NN probes share: the training set-up (labels, cleaned and standardised
    features), scores with ``n_classes`` columns, the selection score, the grouped folds (filter and
    scaler refitted per fold) and the data the binary operating threshold is chosen on. A subclass sets
    ``metric``, ``n_classes``, ``cv_folds``, ``random_state`` and ``threshold`` in its ``__init__``."""

    def _start(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Check and set up a fit: ``(X, y, groups, standardised X)``; sets ``n_classes_``, ``classes_``,
        ``metric_``, ``filter_`` and ``scaler_``."""
        if self.threshold not in ("balanced", "none"):
            raise ProbeError(f"threshold must be 'balanced' or 'none', got {self.threshold!r}.")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(int)
        self.n_classes_ = int(self.n_classes or (y.max() + 1))
        self.classes_ = np.arange(self.n_classes_)
        self.metric_ = canonical_metric(self.metric)
        if len(np.unique(y)) < 2:
            raise ProbeError(f"The training labels hold a single class ({np.unique(y).tolist()}); a probe needs at least two.")
        groups = np.asarray(groups) if groups is not None else np.arange(len(y))
        self.filter_, self.scaler_, Xs = standardise(X)
        return X, y, groups, Xs

    def _kind(self) -> TaskKind:
        return TaskKind.MULTICLASS if self.n_classes_ > 2 else TaskKind.BINARY

    def _full_proba(self, model: Any, Xs: np.ndarray) -> np.ndarray:
        """``model``'s probabilities with a column for every class (classes absent from its training data: 0)."""
        p = model.predict_proba(Xs)
        out = np.zeros((len(Xs), self.n_classes_))
        out[:, model.classes_.astype(int)] = p
        return out

    def _score(self, y: np.ndarray, proba: np.ndarray) -> float:
        return compute_metrics(self._kind(), y, proba, [self.metric_])[self.metric_]

    def _can_score(self, y_val: np.ndarray) -> bool:
        """Whether the selection metric is defined on these labels (a class missing there makes it NaN)."""
        return bool(np.isfinite(self._score(y_val, np.full((len(y_val), self.n_classes_), 1.0 / self.n_classes_))))

    def _cv_data(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per fold: (train rows, scaled train X, train y, scaled held-out X, held-out rows); filter and scaler fitted per fold."""
        out = []
        for tr, te in grouped_folds(X, y, groups, self.cv_folds, self.random_state):
            if len(np.unique(y[tr])) < 2:  # a tiny subset: this fold's training part holds one class, nothing to fit
                continue
            filt, scaler, xtr = standardise(X[tr])
            out.append((tr, xtr, y[tr], scaler.transform(filt.transform(X[te])), te))
        return out

    def _threshold_data(
        self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, Xv: np.ndarray | None, y_val: np.ndarray | None, fit_fold: Callable[[np.ndarray, np.ndarray], Any]
    ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """Scores and labels to choose the binary operating threshold on, and where they come from: the
        validation rows ("val") when they hold :data:`MIN_THRESHOLD_PER_CLASS` lesions of each class, else
        out-of-fold training scores ("train_oof", every training lesion scored by a model ``fit_fold``
        fitted without it); None when no fold is usable."""
        if Xv is not None and min(int((y_val == 0).sum()), int((y_val == 1).sum())) >= MIN_THRESHOLD_PER_CLASS:
            return self._full_proba(self.model_, Xv)[:, 1], y_val, "val"
        p, scored = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
        for _, xtr, ytr, xte, te in self._cv_data(X, y, groups):
            p[te] = self._full_proba(fit_fold(xtr, ytr), xte)[:, 1]
            scored[te] = True
        if len(np.unique(y[scored])) < 2:
            return None
        return p[scored], y[scored], "train_oof"
