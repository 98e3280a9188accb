"""The linear probe (the FMCIB protocol) and the feature cleaning every probe shares.

:class:`LinearProbe`: ``FeatureFilter`` + ``StandardScaler`` fitted on the training subset, then
``LogisticRegression`` (lbfgs; multinomial when there are more than two classes), C chosen by the
task's main metric on the validation split, or by grouped stratified cross-validation on the
training subset when the task has no usable validation split (feature filter and scaler refitted
inside every fold, so a held-out fold never informs them).

C search. The paper tuned C over the log range 1e-6 .. 1e3 with 100 Optuna trials. We search the
same range deterministically, coarse to fine: every decade (10 fits), then quarter-decade steps
(6 more fits) on both sides of the best decade. Fits run along increasing C with warm starts from
the nearest fitted C. Ties: a rank metric (AUC) is flat over the small-C end, where every C gives
the same ranking and the probabilities shrink to the prior; the smallest tied C would sit at the
edge of that plateau. The chosen C is the middle (in log C) of the longest run of tied grid points,
the larger of two middles.

Operating threshold (binary). Balanced accuracy thresholds the probability; at 0.5 a probe whose
probabilities sit near a 25% prior calls every lesion negative (BA 0.500 next to an AUC of 0.70).
The threshold is chosen without test labels: the cut that maximises balanced accuracy on the
validation split (the middle of the best cuts), or on out-of-fold training predictions when the
validation split has fewer than :data:`MIN_THRESHOLD_PER_CLASS` lesions of a class. It is folded
into the fitted intercept (``logit(p) - logit(t)``), so ``predict_proba(X)[:, 1] > 0.5`` exactly when
the raw probability exceeds ``t``: rankings (AUC, AP) are unchanged and every consumer of the saved
scores (metrics, leaderboard, compare) applies the same rule. Multiclass keeps argmax.

Features are cleaned on the training rows only: columns with any NaN/inf there, or constant there,
are dropped and counted (radiomics produces both); a NaN/inf left in a kept column of another row is
replaced by the training mean (i.e. 0 after scaling) and counted.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.metrics import canonical_metric, compute_metrics
from lesionbench.benchmark.types import TaskKind

logger = logging.getLogger(__name__)

#: Every decade of the paper's range 1e-6 .. 1e3.
C_GRID: tuple[float, ...] = tuple(float(10.0**k) for k in range(-6, 4))
#: Refinement around the best decade, in decades (quarter-decade resolution).
C_REFINE: tuple[float, ...] = (-0.75, -0.5, -0.25, 0.25, 0.5, 0.75)
#: C when the selection metric is undefined for every C (scikit-learn's default).
DEFAULT_C = 1.0
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


class LinearProbe(SelectedProbe):
    """Standardisation + logistic regression with C chosen by ``metric`` on validation data (or grouped CV).

    ``fit(X, y, *, X_val=None, y_val=None, groups=None)``; ``groups`` (patient ids) are used only for
    the cross-validation fallback and the out-of-fold threshold. ``predict_proba`` always has
    ``n_classes`` columns. ``threshold``: ``"balanced"`` (binary: choose the operating threshold, see
    the module docstring) or ``"none"`` (keep the probabilities as fitted).
    Fitted: ``filter_``, ``scaler_``, ``model_``, ``C_``, ``search_`` ([(C, score), ...]), ``selection_``
    ("val", "cv", or "default" when the selection metric is undefined for every C), ``threshold_`` and ``threshold_selection_`` ("val", "train_oof" or "none"),
    ``n_not_converged_``.
    """

    def __init__(
        self,
        *,
        metric: str = "auc",
        n_classes: int | None = None,
        c_grid: Sequence[float] = C_GRID,
        refine: bool = True,
        max_iter: int = 5000,
        tol: float = 1e-4,
        cv_folds: int = 5,
        random_state: int = 0,
        blas_threads: int | None = 1,
        threshold: str = "balanced",
    ):
        self.metric = metric
        self.n_classes = n_classes
        self.c_grid = c_grid
        self.refine = refine
        self.max_iter = max_iter
        self.tol = tol
        self.cv_folds = cv_folds
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.threshold = threshold

    # -- helpers
    def _fit_one(self, Xs: np.ndarray, y: np.ndarray, C: float, init: LogisticRegression | None) -> LogisticRegression:
        model = LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol, warm_start=init is not None)
        if init is not None and len(init.classes_) == len(np.unique(y)):
            model.coef_ = init.coef_.copy()
            model.intercept_ = init.intercept_.copy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(Xs, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            self.n_not_converged_ += 1
            logger.debug("logistic regression did not converge in %d iterations at C=%g", self.max_iter, C)
        return model

    def _search(self, evaluate: Callable[[float, float | None], float]) -> float:
        """Coarse-to-fine search; ``evaluate(C, init_C)`` returns the selection score of C."""
        scores: dict[float, float] = {}
        grid = sorted(float(c) for c in self.c_grid)
        prev = None
        for c in grid:
            scores[c] = evaluate(c, prev)
            prev = c
        if not any(np.isfinite(v) for v in scores.values()):
            # nothing to choose on (e.g. a 10% subset of an 8-class task: no fold or validation subset holds
            # every class): the library's default C, said in the run's params, never a guess from test labels
            self.search_ = sorted(scores.items())
            self.default_c_ = True
            return DEFAULT_C
        best = plateau_middle(scores)
        if self.refine and len(grid) > 1:
            lo, hi = grid[0], grid[-1]
            extra = sorted(c for c in (best * 10.0**d for d in C_REFINE) if lo <= c <= hi and c not in scores)
            for c in extra:
                below = [g for g in scores if g < c]
                scores[c] = evaluate(c, max(below) if below else None)
            best = plateau_middle(scores)
        self.search_ = sorted(scores.items())
        return best

    # -- sklearn API
    def fit(self, X: np.ndarray, y: np.ndarray, *, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None, groups: np.ndarray | None = None) -> LinearProbe:
        # lbfgs makes many small BLAS calls; thread start-up and contention outweigh the gain
        # (measured on 2 busy cores: 1,800 x 4,096 x 8 classes, 8x faster on one thread). None = library default.
        with threadpool_limits(limits=self.blas_threads, user_api="blas"):
            return self._fit(X, y, X_val=X_val, y_val=y_val, groups=groups)

    def _fit(self, X: np.ndarray, y: np.ndarray, *, X_val: np.ndarray | None, y_val: np.ndarray | None, groups: np.ndarray | None) -> LinearProbe:
        self.n_not_converged_ = 0
        self.default_c_ = False
        X, y, groups, Xs = self._start(X, y, groups)
        use_val = X_val is not None and y_val is not None and len(y_val) > 0
        self.n_imputed_ = 0
        if use_val:
            y_val = np.asarray(y_val).astype(int)
            Xv_kept, self.n_imputed_ = self.filter_.transform_count(X_val)
            Xv = self.scaler_.transform(Xv_kept)
            if not self._can_score(y_val):
                logger.warning("The validation split cannot score %s (a class is missing there); choosing C by cross-validation instead.", self.metric_)
                use_val = False
                self.n_imputed_ = 0
        if use_val:
            self.selection_ = "val"
            fitted: dict[float, LogisticRegression] = {}

            def evaluate(c: float, init_c: float | None) -> float:
                fitted[c] = self._fit_one(Xs, y, c, fitted.get(init_c) if init_c is not None else None)
                return self._score(y_val, self._full_proba(fitted[c], Xv))

            self.C_ = self._search(evaluate)
            self.model_ = fitted[self.C_] if self.C_ in fitted else self._fit_one(Xs, y, self.C_, None)
        else:
            self.selection_ = "cv"
            fold_data = self._cv_data(X, y, groups)
            fitted_cv: dict[float, list[LogisticRegression]] = {}

            def evaluate(c: float, init_c: float | None) -> float:
                models, vals = [], []
                for i, (_, xtr, ytr, xte, te) in enumerate(fold_data):
                    init = fitted_cv[init_c][i] if init_c is not None else None
                    m = self._fit_one(xtr, ytr, c, init)
                    models.append(m)
                    vals.append(self._score(y[te], self._full_proba(m, xte)))
                fitted_cv[c] = models
                vals = np.array(vals, dtype=float)
                return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

            self.C_ = self._search(evaluate)
            self.model_ = self._fit_one(Xs, y, self.C_, None)
        if self.default_c_:
            logger.warning(
                "%s is undefined for every C on the %s data (%d training lesions, %d classes): C = %g (the default) is used; "
                "with more labels, or --val full, C is chosen.", self.metric_, "validation" if use_val else "cross-validation",
                len(y), len(np.unique(y)), DEFAULT_C,
            )  # fmt: skip
            self.selection_ = "default"
        self._set_threshold(X, y, groups, Xv if use_val else None, y_val if use_val else None)
        if self.n_not_converged_:
            logger.warning("%d logistic-regression fit(s) did not converge in max_iter=%d.", self.n_not_converged_, self.max_iter)
        return self

    def _set_threshold(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, Xv: np.ndarray | None, y_val: np.ndarray | None) -> None:
        """Choose the binary operating threshold on validation (or out-of-fold training) predictions; fold it into the intercept."""
        self.threshold_, self.threshold_selection_ = 0.5, "none"
        if self.threshold == "none" or self.n_classes_ != 2:
            return
        data = self._threshold_data(X, y, groups, Xv, y_val, lambda xtr, ytr: self._fit_one(xtr, ytr, self.C_, None))
        if data is None:
            logger.warning("No usable folds to choose the operating threshold on (%d training lesions); it stays at 0.5.", len(y))
            return
        p, truth, self.threshold_selection_ = data
        t = float(np.clip(balanced_threshold(truth, p), 1e-12, 1 - 1e-12))
        self.threshold_ = t
        self.model_.intercept_ = self.model_.intercept_ - math.log(t / (1.0 - t))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._full_proba(self.model_, self.scaler_.transform(self.filter_.transform(X)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def report(self) -> dict[str, Any]:
        """Fitted choices worth logging (chosen C, how it was chosen, threshold, feature cleaning)."""
        return {
            "C": float(self.C_),
            "c_selection": self.selection_,
            "selection_metric": self.metric_,
            "n_c_evaluated": len(self.search_),
            "n_not_converged": int(self.n_not_converged_),
            "n_values_imputed": int(getattr(self, "n_imputed_", 0)),
            "threshold": float(self.threshold_),
            "threshold_selection": self.threshold_selection_,
            **self.filter_.report(),
        }


__all__ = ["C_GRID", "C_REFINE", "FeatureFilter", "LinearProbe", "ProbeError", "SelectedProbe", "balanced_threshold", "plateau_middle"]
