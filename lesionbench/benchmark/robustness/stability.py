"""Feature-stability statistics: ICC per feature and cosine similarity to the unperturbed embedding.

The headline is ICC(2,1), absolute agreement (McGraw & Wong's A,1): a perturbation that shifts a
feature alike for every lesion changes what a probe trained on unperturbed features sees, and
absolute agreement counts that shift. Beside it, ICC(3,1) (Shrout & Fleiss's 1979 two-way mixed,
consistency, single-measurement ICC, the one the radiomics-reproducibility literature and the FMCIB
paper's test-retest analysis report), ``(BMS - EMS) / (BMS + (k - 1) EMS)``, which ignores such a
shift. Both come from the two-way ANOVA mean squares of an ``(n targets, k measurements)`` table. No
well-kept implementation is installed (pingouin is not a dependency), so they are computed here,
vectorised over features, and tested against Shrout & Fleiss's Table 2 (ICC(3,1) = 0.71, ICC(2,1) = 0.29). A feature whose value never varies has no between-target variance: its ICC
is undefined (NaN), counted apart, never silently 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.scoring.metrics import bootstrap_weights
from lesionbench.benchmark.types import TaskKind

#: ICC thresholds of Koo & Li (2016): >= 0.75 good, >= 0.9 excellent reliability.
ICC_GOOD, ICC_EXCELLENT = 0.75, 0.9


def _mean_squares(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, np.ndarray, np.ndarray]:
    """Two-way ANOVA mean squares of ``(n targets, k measurements[, features])``: rows (targets), columns
    (measurements), error; with n, k, the grand mean and a mask of the features with a non-finite value."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim == 2:
        y = y[:, :, None]
    if y.ndim != 3:
        raise ConfigurationError(f"{name} needs an (n, k) or (n, k, features) array, got shape {np.shape(values)}.")
    n, k = y.shape[:2]
    if n < 2 or k < 2:
        raise ConfigurationError(f"ICC needs at least 2 targets and 2 measurements each, got {n} x {k}.")
    grand = y.mean(axis=(0, 1))
    rows = y.mean(axis=1)
    cols = y.mean(axis=0)
    ss_total = ((y - grand) ** 2).sum(axis=(0, 1))
    ss_rows = k * ((rows - grand) ** 2).sum(axis=0)
    ss_cols = n * ((cols - grand) ** 2).sum(axis=0)
    ss_err = np.maximum(ss_total - ss_rows - ss_cols, 0.0)  # rounding can make it a hair negative
    bad = ~np.isfinite(y).all(axis=(0, 1))
    return ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1)), n, k, grand, bad


def _ratio(num: np.ndarray, den: np.ndarray, grand: np.ndarray, bad: np.ndarray, values: np.ndarray) -> np.ndarray:
    # a relative floor: float noise on a constant feature must read as "no variance", not as an ICC
    scale = np.maximum(np.abs(grand), 1.0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-20 * scale, num / den, np.nan)
    out[bad] = np.nan
    return out if np.ndim(values) == 3 else out.reshape(())


def icc_3_1(values: np.ndarray) -> np.ndarray:
    """ICC(3,1) (consistency, McGraw & Wong's C,1) of each feature of ``values`` shaped
    ``(n targets, k measurements[, features])``: ``(BMS - EMS) / (BMS + (k - 1) EMS)``.

    Returns a float array (one value per feature, or a scalar array for a 2-D table); NaN where the
    feature has no variance at all (the ratio is 0/0) or a value is not finite. Blind to a shift that
    moves every lesion alike (the measurement effect is removed): reported beside :func:`icc_a_1`.
    """
    bms, _, ems, _, k, grand, bad = _mean_squares(values, "icc_3_1")
    return _ratio(bms - ems, bms + (k - 1) * ems, grand, bad, values)


def icc_a_1(values: np.ndarray) -> np.ndarray:
    """ICC(2,1) absolute agreement (McGraw & Wong's A,1) of each feature, the headline ICC:
    ``(BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n)`` with JMS the measurements' mean square.

    A perturbation that shifts a feature the same way for every lesion lowers it (a 2 SD shift of
    every lesion: 0.39), where ICC(3,1) stays near 1 (0.987). NaN as for :func:`icc_3_1`.
    """
    bms, jms, ems, n, k, grand, bad = _mean_squares(values, "icc_a_1")
    out = _ratio(bms - ems, bms + (k - 1) * ems + k * (jms - ems) / n, grand, bad, values)
    # with very few targets the denominator can approach 0 from a negative measurement term: keep within [-1, 1]
    return np.clip(out, -1.0, 1.0)


