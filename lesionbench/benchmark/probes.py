"""Probes: what the benchmark fits on frozen features, scikit-learn shaped (``clone()`` per subset).

* :class:`LinearProbe` - the FMCIB protocol: ``StandardScaler`` fitted on the training subset, then
  ``LogisticRegression`` (lbfgs; multinomial when there are more than two classes), C chosen by the
  task's main metric on the validation split, or by grouped stratified cross-validation on the
  training subset when the task has no validation split.
* :class:`SurvivalProbe` - the 2-year label (:func:`two_year_label`; censored <= 730 days left out and
  counted) through a :class:`LinearProbe`, plus a penalised Cox model (lifelines) on standardised
  PCA components for the C-index and the Kaplan-Meier risk groups.

C search. The paper tuned C over the log range 1e-6 .. 1e3 with 100 Optuna trials. We search the
same range deterministically, coarse to fine: every decade (10 fits), then quarter-decade steps
(6 more fits) on both sides of the best decade, so the final resolution is a quarter decade over the
full range. Fits run along increasing C with warm starts from the nearest fitted C (lbfgs restarts
from the previous solution), which is what keeps the full sweep cheap. Ties in the selection
metric go to the smaller C (the more regularised model).

Features are cleaned on the training subset only: columns with any NaN/inf there, or constant
there, are dropped and counted (radiomics produces both); a NaN/inf left in a kept column of a
validation or test row is replaced by the training mean (i.e. 0 after scaling) and counted.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import LesionbenchError, UnknownNameError, did_you_mean
from lesionbench.benchmark.metrics import canonical_metric, compute_metrics
from lesionbench.benchmark.types import TaskKind

logger = logging.getLogger(__name__)

#: Every decade of the paper's range 1e-6 .. 1e3.
C_GRID: tuple[float, ...] = tuple(float(10.0**k) for k in range(-6, 4))
#: Refinement around the best decade, in decades (quarter-decade resolution).
C_REFINE: tuple[float, ...] = (-0.75, -0.5, -0.25, 0.25, 0.5, 0.75)
#: Cox penalizers tried (lifelines ``penalizer``, L2).
PENALIZER_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)


class ProbeError(LesionbenchError, RuntimeError):
    """A probe that cannot be fitted on the data it was given."""


class FeatureFilter(BaseEstimator):
    """Drop features that are non-finite or constant on the training rows; impute stray non-finite values.

    Decided on the training subset only (a fresh clone per run). A training row with no finite value
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


