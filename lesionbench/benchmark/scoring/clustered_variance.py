"""Patient-clustered standard errors of a metric on many weight rows at once.

A weight row selects a test set (ones), or, over two models' stacked cases, one model with some
patients' predictions taken from the other (a permutation of :mod:`.paired`). For each row these
functions give the metric and its per-patient pieces, from which the variance of one model's value,
or of the difference of two rows' values, follows:

- AUC (binary and macro one-vs-rest): DeLong's structural components (placement
  values) summed per patient, Obuchowski's (1997) clustered variance. ``psi[b, g]`` is patient
  ``g``'s term of the AUC's linearisation, so ``var = G / (G - 1) * sum_g psi[b, g] ** 2``, and for
  a difference of two rows the same sum over ``psi_a - psi_b``.
- every other metric (balanced accuracy, AP, mAP, C-index, 2-year AUC): the leave-one-patient-out (grouped)
  jackknife (with more than 20 patients, leave-one-block-out over 20 blocks of patients), ``var = (G - 1) / G * sum_g (J[b, g] - mean_g J[b, :]) ** 2``. The C-index is a ratio of
  two quadratic forms in the weights, so its G leave-outs are computed from three matrix products
  instead of G kernel calls.

All of it depends on the scores only through their order within a row, so a studentized test built
on it keeps the metric's invariance to monotone rescaling of either model.
"""

from __future__ import annotations

import numpy as np

from lesionbench.benchmark.scoring._kernels import _c_index_pairs, _evaluate, _Target
from lesionbench.benchmark.types import TaskKind

#: Metrics whose clustered variance comes from DeLong's placement values (the rest: grouped jackknife).
DELONG_METRICS = ("auc",)
#: At most this many jackknife leave-outs: with more patients, each leave-out drops a block of patients
#: (patient code modulo the block count; the delete-a-group jackknife). Its cost is permutations x blocks
#: kernel calls, so a 1,000-patient test set does not cost 1,000 calls per permutation; 20 blocks leave
#: 19 degrees of freedom, enough for a studentized statistic.
MAX_JACKKNIFE_BLOCKS = 20


