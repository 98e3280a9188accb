"""The designs of issue 21 for ``stats_calibration.py``: crossing ROC curves, models good at different
classes on a small multiclass split, clustered survival under heavy censoring (families of K entries:
``calibration_families.py``).

Each ``part_*`` function runs ``reps`` replicates and returns rows ``(key, what, rate, MC SE, reps,
target)``; a rate's Monte-Carlo SE is ``sqrt(r (1 - r) / reps)``, and a coverage row's target is
0.95 (the row says how many SEs it lies from it). Reference rows (``ref_``) are what lesionbench does
not do, kept to show the difference: the unstudentized swap test of round 2, lesion-level log-rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

ALPHA = 0.05
Row = tuple[str, str, float, float, int, str]
#: DeepLesion-like class shares in pairs of equal size, so that swapping which model is strong on
#: which class of a pair leaves every metric's expectation unchanged.
CLASS_SHARES = np.array([0.2, 0.2, 0.12, 0.12, 0.1, 0.1, 0.08, 0.08])


class Tally:
    """Hit lists per key, summarised as (rate, MC SE, n)."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {}

    def add(self, key: str, ok: Any) -> None:
        self.hits.setdefault(key, []).append(float(ok))

    def rows(self, spec: list[tuple[str, str, str]]) -> list[Row]:
        out = []
        for key, label, target in spec:
            h = self.hits.get(key)
            if h:
                r = float(np.mean(h))
                out.append((key, label, r, float(np.sqrt(r * (1 - r) / len(h))), len(h), target))
        return out


def patient_sizes(rng: np.random.Generator, patients: int, lesions: int) -> np.ndarray:
    """Patient id of each of ``lesions`` lesions: every patient has one, the rest spread at random."""
    sizes = 1 + rng.multinomial(lesions - patients, np.full(patients, 1 / patients))
    return np.repeat(np.arange(patients), sizes)


def _pair(rng: np.random.Generator, shape: tuple[int, ...], r: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=shape)
    return a, r * a + np.sqrt(1 - r**2) * rng.normal(size=shape)


def crossing_roc(rng: np.random.Generator, patients: int, lesions: int, *, r: float = 0.9, spread: float = 3.0, auc_b: float = 0.75, rho: float = 0.5):  # noqa: ANN201
    """Binormal scores of two models, AUC 0.75 (A) and ``auc_b`` (B), B's positives ``spread`` times as
    spread (the ROC curves cross), correlation ``r`` between the models given the class. With several
    lesions per patient, a patient effect (share ``rho``) in the label and in both models' errors."""
    shape = (patients, lesions)
    if lesions > 1:
        v = np.sqrt(rho) * rng.normal(size=(patients, 1)) + np.sqrt(1 - rho) * rng.normal(size=shape)
        ua, ub = _pair(rng, (patients, 1), r)
        ea, eb = _pair(rng, shape, r)
        za, zb = np.sqrt(rho) * ua + np.sqrt(1 - rho) * ea, np.sqrt(rho) * ub + np.sqrt(1 - rho) * eb
    else:
        v = rng.normal(size=shape)
        za, zb = _pair(rng, shape, r)
    y = (v > 0).astype(int)
    mu_a, mu_b = norm.ppf(0.75) * np.sqrt(2), norm.ppf(auc_b) * np.sqrt(1 + spread**2)
    a = mu_a * y + za
    b = mu_b * y + np.where(y == 1, spread, 1.0) * zb
    return y.ravel(), a.ravel(), b.ravel(), np.repeat(np.arange(patients), lesions)


def multiclass_split(rng: np.random.Generator, patients: int = 19, lesions: int = 42, *, strong: float = 2.5, weak: float = 1.0, boost: float = 0.0, r: float = 0.5):  # noqa: ANN201
    """A ``synthetic_site``-like split: 8 classes (:data:`CLASS_SHARES`), a patient's lesions often of one
    class. A is strong on even classes, B on odd ones (equally good); ``boost`` adds to all of A's."""
    g = patient_sizes(rng, patients, lesions)
    k = len(CLASS_SHARES)
    main = rng.choice(k, size=patients, p=CLASS_SHARES)[g]
    y = np.where(rng.random(lesions) < 0.5, main, rng.choice(k, size=lesions, p=CLASS_SHARES))
    even = np.arange(k) % 2 == 0
    sa, sb = np.where(even, strong, weak) + boost, np.where(even, weak, strong)
    ua, ub = _pair(rng, (patients, k), r)
    ea, eb = _pair(rng, (lesions, k), r)
    onehot = np.eye(k)[y]
    la = sa * onehot + np.sqrt(0.3) * ua[g] + np.sqrt(0.7) * ea
    lb = sb * onehot + np.sqrt(0.3) * ub[g] + np.sqrt(0.7) * eb
    soft = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)  # noqa: E731
    return y, soft(la), soft(lb), g