def _n_folds(y: np.ndarray, groups: np.ndarray, wanted: int) -> int:
    per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
    return int(max(2, min(wanted, min(per_class), len(np.unique(groups)))))


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Standardisation + logistic regression with C chosen by ``metric`` on validation data (or grouped CV).

    ``fit(X, y, *, X_val=None, y_val=None, groups=None)``; ``groups`` (patient ids) are used only for
    the cross-validation fallback. ``predict_proba`` always has ``n_classes`` columns.
    Fitted: ``filter_``, ``scaler_``, ``model_``, ``C_``, ``search_`` ([(C, score), ...]), ``selection_``
    ("val" or "cv"), ``n_not_converged_``.
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

    # -- helpers
    def _kind(self) -> TaskKind:
        return TaskKind.MULTICLASS if self.n_classes_ > 2 else TaskKind.BINARY

    def _full_proba(self, model: LogisticRegression, Xs: np.ndarray) -> np.ndarray:
        p = model.predict_proba(Xs)
        out = np.zeros((len(Xs), self.n_classes_))
        out[:, model.classes_.astype(int)] = p
        return out

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

    def _score(self, y: np.ndarray, proba: np.ndarray) -> float:
        return compute_metrics(self._kind(), y, proba, [self.metric_])[self.metric_]

    def _search(self, evaluate) -> float:
        """Coarse-to-fine search; ``evaluate(C, init_C)`` returns the selection score of C."""
        scores: dict[float, float] = {}
        grid = sorted(float(c) for c in self.c_grid)
        prev = None
        for c in grid:
            scores[c] = evaluate(c, prev)
            prev = c
        best = _best(scores)
        if self.refine and len(grid) > 1:
            lo, hi = grid[0], grid[-1]
            extra = sorted(c for c in (best * 10.0**d for d in C_REFINE) if lo <= c <= hi and c not in scores)
            for c in extra:
                below = [g for g in scores if g < c]
                scores[c] = evaluate(c, max(below) if below else None)
            best = _best(scores)
        self.search_ = sorted(scores.items())
        return best

    # -- sklearn API
    def fit(self, X: np.ndarray, y: np.ndarray, *, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None, groups: np.ndarray | None = None) -> LinearProbe:
        # lbfgs makes many small BLAS calls; thread start-up and contention outweigh the gain
        # (measured on 2 busy cores: 1,800 x 4,096 x 8 classes, 8x faster on one thread). None = library default.
        with threadpool_limits(limits=self.blas_threads, user_api="blas"):
            return self._fit(X, y, X_val=X_val, y_val=y_val, groups=groups)

    def _fit(self, X: np.ndarray, y: np.ndarray, *, X_val: np.ndarray | None, y_val: np.ndarray | None, groups: np.ndarray | None) -> LinearProbe:
        y = np.asarray(y).astype(int)
        self.n_classes_ = int(self.n_classes or (y.max() + 1))
        self.classes_ = np.arange(self.n_classes_)
        self.metric_ = canonical_metric(self.metric)
        self.n_not_converged_ = 0
        if len(np.unique(y)) < 2:
            raise ProbeError(f"The training labels hold a single class ({np.unique(y).tolist()}); a probe needs at least two.")
        self.filter_ = FeatureFilter().fit(X)
        Xf = self.filter_.transform(X)
        self.scaler_ = StandardScaler().fit(Xf)
        Xs = self.scaler_.transform(Xf)
        use_val = X_val is not None and y_val is not None and len(y_val) > 0
        if use_val:
            y_val = np.asarray(y_val).astype(int)
            Xv_kept, self.n_imputed_ = self.filter_.transform_count(X_val)
            Xv = self.scaler_.transform(Xv_kept)
            if not np.isfinite(self._score(y_val, np.full((len(y_val), self.n_classes_), 1.0 / self.n_classes_))):
                logger.warning("The validation split cannot score %s (a class is missing there); choosing C by cross-validation instead.", self.metric_)
                use_val = False
        if use_val:
            self.selection_ = "val"
            fitted: dict[float, LogisticRegression] = {}

            def evaluate(c: float, init_c: float | None) -> float:
                fitted[c] = self._fit_one(Xs, y, c, fitted.get(init_c) if init_c is not None else None)
                return self._score(y_val, self._full_proba(fitted[c], Xv))

            self.C_ = self._search(evaluate)
            self.model_ = fitted[self.C_]
        else:
            self.selection_ = "cv"
            self.n_imputed_ = 0
            groups = np.asarray(groups) if groups is not None else np.arange(len(y))
            k = _n_folds(y, groups, self.cv_folds)
            folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=self.random_state).split(Xs, y, groups))
            # scaling is refitted inside each fold so the held-out fold never informs it
            fold_data = []
            for tr, te in folds:
                sc = StandardScaler().fit(Xf[tr])
                fold_data.append((sc.transform(Xf[tr]), y[tr], sc.transform(Xf[te]), y[te]))
            fitted_cv: dict[float, list[LogisticRegression]] = {}

            def evaluate(c: float, init_c: float | None) -> float:
                models, vals = [], []
                for i, (xtr, ytr, xte, yte) in enumerate(fold_data):
                    init = fitted_cv[init_c][i] if init_c is not None else None
                    m = self._fit_one(xtr, ytr, c, init)
                    models.append(m)
                    vals.append(self._score(yte, self._full_proba(m, xte)))
                fitted_cv[c] = models
                vals = np.array(vals, dtype=float)
                return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

            self.C_ = self._search(evaluate)
            self.model_ = self._fit_one(Xs, y, self.C_, None)
        if self.n_not_converged_:
            logger.warning("%d logistic-regression fit(s) did not converge in max_iter=%d.", self.n_not_converged_, self.max_iter)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._full_proba(self.model_, self.scaler_.transform(self.filter_.transform(X)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def report(self) -> dict[str, Any]:
        """Fitted choices worth logging (chosen C, how it was chosen, feature cleaning)."""
        return {
            "C": float(self.C_),
            "c_selection": self.selection_,
            "selection_metric": self.metric_,
            "n_c_evaluated": len(self.search_),
            "n_not_converged": int(self.n_not_converged_),
            "n_values_imputed": int(getattr(self, "n_imputed_", 0)),
            **self.filter_.report(),
        }


def _best(scores: dict[float, float]) -> float:
    finite = {c: s for c, s in scores.items() if np.isfinite(s)}
    if not finite:
        raise ProbeError("The selection metric is undefined for every C (validation data with a single class?).")
    top = max(finite.values())
    return min(c for c, s in finite.items() if s >= top - 1e-12)


class SurvivalProbe(BaseEstimator):
    """2-year logistic probe + penalised Cox model on standardised PCA components.

    ``fit(X, time, event, *, X_val=None, time_val=None, event_val=None, groups=None)``;
    ``predict(X)`` -> dict with ``score`` (probability of death within 2 years) and ``risk`` (Cox log
    partial hazard). The Cox model uses one principal component per ``events_per_component`` training
    events (at least 1, at most ``max_components``), a rule of thumb against overfitting small subsets;
    its penalizer is chosen by C-index on the validation split (grouped CV without one).
    ``risk_threshold_`` (median training risk) splits Kaplan-Meier risk groups.
    """

    def __init__(
        self,
        *,
        c_grid: Sequence[float] = C_GRID,
        refine: bool = True,
        max_iter: int = 5000,
        penalizer_grid: Sequence[float] = PENALIZER_GRID,
        max_components: int = 10,
        events_per_component: int = 10,
        cv_folds: int = 5,
        random_state: int = 0,
    ):
        self.c_grid = c_grid
        self.refine = refine
        self.max_iter = max_iter
        self.penalizer_grid = penalizer_grid
        self.max_components = max_components
        self.events_per_component = events_per_component
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
        X = np.asarray(X)
        time, event = np.asarray(time, float), np.asarray(event, float)
        groups = np.asarray(groups) if groups is not None else np.arange(len(time))
        y2 = two_year_label(time, event)
        known = np.isfinite(y2)
        self.n_censored_excluded_ = int((~known).sum())
        has_val = X_val is not None and time_val is not None and event_val is not None and len(time_val) > 0
        val_args: dict[str, Any] = {}
        if has_val:
            y2v = two_year_label(np.asarray(time_val, float), np.asarray(event_val, float))
            kv = np.isfinite(y2v)
            val_args = {"X_val": np.asarray(X_val)[kv], "y_val": y2v[kv].astype(int)}
        self.classifier_ = LinearProbe(
            metric="auc", n_classes=2, c_grid=self.c_grid, refine=self.refine, max_iter=self.max_iter, cv_folds=self.cv_folds, random_state=self.random_state
        ).fit(X[known], y2[known].astype(int), groups=groups[known], **val_args)

        if event.sum() < 2:
            raise ProbeError(f"The training subset has {int(event.sum())} observed event(s); a Cox model needs at least 2.")
        self.filter_ = FeatureFilter().fit(X)
        Xf = self.filter_.transform(X)
        n_comp = int(np.clip(event.sum() // self.events_per_component, 1, self.max_components))
        n_comp = int(min(n_comp, Xf.shape[1], len(Xf) - 1))
        self.reducer_ = _Reducer(n_comp, self.random_state).fit(Xf)
        Z = self.reducer_.transform(Xf)
        if has_val:
            Zv = self.reducer_.transform(self.filter_.transform(np.asarray(X_val)))
            tv, ev = np.asarray(time_val, float), np.asarray(event_val, float)
            scores = {p: _cindex_or_nan(_fit_cox(Z, time, event, p), Zv, tv, ev) for p in self.penalizer_grid}
            self.penalizer_selection_ = "val"
        else:
            k = _n_folds(event.astype(int), groups, self.cv_folds)
            folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=self.random_state).split(Xf, event.astype(int), groups))
            scores = {}
            for p in self.penalizer_grid:
                vals = []
                for tr, te in folds:
                    red = _Reducer(n_comp, self.random_state).fit(Xf[tr])
                    vals.append(_cindex_or_nan(_fit_cox(red.transform(Xf[tr]), time[tr], event[tr], p), red.transform(Xf[te]), time[te], event[te]))
                vals = np.array(vals, dtype=float)
                scores[p] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            self.penalizer_selection_ = "cv"
        finite = {p: s for p, s in scores.items() if np.isfinite(s)}
        # ties and undefined scores go to the strongest penalty
        self.penalizer_ = max(self.penalizer_grid) if not finite else max(p for p, s in finite.items() if s >= max(finite.values()) - 1e-12)
        self.penalizer_search_ = sorted(scores.items())
        self.cox_ = _fit_cox(Z, time, event, self.penalizer_)
        if self.cox_ is None:
            raise ProbeError(f"The Cox model did not converge on the training subset even with penalizer {self.penalizer_}; try more training lesions.")
        self.n_components_ = n_comp
        self.risk_threshold_ = float(np.median(self._risk(Z)))
        return self

    def _risk(self, Z: np.ndarray) -> np.ndarray:
        import pandas as pd

        df = pd.DataFrame(Z, columns=[f"pc{i}" for i in range(Z.shape[1])])
        return np.asarray(self.cox_.predict_log_partial_hazard(df), dtype=float)

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X)
        risk = self._risk(self.reducer_.transform(self.filter_.transform(X)))
        return {"score": self.classifier_.predict_proba(X)[:, 1], "risk": risk}

    def report(self) -> dict[str, Any]:
        return {
            **self.classifier_.report(),
            "n_censored_2y_excluded_train": self.n_censored_excluded_,
            "cox_penalizer": float(self.penalizer_),
            "cox_penalizer_selection": self.penalizer_selection_,
            "cox_n_components": int(self.n_components_),
            "km_risk_threshold": self.risk_threshold_,
        }


class _Reducer:
    """Standardise, PCA, standardise again (so the Cox penalty treats every component alike)."""

    def __init__(self, n_components: int, random_state: int):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> _Reducer:
        self.s1 = StandardScaler().fit(X)
        self.pca = PCA(n_components=self.n_components, svd_solver="randomized" if min(X.shape) > 200 else "full", random_state=self.random_state)
        Z = self.pca.fit_transform(self.s1.transform(X))
        self.s2 = StandardScaler().fit(Z)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.s2.transform(self.pca.transform(self.s1.transform(X)))


def _fit_cox(Z: np.ndarray, time: np.ndarray, event: np.ndarray, penalizer: float):
    """A fitted lifelines CoxPHFitter, or None when it does not converge."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    df = pd.DataFrame(Z, columns=[f"pc{i}" for i in range(Z.shape[1])])
    df["T"], df["E"] = time, event
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)  # overflow in exp() while line-searching
            return CoxPHFitter(penalizer=penalizer).fit(df, "T", "E")
    except ConvergenceError as exc:
        logger.debug("Cox model with penalizer %g did not converge: %s", penalizer, exc)
        return None


def _cindex_or_nan(cox, Z: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    if cox is None or event.sum() == 0:
        return float("nan")
    import pandas as pd
    from lifelines.utils import concordance_index

    risk = np.asarray(cox.predict_log_partial_hazard(pd.DataFrame(Z, columns=[f"pc{i}" for i in range(Z.shape[1])])), dtype=float)
    return float(concordance_index(time, -risk, event))


#: Probe names accepted by the scorer and the CLI.
PROBES: tuple[str, ...] = ("linear",)


def check_probe(name: str) -> None:
    """Raise :class:`UnknownNameError` (with the closest name) unless ``name`` is in :data:`PROBES`."""
    if name not in PROBES:
        raise UnknownNameError(f"Unknown probe {name!r}.{did_you_mean(name, PROBES)} Available: {', '.join(PROBES)}.")


def make_probe(name: str, kind: TaskKind, *, metric: str, n_classes: int, c_grid: Sequence[float] = C_GRID, refine: bool = True, random_state: int = 0) -> BaseEstimator:
    """A fresh, unfitted probe for a task kind (``clone`` it per subset)."""
    check_probe(name)
    if TaskKind(kind) == TaskKind.SURVIVAL:
        return SurvivalProbe(c_grid=tuple(c_grid), refine=refine, random_state=random_state)
    return LinearProbe(metric=metric, n_classes=n_classes, c_grid=tuple(c_grid), refine=refine, random_state=random_state)


__all__ = ["C_GRID", "C_REFINE", "FeatureFilter", "LinearProbe", "ProbeError", "SurvivalProbe", "check_probe", "make_probe"]
