"""The survival probe: a 2-year logistic probe and a penalised Cox model on all features.

* 2-year label (:func:`two_year_label`; censored before 730 days left out and counted) through a
  :class:`LinearProbe` (probabilities kept as fitted: the 2-year score is a probability, ranked by AUC).
* C-index and Kaplan-Meier risk groups from an elastic-net Cox model (scikit-survival's
  ``CoxnetSurvivalAnalysis``) on every cleaned, standardised feature. Its whole regularisation path
  is fitted once on the training subset; the penalty strength (and, through the L1 part, how many
  features enter) is chosen by Harrell's C-index on the validation split. When the validation split
  has no event (no comparable pair, C undefined), the penalty is chosen by grouped, event-stratified
  cross-validation on the training subset instead (feature filter, scaler and path refitted per fold),
  with a warning; ``penalty_selection_`` records which. Ties go to the middle of the plateau.

Why not a Cox model on a few principal components (the earlier probe): the components are chosen
without the outcome, so a prognostic signal outside the leading variance directions is lost (on a
simulated case, C 0.6 against 0.8; ``tests/test_probes.py``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.scoring.probes.linear import C_GRID, LinearProbe
from lesionbench.benchmark.scoring.probes.base import ProbeError, grouped_folds, plateau_middle, standardise

logger = logging.getLogger(__name__)


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of ``risk`` (higher = earlier event), NaN when no pair is comparable."""
    from lifelines.utils import concordance_index

    if np.sum(event) == 0:
        return float("nan")
    try:
        return float(concordance_index(time, -np.asarray(risk, float), event))
    except ZeroDivisionError:  # lifelines: "No admissable pairs in the dataset."
        return float("nan")