def cosine_to_reference(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``perturbed`` (n, d) to ``reference`` (n, d); identical rows give 1
    (also when both are zero vectors), a zero vector against a non-zero one gives 0."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(perturbed, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((na > 0) & (nb > 0), (a * b).sum(axis=1) / (na * nb), 0.0)
    cos[np.all(a == b, axis=1)] = 1.0
    return np.clip(cos, -1.0, 1.0)


def icc_summary(icc: np.ndarray) -> dict[str, Any]:
    """Distribution of per-feature ICCs: quartiles over the defined ones, shares above the Koo & Li cut-offs."""
    icc = np.asarray(icc, dtype=float)
    ok = icc[np.isfinite(icc)]
    out: dict[str, Any] = {"n_features": int(icc.size), "n_defined": int(ok.size), "n_undefined": int(icc.size - ok.size)}
    if ok.size:
        q = np.percentile(ok, [5, 25, 50, 75, 95])
        out.update({"p05": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "p95": float(q[4]),
                    "share_good": float(np.mean(ok >= ICC_GOOD)), "share_excellent": float(np.mean(ok >= ICC_EXCELLENT))})  # fmt: skip
    else:
        out.update({k: float("nan") for k in ("p05", "q25", "median", "q75", "p95", "share_good", "share_excellent")})
    return out


def weighted_mean_ci(values: np.ndarray, weights: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-lesion ``values`` and its percentile CI over bootstrap ``weights`` (n_boot, n)."""
    v = np.asarray(values, dtype=float)
    point = float(np.mean(v)) if v.size else float("nan")
    if weights.size == 0 or v.size == 0:
        return point, float("nan"), float("nan")
    tot = weights.sum(axis=1)
    boot = (weights @ v) / np.where(tot > 0, tot, np.nan)
    return point, *_percentiles(boot, level)


def median_icc_ci(table: np.ndarray, groups: Sequence[Any] | None, *, n_boot: int, seed: int | Sequence[int], level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the median per-feature ICC(2,1) (absolute agreement) over resamples of whole patients (``groups``)."""
    n = table.shape[0]
    if n_boot <= 0:
        return float("nan"), float("nan")
    W = bootstrap_weights(n, n_boot, seed, groups).astype(int)
    meds = np.full(n_boot, np.nan)
    for b in range(n_boot):
        idx = np.repeat(np.arange(n), W[b])
        if len(np.unique(idx)) < 2:
            continue
        icc = icc_a_1(table[idx])
        ok = icc[np.isfinite(icc)]
        if ok.size:
            meds[b] = np.median(ok)
    return _percentiles(meds, level)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(ok, [a, 100 - a])
    return float(lo), float(hi)


# ------------------------------------------------------------------ shared by the robustness and test-retest blocks
def classes_of(kind: TaskKind, scores: Any, risk_threshold: float | None = None) -> np.ndarray:
    """The probe's call per lesion (see the module docstring)."""
    if kind == TaskKind.SURVIVAL:
        return (np.asarray(scores["risk"]) > float(risk_threshold)).astype(int)  # type: ignore[arg-type]
    s = np.asarray(scores)
    return (s[:, 1] > 0.5).astype(int) if kind == TaskKind.BINARY else np.argmax(s, axis=1)


class PriorProbe:
    """What a probe without a usable feature predicts: the training class prior (survival: one risk for all)."""

    def __init__(self, kind: TaskKind, train: pd.DataFrame, n_classes: int):
        self.risk_threshold_ = 0.0
        if kind == TaskKind.SURVIVAL:
            self.prior_ = np.zeros(0)
        else:
            counts = np.bincount(train["label"].to_numpy().astype(int), minlength=max(n_classes, 2)).astype(float)
            self.prior_ = counts / counts.sum()

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {"score": np.zeros(len(X)), "risk": np.zeros(len(X))}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.prior_, (len(X), 1))


def predict(est: Any, kind: TaskKind, X: np.ndarray) -> Any:
    return est.predict(X) if kind == TaskKind.SURVIVAL else est.predict_proba(X)


def ci_from(point: float, values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    ok = values[np.isfinite(values)]
    a = (1 - level) / 2 * 100
    lo, hi = (float(v) for v in np.percentile(ok, [a, 100 - a])) if ok.size else (float("nan"), float("nan"))
    return {"value": float(point), "ci_low": lo, "ci_high": hi}


def mean_ci(values: np.ndarray, W: np.ndarray) -> dict[str, float]:
    point, lo, hi = weighted_mean_ci(values, W)
    return {"value": point, "ci_low": lo, "ci_high": hi}


def stability_block(base: np.ndarray, draws: Sequence[np.ndarray], W: np.ndarray, groups: Sequence[Any] | None, *, n_boot: int, seed: Sequence[int]) -> dict[str, Any]:
    """Feature stability of ``draws`` (each (n, d)) against ``base`` (n, d): the ICC(2,1) (absolute
    agreement) distribution as ``icc``, the ICC(3,1) (consistency) one beside it as ``icc_consistency``,
    and the cosine."""
    table = np.stack([base, *draws], axis=1)
    icc = icc_a_1(table)
    summ = {**icc_summary(icc), "type": "ICC(2,1) absolute agreement"}
    summ["median_ci"] = list(median_icc_ci(table, groups, n_boot=n_boot, seed=seed))
    consistency = {**icc_summary(icc_3_1(table)), "type": "ICC(3,1) consistency"}
    cos = np.mean([cosine_to_reference(base, x) for x in draws], axis=0)
    return {"icc": summ, "icc_consistency": consistency, "cosine": mean_ci(cos, W),
            "per_feature_icc": [None if not np.isfinite(v) else round(float(v), 6) for v in icc]}  # fmt: skip