def _by_group(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Column sums of ``values`` (B, n) per group code: (B, n_groups)."""
    out = np.zeros((values.shape[0], n_groups))
    np.add.at(out.T, codes, values.T)
    return out


def auc_influence(pos: np.ndarray, s: np.ndarray, W: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted AUC of each row of ``W`` (B,) and each patient's linearisation term (B, G).

    Placement value of a positive: the weighted share of negatives scored below it (ties one half);
    of a negative: the share of positives scored above it. ``psi[b, g] = sum over g's positives of
    (V10 - AUC) / n_pos + sum over g's negatives of (V01 - AUC) / n_neg`` (weighted). NaN rows where
    a class has no weight.
    """
    B = W.shape[0]
    if len(s) == 0:
        return np.full(B, np.nan), np.full((B, n_groups), np.nan)
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    is_start = np.r_[True, ss[1:] != ss[:-1]]
    starts = np.flatnonzero(is_start)
    level = np.empty(len(s), dtype=int)
    level[order] = np.cumsum(is_start) - 1  # each case's tie group, highest score first
    Wo, po = W[:, order], pos[order]
    P = np.add.reduceat(Wo * po, starts, axis=1)
    N = np.add.reduceat(Wo * ~po, starts, axis=1)
    ptot, ntot = P.sum(1), N.sum(1)
    ok = (ptot > 0) & (ntot > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        v10 = (ntot[:, None] - np.cumsum(N, axis=1) + 0.5 * N) / ntot[:, None]  # per tie group
        v01 = (np.cumsum(P, axis=1) - 0.5 * P) / ptot[:, None]
        theta = (P * v10).sum(1) / ptot
        terms = np.where(pos, (v10[:, level] - theta[:, None]) / ptot[:, None], (v01[:, level] - theta[:, None]) / ntot[:, None])
    psi = _by_group(np.where(W > 0, W * terms, 0.0), codes, n_groups)
    theta = np.where(ok, theta, np.nan)
    psi[~ok] = np.nan
    return theta, psi


def _macro_influence(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over classes of (value, psi), skipping classes undefined on a row (as the macro metric does)."""
    theta = np.vstack([p[0] for p in parts])  # (K, B)
    psi = np.stack([p[1] for p in parts])  # (K, B, G)
    ok = np.isfinite(theta)
    count = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_theta = np.where(count > 0, np.where(ok, theta, 0.0).sum(0) / count, np.nan)
        mean_psi = np.where(ok[:, :, None], psi, 0.0).sum(0) / count[:, None]
    mean_psi[count == 0] = np.nan
    return mean_theta, mean_psi


def metric_influence(name: str, t: _Target, s: dict[str, np.ndarray], W: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(value (B,), psi (B, G)) of a DeLong metric (:data:`DELONG_METRICS`) on every row of ``W``."""
    if name == "auc":
        p = s["proba"]
        if t.kind == TaskKind.BINARY:
            return auc_influence(t.label == 1, p[:, 1], W, codes, n_groups)
        return _macro_influence([auc_influence(t.label == k, p[:, k], W, codes, n_groups) for k in range(p.shape[1])])
    raise KeyError(name)


def influence_variance(psi: np.ndarray) -> np.ndarray:
    """Clustered variance of each row from its per-patient terms: ``G / (G - 1) * sum psi**2`` (G patients)."""
    g = psi.shape[1]
    return g / max(g - 1, 1) * np.sum(psi**2, axis=1)


def jackknife_blocks(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, int]:
    """The jackknife's leave-out unit of each case: its patient, or with more than
    :data:`MAX_JACKKNIFE_BLOCKS` patients its block of patients (patient code modulo the block count)."""
    if n_groups <= MAX_JACKKNIFE_BLOCKS:
        return codes, n_groups
    return codes % MAX_JACKKNIFE_BLOCKS, MAX_JACKKNIFE_BLOCKS


def jackknife_values(name: str, t: _Target, s: dict[str, np.ndarray], W: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """The metric on every row of ``W`` with each patient (or block of patients, :func:`jackknife_blocks`)
    left out in turn: (B, blocks), NaN where undefined."""
    codes, n_groups = jackknife_blocks(codes, n_groups)
    if name == "c_index":
        return _c_index_jackknife(t, s, W, codes, n_groups)
    out = np.empty((W.shape[0], n_groups))
    for g in range(n_groups):
        out[:, g] = _evaluate(name, t, s, W * (codes != g))
    return out


def _c_index_jackknife(t: _Target, s: dict[str, np.ndarray], W: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Leave-one-patient-out C-index from quadratic forms: with ``q(w) = w' Q w`` and ``w_g`` the
    weights of patient g, ``q(w - w_g) = q(w) - w_g' Q w - w' Q w_g + w_g' Q w_g``."""
    A, AV = _c_index_pairs(t, s)
    same = codes[:, None] == codes[None, :]

    def left_out(Q: np.ndarray) -> np.ndarray:
        full = np.einsum("bi,ij,bj->b", W, Q, W, optimize=True)
        rows = _by_group(W * np.einsum("ij,bj->bi", Q, W, optimize=True), codes, n_groups)
        cols = _by_group(W * np.einsum("ji,bj->bi", Q, W, optimize=True), codes, n_groups)
        within = _by_group(W * np.einsum("ij,bj->bi", Q * same, W, optimize=True), codes, n_groups)
        return full[:, None] - rows - cols + within

    den, num = left_out(A), left_out(AV)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / den, np.nan)


def jackknife_variance(J: np.ndarray) -> np.ndarray:
    """Grouped-jackknife variance of each row of leave-one-out values ``J`` (B, G), over its defined entries."""
    ok = np.isfinite(J)
    g = ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, J, 0.0).sum(1) / g
        ss = np.where(ok, (J - mean[:, None]) ** 2, 0.0).sum(1)
        return np.where(g > 1, (g - 1) / g * ss, np.nan)