def _coxnet_path(Xs: np.ndarray, time: np.ndarray, event: np.ndarray, *, l1_ratio: float, n_alphas: int, alpha_min_ratio: float, alphas: np.ndarray | None = None):
    """A fitted ``CoxnetSurvivalAnalysis`` over the whole path (``alphas`` fixed, or its own), or None when it fails numerically."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.util import Surv

    y = Surv.from_arrays(event=np.asarray(event).astype(bool), time=np.asarray(time, float))
    kwargs: dict[str, Any] = {"alphas": alphas} if alphas is not None else {"n_alphas": n_alphas, "alpha_min_ratio": alpha_min_ratio}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            path = CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, fit_baseline_model=False, **kwargs).fit(Xs, y)
    except (ArithmeticError, ValueError) as exc:  # "Numerical error ... Consider increasing alpha": the caller shortens the path
        logger.debug("Coxnet path failed (%s)", exc)
        return None
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            logger.debug("Coxnet path: %s", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return path


class SurvivalProbe(BaseEstimator):
    """2-year logistic probe + elastic-net Cox model (penalty chosen on validation, grouped CV without events there).

    ``fit(X, time, event, *, X_val=None, time_val=None, event_val=None, groups=None)``;
    ``predict(X)`` -> dict with ``score`` (probability of death within 2 years) and ``risk`` (Cox linear
    predictor). ``risk_threshold_`` (median training risk) splits Kaplan-Meier risk groups.
    Fitted: ``classifier_``, ``filter_``, ``scaler_``, ``alphas_``, ``alpha_``, ``coef_``,
    ``penalty_search_`` ([(alpha, C-index), ...]), ``penalty_selection_`` ("val", "cv" or "none").
    """

    def __init__(
        self,
        *,
        c_grid: Sequence[float] = C_GRID,
        refine: bool = True,
        max_iter: int = 5000,
        l1_ratio: float = 0.5,
        n_alphas: int = 50,
        alpha_min_ratio: float = 0.01,
        cv_folds: int = 5,
        random_state: int = 0,
    ):
        self.c_grid = c_grid
        self.refine = refine
        self.max_iter = max_iter
        self.l1_ratio = l1_ratio
        self.n_alphas = n_alphas
        self.alpha_min_ratio = alpha_min_ratio
        self.cv_folds = cv_folds
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        time: np.ndarray,
        event: np.ndarray,
        *,
        X_val: np.ndarray | None = None,
        time_val: np.ndarray | None = None,
        event_val: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> SurvivalProbe:
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(X, time, event, X_val=X_val, time_val=time_val, event_val=event_val, groups=groups)

    def _fit(self, X, time, event, *, X_val, time_val, event_val, groups) -> SurvivalProbe:
        X = np.asarray(X, dtype=np.float64)
        time, event = np.asarray(time, float), np.asarray(event, float)
        groups = np.asarray(groups) if groups is not None else np.arange(len(time))
        y2 = two_year_label(time, event)
        known = np.isfinite(y2)
        self.n_censored_excluded_ = int((~known).sum())
        has_val = X_val is not None and time_val is not None and event_val is not None and len(time_val) > 0
        val_args: dict[str, Any] = {}
        if has_val:
            X_val = np.asarray(X_val, dtype=np.float64)
            time_val, event_val = np.asarray(time_val, float), np.asarray(event_val, float)
            y2v = two_year_label(time_val, event_val)
            kv = np.isfinite(y2v)
            val_args = {"X_val": X_val[kv], "y_val": y2v[kv].astype(int)}
        self.classifier_ = LinearProbe(
            metric="auc", n_classes=2, c_grid=self.c_grid, refine=self.refine, max_iter=self.max_iter, cv_folds=self.cv_folds,
            random_state=self.random_state, threshold="none",
        ).fit(X[known], y2[known].astype(int), groups=groups[known], **val_args)  # fmt: skip

        if event.sum() < 2:
            raise ProbeError(f"The training subset has {int(event.sum())} observed event(s); a Cox model needs at least 2.")
        self.filter_, self.scaler_, Xs = standardise(X)
        path = self._path(Xs, time, event)
        if path is None:
            raise ProbeError(
                f"The penalised Cox path did not fit on the {len(time)} training lesions ({int(event.sum())} events), even with "
                f"alpha_min_ratio {self.alpha_min_ratio}; try more training lesions or a larger alpha_min_ratio."
            )
        self.alphas_ = np.asarray(path.alphas_, float)
        risks = Xs @ path.coef_  # (n, n_alphas): the linear predictor along the path
        val_c = np.full(len(self.alphas_), np.nan)
        if has_val:
            Xv = self.scaler_.transform(self.filter_.transform(X_val))
            val_c = np.array([harrell_c(time_val, event_val, r) for r in (Xv @ path.coef_).T])
        if np.isfinite(val_c).any():
            scores, self.penalty_selection_ = val_c, "val"
        else:
            if has_val:
                logger.warning(
                    "The validation split has %d event(s) among %d lesions, so the C-index is undefined there; the Cox penalty is chosen "
                    "by grouped cross-validation on the training subset instead.", int(event_val.sum()), len(event_val),
                )  # fmt: skip
            scores, self.penalty_selection_ = self._cv_scores(X, time, event, groups), "cv"
        if np.isfinite(scores).any():
            # keyed by 1/alpha, so that larger keys are weaker penalties as with C
            by_key = {1.0 / a: i for i, a in enumerate(self.alphas_)}
            idx = by_key[plateau_middle({k: float(scores[i]) for k, i in by_key.items()}, "penalty")]
        else:
            # nothing to choose by: the strongest penalty that still lets a feature in (the most conservative ranking model)
            nonzero = np.flatnonzero(np.abs(path.coef_).sum(axis=0) > 0)
            idx = int(nonzero[0]) if len(nonzero) else len(self.alphas_) - 1
            self.penalty_selection_ = "none"
            logger.warning("The Cox penalty could not be chosen (C-index undefined on validation and in every fold); using alpha=%g.", self.alphas_[idx])
        self.penalty_search_ = [(float(a), float(s)) for a, s in zip(self.alphas_, scores, strict=True)]
        self.alpha_ = float(self.alphas_[idx])
        self.coef_ = np.asarray(path.coef_[:, idx], float)
        self.risk_threshold_ = float(np.median(risks[:, idx]))
        return self

    def _path(self, Xs: np.ndarray, time: np.ndarray, event: np.ndarray, alphas: np.ndarray | None = None):
        # a path that runs into numerical trouble at its weakest penalties is retried shorter
        ratio = self.alpha_min_ratio
        for _ in range(3):
            path = _coxnet_path(Xs, time, event, l1_ratio=self.l1_ratio, n_alphas=self.n_alphas, alpha_min_ratio=ratio, alphas=alphas)
            if path is not None or alphas is not None:
                return path
            ratio = min(1.0, ratio * 10.0)
        return None

    def _cv_scores(self, X: np.ndarray, time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Mean held-out C-index per alpha of the training path, over grouped folds stratified by event."""
        e = event.astype(int)
        per_fold = []
        for tr, te in grouped_folds(X, e, groups, self.cv_folds, self.random_state):
            if e[tr].sum() < 2:
                continue
            filt, scaler, xtr = standardise(X[tr])
            path = self._path(xtr, time[tr], event[tr], alphas=self.alphas_)
            if path is None:
                continue
            xte = scaler.transform(filt.transform(X[te]))
            per_fold.append([harrell_c(time[te], event[te], r) for r in (xte @ path.coef_).T])
        if not per_fold:
            return np.full(len(self.alphas_), np.nan)
        vals = np.array(per_fold, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            return np.nanmean(vals, axis=0)

    def _risk(self, X: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(self.filter_.transform(X)) @ self.coef_

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        return {"score": self.classifier_.predict_proba(X)[:, 1], "risk": self._risk(X)}

    def report(self) -> dict[str, Any]:
        return {
            **self.classifier_.report(),
            "n_censored_2y_excluded_train": self.n_censored_excluded_,
            "cox_alpha": self.alpha_,
            "cox_l1_ratio": float(self.l1_ratio),
            "cox_n_nonzero": int(np.count_nonzero(self.coef_)),
            "cox_penalty_selection": self.penalty_selection_,
            "km_risk_threshold": self.risk_threshold_,
        }


__all__ = ["SurvivalProbe", "harrell_c"]
