"""The weighted metric kernels behind :mod:`lesionbench.benchmark.scoring.metrics`.

Each metric is written once as ``f(target, scores, W) -> (B,)``: row ``b`` of ``W`` holds per-case
multiplicities (ones: the test set; bootstrap counts: a resample; 0/1 over two models' stacked cases:
a permutation), so many resamples run as a few matrix operations. See the table in ``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lesionbench.benchmark.scoring.endpoints import TWO_YEARS_DAYS, two_year_label
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.types import TaskKind

#: Bootstrap weight rows processed at once (bounds memory for large test sets).
_CHUNK = 256


@dataclass(frozen=True)
class _Target:
    """Ground truth in the form the weighted metrics use."""

    kind: TaskKind
    label: np.ndarray | None = None  # int class index (classification)
    time: np.ndarray | None = None
    event: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.label if self.label is not None else self.time)


def _target(kind: TaskKind, y_true: Any) -> _Target:
    if kind == TaskKind.SURVIVAL:
        if isinstance(y_true, Mapping) or hasattr(y_true, "columns"):
            time, event = np.asarray(y_true["time"], float), np.asarray(y_true["event"], float)
        else:
            arr = np.asarray(y_true, dtype=float)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise ConfigurationError(
                    f"Survival ground truth must be (n, 2) columns time, event (or a table with those columns); got shape {arr.shape}."
                )
            time, event = arr[:, 0], arr[:, 1]
        return _Target(kind, time=time, event=event)
    label = np.asarray(y_true)
    if label.ndim != 1:
        raise ConfigurationError(f"Class labels must be one-dimensional; got shape {label.shape}.")
    return _Target(kind, label=label.astype(int))


def _scores(kind: TaskKind, scores: Any, n: int) -> dict[str, np.ndarray]:
    """Normalise scores: ``proba`` (n, K) for classification; ``score`` and ``risk`` for survival."""
    if kind == TaskKind.SURVIVAL:
        if isinstance(scores, Mapping) or hasattr(scores, "columns"):
            risk = np.asarray(scores["risk"], float) if "risk" in scores else None
            score = np.asarray(scores["score"], float) if "score" in scores else None
            if risk is None and score is None:
                raise ConfigurationError("Survival scores need a 'risk' and/or a 'score' (2-year probability) column.")
            risk = risk if risk is not None else score
            score = score if score is not None else risk
        else:
            risk = score = np.asarray(scores, float)
        out = {"risk": risk, "score": score}
    else:
        p = np.asarray(scores, dtype=float)
        if kind == TaskKind.BINARY and p.ndim == 1:
            p = np.column_stack([1.0 - p, p])
        if p.ndim != 2:
            raise ConfigurationError(f"Scores for a {kind} task must be (n, n_classes) probabilities; got shape {p.shape}.")
        out = {"proba": p}
    for k, v in out.items():
        if len(v) != n:
            raise ConfigurationError(f"{len(v)} {k} scores for {n} cases: scores and labels must align row by row.")
        if not np.all(np.isfinite(v)):
            raise ConfigurationError(f"{int((~np.isfinite(v)).sum())} {k} scores are NaN or infinite; a probe must score every case.")
    return out


# ------------------------------------------------------------------ weighted metric kernels
def _grouped(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score value, highest score first: (B, G) each."""
    if len(s) == 0:  # no case at all (e.g. a test split without a known 2-year status): no groups, not an error
        return np.zeros((len(W), 0)), np.zeros((len(W), 0))
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    Wo = W[:, order]
    po = pos[order]
    P = np.add.reduceat(Wo * po, starts, axis=1)
    N = np.add.reduceat(Wo * ~po, starts, axis=1)
    return P, N