def survival_clustered(rng: np.random.Generator, patients: int, lesions: int, *, beta: float = 0.0, censor_mean: float = 600.0):  # noqa: ANN201
    """One time and event per patient (exponential, mean 900 days at beta 0; censoring exponential with
    ``censor_mean``, 60% censored), shared by the patient's lesions; each lesion's risk is the patient's
    log-hazard ``beta * x`` seen with lesion noise, plus a patient effect that is not prognostic."""
    g = patient_sizes(rng, patients, lesions) if lesions > patients else np.arange(patients)
    x = rng.normal(size=patients)
    death = rng.exponential(900.0 * np.exp(-beta * x))
    cens = rng.exponential(censor_mean, size=patients)
    time, event = np.minimum(death, cens), (death <= cens).astype(float)
    risk = x[g] + 0.7 * rng.normal(size=patients)[g] + 0.5 * rng.normal(size=len(g))
    return time[g], event[g], risk, g, death


def swap_p_unstudentized(y: Any, a: Any, b: Any, g: np.ndarray, metric: str, kind: str, n_perm: int, seed: int) -> float:
    """Reference: round 2's test, the raw difference on patient swaps of the scale-free scores."""
    from lesionbench.benchmark.scoring._kernels import _evaluate, _scores, _target
    from lesionbench.benchmark.scoring.paired import permutation_p, scale_free, stacked

    t = _target(kind, y)
    both, s = stacked(t, scale_free(metric, _scores(kind, a, t.n)), scale_free(metric, _scores(kind, b, t.n)))
    codes = np.unique(g, return_inverse=True)[1]
    swap = (np.random.default_rng(seed).random((n_perm, codes.max() + 1)) < 0.5)[:, codes].astype(float)
    keep = 1 - swap
    d = _evaluate(metric, both, s, np.hstack([keep, swap])) - _evaluate(metric, both, s, np.hstack([swap, keep]))
    ones = np.hstack([np.ones((1, t.n)), np.zeros((1, t.n))])
    obs = float(_evaluate(metric, both, s, ones)[0] - _evaluate(metric, both, s, ones[:, ::-1])[0])
    return permutation_p(obs, d, "two-sided")


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(1 << 31))


def part_crossing(reps: int, *, n_perm: int, seed: int = 0, reference: bool = True) -> list[Row]:
    """Type-I (equal AUC 0.75, crossing ROCs) and power (B's AUC 0.70) of `compare`'s AUC test."""
    from lesionbench.benchmark.scoring.metrics import paired_comparison

    rng = np.random.default_rng(seed)
    tally = Tally()
    designs = {"n100": (100, 1), "n300": (300, 1), "40x5": (40, 5)}
    for _ in range(reps):
        for key, (p, l) in designs.items():
            y, a, b, g = crossing_roc(rng, p, l)
            s = _seed(rng)
            tally.add(f"cross_{key}", paired_comparison(y, a, b, "auc", kind="binary", n_boot=0, n_perm=n_perm, seed=s, groups=g).p_value < ALPHA)
            if reference:
                tally.add(f"ref_cross_{key}", swap_p_unstudentized(y, a, b, g, "auc", "binary", n_perm, s) < ALPHA)
        y, a, b, g = crossing_roc(rng, 40, 5, auc_b=0.70)
        tally.add("cross_power", paired_comparison(y, a, b, "auc", kind="binary", n_boot=0, n_perm=n_perm, seed=_seed(rng), groups=g).p_value < ALPHA)
    spec = [(f"cross_{k}", f"type-I, AUC test, crossing ROCs (r 0.9, B's positives 3x spread), {d}", "0.03-0.07") for k, d in
            (("n100", "n = 100"), ("n300", "n = 300"), ("40x5", "40 patients x 5 lesions, shared patient effect"))]  # fmt: skip
    spec.append(("cross_power", "power, AUC test, crossing ROCs 40 x 5, AUC 0.75 vs 0.70", "-"))
    spec += [(f"ref_cross_{k}", f"reference: round-2 unstudentized swap test, crossing ROCs, {k}", "not used") for k in designs]
    return tally.rows(spec)


