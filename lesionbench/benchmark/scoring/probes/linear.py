"""The linear probe (the FMCIB protocol); the parts every probe shares are in :mod:`~lesionbench.benchmark.scoring.probes.base`.

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
scores (metrics, leaderboard, compare) applies the same rule. Multiclass: each class probability is
divided by the class's share of the training labels (``- log(share)`` folded into the intercepts),
so the argmax that balanced accuracy takes does not favour the large classes; again no test labels.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from lesionbench.benchmark.scoring.probes.base import SelectedProbe, balanced_threshold, plateau_middle

logger = logging.getLogger(__name__)

#: Every decade of the paper's range 1e-6 .. 1e3.
C_GRID: tuple[float, ...] = tuple(float(10.0**k) for k in range(-6, 4))
#: Refinement around the best decade, in decades (quarter-decade resolution).
C_REFINE: tuple[float, ...] = (-0.75, -0.5, -0.25, 0.25, 0.5, 0.75)
#: C when the selection metric is undefined for every C (scikit-learn's default).
DEFAULT_C = 1.0


class LinearProbe(SelectedProbe):
    """Standardisation + logistic regression with C chosen by ``metric`` on validation data (or grouped CV).

    ``fit(X, y, *, X_val=None, y_val=None, groups=None)``; ``groups`` (patient ids) are used only for
    the cross-validation fallback and the out-of-fold threshold. ``predict_proba`` always has
    ``n_classes`` columns. ``threshold``: ``"balanced"`` (binary: choose the operating threshold, see
    the module docstring) or ``"none"`` (keep the probabilities as fitted).
    Fitted: ``filter_``, ``scaler_``, ``model_``, ``C_``, ``search_`` ([(C, score), ...]), ``selection_``
    ("val", "cv", or "default" when the selection metric is undefined for every C), ``threshold_`` and ``threshold_selection_`` ("val", "train_oof", "class_shares" (multiclass) or "none"),
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
        with warnings.catch_warnings():  # said once per probe (fit), not once per C
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Xs, y)
        # counted from the fit itself, not from recorded warnings: warnings.catch_warnings is process-wide before
        # Python 3.14, so probes fitted on threads (a multi-threaded Dask worker) would count each other's warnings
        if int(np.max(model.n_iter_)) >= self.max_iter:
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
                # info: a sweep says it once for all its runs (c_selection in the run's params)
                logger.info("The validation split cannot score %s (a class is missing there); choosing C by cross-validation instead.", self.metric_)
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
        if self.default_c_:  # info: a sweep says it once for all its runs
            logger.info(
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
        if self.threshold == "none":
            return
        if self.n_classes_ > 2:
            self._divide_by_class_shares(y)
            return
        data = self._threshold_data(X, y, groups, Xv, y_val, lambda xtr, ytr: self._fit_one(xtr, ytr, self.C_, None))
        if data is None:
            logger.warning("No usable folds to choose the operating threshold on (%d training lesions); it stays at 0.5.", len(y))
            return
        p, truth, self.threshold_selection_ = data
        t = float(np.clip(balanced_threshold(truth, p), 1e-12, 1 - 1e-12))
        self.threshold_ = t
        self.model_.intercept_ = self.model_.intercept_ - math.log(t / (1.0 - t))

    def _divide_by_class_shares(self, y: np.ndarray) -> None:
        """Multiclass decision rule for balanced accuracy: divide each class probability by the class's
        share of the training labels (renormalised), folded into the intercepts as ``- log(share)``.

        The argmax of an unweighted logistic regression favours the large classes, while balanced
        accuracy weighs every class alike; dividing by the prior is the Bayes rule for equal class
        weights, and it needs no test (or validation) labels.
        """
        classes = self.model_.classes_.astype(int)
        shares = np.bincount(np.asarray(y).astype(int), minlength=self.n_classes_)[classes] / len(y)
        log_shares = np.log(shares)
        if len(classes) == 2:  # a binary model inside a multiclass task (one training class): one logit
            self.model_.intercept_ = self.model_.intercept_ - (log_shares[1] - log_shares[0])
        else:
            self.model_.intercept_ = self.model_.intercept_ - log_shares
        self.threshold_selection_ = "class_shares"

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


__all__ = ["C_GRID", "C_REFINE", "DEFAULT_C", "LinearProbe"]