def _w_auc(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC (ties count one half), NaN where a resample lacks either class."""
    P, N = _grouped(pos, s, W)
    ptot, ntot = P.sum(1), N.sum(1)
    below = ntot[:, None] - np.cumsum(N, axis=1)  # negatives with a strictly lower score
    num = (P * (below + 0.5 * N)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((ptot > 0) & (ntot > 0), num / (ptot * ntot), np.nan)


def _w_ap(pos: np.ndarray, s: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted average precision, sum over thresholds of (recall step) x precision, as scikit-learn."""
    P, N = _grouped(pos, s, W)
    tp, fp = np.cumsum(P, axis=1), np.cumsum(N, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ptot = P.sum(1)
        return np.where(ptot > 0, (P * prec).sum(1) / ptot, np.nan)


def _macro(values: list[np.ndarray]) -> np.ndarray:
    """Mean over classes of per-class values, skipping classes undefined on a resample."""
    stack = np.vstack(values)
    ok = np.isfinite(stack)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(0), np.where(ok, stack, 0.0).sum(0) / ok.sum(0), np.nan)


def _balanced_accuracy(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    p = s["proba"]
    member = (t.label[:, None] == np.arange(p.shape[1])).astype(float)  # (n, K)
    correct = (p.argmax(1) == t.label)[:, None]
    # einsum, not W @ member: a BLAS call per chunk is up to 20x slower on a busy 2-core machine
    support = np.einsum("bi,ik->bk", W, member)
    hits = np.einsum("bi,ik->bk", W, member * correct)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _macro(list(np.where(support > 0, hits / support, np.nan).T))


def _map(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    p = s["proba"]
    if t.kind == TaskKind.BINARY:
        # one positive class: averaging in the AP of "negative" (class 0 ranked by 1 - p) would
        # reward detecting negatives, which no binary task asks for
        return _average_precision(t, s, W)
    return _macro([_w_ap(t.label == k, p[:, k], W) for k in range(p.shape[1])])


def _auc(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    p = s["proba"]
    if t.kind == TaskKind.BINARY:
        return _w_auc(t.label == 1, p[:, 1], W)
    return _macro([_w_auc(t.label == k, p[:, k], W) for k in range(p.shape[1])])


def _average_precision(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    return _w_ap(t.label == 1, s["proba"][:, 1], W)


def _c_index_pairs(t: _Target, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(comparable, comparable x concordance) pair matrices of Harrell's C (see :func:`_c_index`)."""
    time, event, risk = t.time, t.event.astype(bool), s["risk"]
    comparable = event[:, None] & ((time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~event[None, :]))
    value = np.where(risk[:, None] > risk[None, :], 1.0, np.where(risk[:, None] == risk[None, :], 0.5, 0.0))
    A = comparable.astype(float)
    return A, A * value


def _c_index(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    """Harrell's C with lifelines' rules: pair (i, j) is comparable when i died first, or at the
    same time as a censored j; concordant when i has the higher risk; tied risks count one half."""
    A, AV = _c_index_pairs(t, s)
    den = np.einsum("bi,ij,bj->b", W, A, W, optimize=True)
    num = np.einsum("bi,ij,bj->b", W, AV, W, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _auc_2y_known(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    """The 2-year AUC on the patients whose 2-year status is known (censored before 730 days dropped, no
    reweighting): biased when early censoring is heavy; a reference column beside :func:`_auc_2y`."""
    y2 = two_year_label(t.time, t.event)
    known = np.isfinite(y2)
    return _w_auc(y2[known] == 1, s["score"][known], W[:, known])


def _censoring_survival(time: np.ndarray, event: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted reverse Kaplan-Meier G(time_i) of each case on every row of W (B, n), as scikit-survival's
    ``CensoringDistributionEstimator``: at a time u, censorings at u count against those at risk at u
    less the deaths at u; G includes the censorings at u itself."""
    times, inverse = np.unique(time, return_inverse=True)
    u = len(times)
    member = np.zeros((len(time), u))
    member[np.arange(len(time)), inverse] = 1.0
    at_u = np.einsum("bi,iu->bu", W, member)
    deaths = np.einsum("bi,iu->bu", W * (event == 1), member)
    censored = at_u - deaths
    at_risk = np.cumsum(at_u[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(censored > 0, censored / (at_risk - deaths), 0.0)
        G = np.cumprod(1.0 - ratio, axis=1)
    return G[:, inverse]


def _auc_2y(t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    """Cumulative/dynamic 2-year AUC with inverse-probability-of-censoring weights (Uno et al. 2007), as
    ``sksurv.metrics.cumulative_dynamic_auc(y, y, score, 730)``: cases died by 730 days, each weighted by
    1 / G(its time) with G the censoring distribution of the (resampled) test set; controls alive
    after 730 days. Patients censored before 730 days then count through the reweighting instead of
    being dropped (dropping them biased the AUC by +0.015 at 47% early censoring)."""
    case = (t.time <= TWO_YEARS_DAYS) & (t.event == 1)
    control = t.time > TWO_YEARS_DAYS
    if not case.any() or not control.any():
        return np.full(len(W), np.nan)
    G = _censoring_survival(t.time, t.event, W)
    with np.errstate(invalid="ignore", divide="ignore"):
        ipcw = np.where(case, W / G, 0.0)
    bad = ~np.isfinite(ipcw).all(1)  # a case at a time where the censoring survival reached 0
    rows = np.where(bad[:, None], 0.0, ipcw)
    keep = case | control
    value = _w_auc_weighted(case[keep], s["score"][keep], rows[:, keep], np.where(control, W, 0.0)[:, keep])
    return np.where(bad, np.nan, value)


def _w_auc_weighted(pos: np.ndarray, s: np.ndarray, Wpos: np.ndarray, Wneg: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC with separate case (``Wpos``) and control (``Wneg``) weights per row (ties one half)."""
    if len(s) == 0:
        return np.full(len(Wpos), np.nan)
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    P = np.add.reduceat(Wpos[:, order] * pos[order], starts, axis=1)
    N = np.add.reduceat(Wneg[:, order] * ~pos[order], starts, axis=1)
    ptot, ntot = P.sum(1), N.sum(1)
    below = ntot[:, None] - np.cumsum(N, axis=1)
    num = (P * (below + 0.5 * N)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((ptot > 0) & (ntot > 0), num / (ptot * ntot), np.nan)


_Kernel = Callable[[_Target, dict[str, np.ndarray], np.ndarray], np.ndarray]
#: name -> (weighted kernel, task kinds it applies to)
_METRICS: dict[str, tuple[_Kernel, tuple[TaskKind, ...]]] = {
    "balanced_accuracy": (_balanced_accuracy, (TaskKind.MULTICLASS, TaskKind.BINARY)),
    "map": (_map, (TaskKind.MULTICLASS, TaskKind.BINARY)),
    "auc": (_auc, (TaskKind.MULTICLASS, TaskKind.BINARY)),
    "average_precision": (_average_precision, (TaskKind.BINARY,)),
    "c_index": (_c_index, (TaskKind.SURVIVAL,)),
    "auc_2y": (_auc_2y, (TaskKind.SURVIVAL,)),
    "auc_2y_known": (_auc_2y_known, (TaskKind.SURVIVAL,)),
}


def _evaluate(name: str, t: _Target, s: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    kernel = _METRICS[name][0]
    if len(W) <= _CHUNK:
        return kernel(t, s, W)
    return np.concatenate([kernel(t, s, W[i : i + _CHUNK]) for i in range(0, len(W), _CHUNK)])