def part_multiclass(reps: int, *, n_perm: int, n_boot: int, seed: int = 0, truth_lesions: int = 100_000, reference: bool = True) -> list[Row]:
    """19 patients / 42 lesions / 8 classes, A and B good at different classes: type-I of the BA, mAP and
    AUC tests; power of the test and of 'the CI excludes 0' with A better; coverage of A's CIs."""
    from lesionbench.benchmark.scoring.metrics import bootstrap_ci, compute_metrics, paired_comparison

    rng = np.random.default_rng(seed)
    yb, pa, _, _ = multiclass_split(np.random.default_rng(12345), truth_lesions, truth_lesions)
    truth = compute_metrics("multiclass", yb, pa)
    tally = Tally()
    metrics = ("balanced_accuracy", "map", "auc")
    for _ in range(reps):
        y, a, b, g = multiclass_split(rng)
        for m in metrics:
            s = _seed(rng)
            tally.add(f"mc_{m}", paired_comparison(y, a, b, m, kind="multiclass", n_boot=0, n_perm=n_perm, seed=s, groups=g).p_value < ALPHA)
            if reference and m != "auc":
                tally.add(f"ref_mc_{m}", swap_p_unstudentized(y, a, b, g, m, "multiclass", n_perm, s) < ALPHA)
        ci = bootstrap_ci("multiclass", y, a, metrics, n_boot=n_boot, seed=_seed(rng), groups=g)
        for m in metrics:
            tally.add(f"cover_{m}", ci[m].ci_low <= truth[m] <= ci[m].ci_high)
            tally.add(f"bias_{m}", ci[m].value - truth[m])
        y, a, b, g = multiclass_split(rng, boost=0.6)
        for m in ("balanced_accuracy", "map"):
            r = paired_comparison(y, a, b, m, kind="multiclass", n_boot=n_boot, n_perm=n_perm, seed=_seed(rng), groups=g)
            tally.add(f"power_{m}", r.p_value < ALPHA)
            tally.add(f"power_ci_{m}", not (r.ci_low <= 0 <= r.ci_high))
    spec = [(f"mc_{m}", f"type-I, {m} test, 19/42/8 split, models good at different classes", "0.03-0.07") for m in metrics]
    spec += [(f"power_{m}", f"power, {m} test, A better on every class (19/42/8)", "-") for m in ("balanced_accuracy", "map")]
    spec += [(f"power_ci_{m}", f"power, '95% CI excludes 0' rule, {m} (reference)", "-") for m in ("balanced_accuracy", "map")]
    spec += [(f"cover_{m}", f"coverage, 95% patient-bootstrap CI of {m}, 19/42/8 (true {truth[m]:.3f})", "0.95") for m in metrics]
    spec += [(f"ref_mc_{m}", f"reference: round-2 unstudentized swap test, {m}, 19/42/8", "not used") for m in ("balanced_accuracy", "map")]
    rows = tally.rows(spec)
    for m in metrics:  # the estimator's bias: a mean, its SE the SD / sqrt(reps)
        h = np.array(tally.hits[f"bias_{m}"])
        rows.append((f"bias_{m}", f"bias of the {m} estimate, 19/42/8 (point - true)", float(h.mean()), float(h.std(ddof=1) / np.sqrt(len(h))), len(h), "0"))
    return rows


def part_binary_coverage(reps: int, *, n_boot: int, seed: int = 0) -> list[Row]:
    """Coverage of the patient-bootstrap CI of a binary AUC on small or imbalanced splits."""
    from lesionbench.benchmark.scoring.metrics import bootstrap_ci

    rng = np.random.default_rng(seed)
    tally = Tally()
    designs: dict[str, tuple[int, int, float]] = {"19x42_p50": (19, 42, 0.0), "19x42_p20": (19, 42, 0.84), "60x1_p10": (60, 60, 1.28)}
    truth = {}
    for key, (_, _, cut) in designs.items():
        v = rng.normal(size=400_000)
        y = v > cut
        from sklearn.metrics import roc_auc_score

        truth[key] = float(roc_auc_score(y, 1.2 * y + rng.normal(size=v.size)))
    for _ in range(reps):
        for key, (p, n, cut) in designs.items():
            for _try in range(20):  # a split needs both classes, as a task's test split has
                g = patient_sizes(rng, p, n) if n > p else np.arange(p)
                v = np.sqrt(0.5) * rng.normal(size=p)[g] + np.sqrt(0.5) * rng.normal(size=n)
                y = (v > cut).astype(int)
                if 0 < y.sum() < n:
                    break
            s = 1.2 * y + np.sqrt(0.4) * rng.normal(size=p)[g] + np.sqrt(0.6) * rng.normal(size=n)
            ci = bootstrap_ci("binary", y, s, ["auc"], n_boot=n_boot, seed=_seed(rng), groups=g)["auc"]
            tally.add(f"cover_bin_{key}", ci.ci_low <= truth[key] <= ci.ci_high)
    labels = {"19x42_p50": "19 patients / 42 lesions, prevalence 50%", "19x42_p20": "19 / 42, prevalence 20%", "60x1_p10": "60 lesions, prevalence 10%"}
    return tally.rows([(f"cover_bin_{k}", f"coverage, 95% CI of binary AUC, {labels[k]} (true {truth[k]:.3f})", "0.95") for k in designs])


def part_survival(reps: int, *, seed: int = 0) -> list[Row]:
    """Type-I of the log-rank p logged for survival runs (risk not prognostic), clustered lesions, heavy censoring."""
    from lesionbench.benchmark.scoring.run_one import logrank_by_patient
    from lifelines.statistics import logrank_test

    rng = np.random.default_rng(seed)
    tally = Tally()
    for _ in range(reps):
        for p, n in ((19, 42), (50, 110)):
            time, event, risk, g, _ = survival_clustered(rng, p, n)
            tally.add(f"logrank_{p}", logrank_by_patient(time, event, risk, g)["logrank_p"] < ALPHA)
            high = risk > np.median(risk)
            tally.add(f"ref_logrank_{p}", logrank_test(time[high], time[~high], event[high], event[~high]).p_value < ALPHA)
    spec = [(f"logrank_{p}", f"type-I, log-rank of the run (one row per patient), {p} patients / {n} lesions, 60% censored", "<= 0.06") for p, n in ((19, 42), (50, 110))]
    spec += [(f"ref_logrank_{p}", f"reference: lesions as independent rows (round 2), {p} / {n}", "not used") for p, n in ((19, 42), (50, 110))]
    return Tally.rows(tally, spec)


def part_rank_intervals(reps: int, *, n_boot: int, seed: int = 0) -> list[Row]:
    """Coverage of the page's 95% rank intervals: five entries with population AUC 0.74-0.76."""
    from lesionbench.leaderboard import _stats
    from lesionbench.benchmark.types import TaskKind

    rng = np.random.default_rng(seed)
    aucs = np.array([0.76, 0.755, 0.75, 0.745, 0.74])
    mus = norm.ppf(aucs) * np.sqrt(2)
    tally = Tally()
    for _ in range(reps):
        g = np.repeat(np.arange(60), 2)
        y = (np.sqrt(0.5) * rng.normal(size=60)[g] + np.sqrt(0.5) * rng.normal(size=120) > 0).astype(int)
        shared = rng.normal(size=120)
        scores = {str(i): m * y + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=120) for i, m in enumerate(mus)}
        iv = _stats.bootstrap_rank_intervals(TaskKind.BINARY, y, scores, "auc", n_boot=n_boot, seed=_seed(rng), groups=g)
        for i in range(5):
            lo, hi = iv[str(i)]
            tally.add(f"rank_{i + 1}", lo <= i + 1 <= hi)
    return tally.rows([(f"rank_{i}", f"coverage, 95% rank interval of true rank {i} of 5 (AUC 0.76..0.74, 60 x 2)", "0.95") for i in range(1, 6)])


def part_ipcw(reps: int, *, seed: int = 0, patients: int = 200) -> list[Row]:
    """Bias of the 2-year AUC with heavy early censoring (43% censored before 730 days): the IPCW estimator
    (``auc_2y``) against the one that drops those patients (``auc_2y_known``); truth from 400,000 uncensored."""
    from sklearn.metrics import roc_auc_score

    from lesionbench.benchmark.scoring.metrics import compute_metrics

    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=n)
        return x, rng.exponential(900 * np.exp(-0.8 * x)), rng.uniform(0, 1100, size=n), x + rng.normal(size=n)

    _, death, _, risk = draw(400_000)
    truth = float(roc_auc_score(death <= 730, risk))
    values: dict[str, list[float]] = {"auc_2y": [], "auc_2y_known": []}
    early = []
    for _ in range(reps):
        _, death, cens, risk = draw(patients)
        t, e = np.minimum(death, cens), (death <= cens).astype(float)
        early.append(np.mean((t < 730) & (e == 0)))
        for k, v in compute_metrics("survival", np.c_[t, e], risk, list(values)).items():
            values[k].append(v)
    rows = []
    for k, label in (("auc_2y", "IPCW 2-year AUC (auc_2y)"), ("auc_2y_known", "2-year AUC dropping early censoring (auc_2y_known)")):
        v = np.array(values[k])
        rows.append((f"bias_{k}", f"bias of the {label}, {patients} patients, {np.mean(early):.0%} censored before 730 d (true {truth:.3f})", float(v.mean() - truth), float(v.std(ddof=1) / np.sqrt(reps)), reps, "0"))
    return rows
