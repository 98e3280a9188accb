"""Limited-label training subsets and the patient-leakage audit.

A subset is a pure function of (task name and version, fraction, seed, manifest): for each seed one
seeded, patient-grouped, label-stratified ordering of the training patients is drawn from
``np.random.default_rng([seed, <task version key>])`` and every fraction takes a prefix of it. So
subsets are nested within a seed (10% is inside 20%, inside 50%, inside 100%), a subset never depends
on which other fractions or seeds were asked for (unlike MTEB's shared re-shuffled list), and the
row order of the manifest does not matter (patients are sorted by id before shuffling).

How the ordering is built:

* every lesion gets a stratum: its class (classification) or event x time tertile (survival, the
  tertiles of the training split's follow-up times); a patient's stratum is the commonest of its
  lesions' strata;
* within each stratum the patients are shuffled and patient ``r`` of ``n_s`` gets the key
  ``(r + u) / n_s`` with ``u ~ U(0, 1)``; sorting all patients by key interleaves the strata, so any
  prefix holds each stratum in proportion (systematic stratified sampling);
* then, rarest class first, the earliest patient carrying each required class (every class;
  survival: died within two years, alive at two years) is moved to the front, so every subset that
  has room for one patient per class contains every class.

A fraction ``f`` takes patients in that order until the subset holds at least ``ceil(f x n)`` of the
``n`` training lesions. A subset that still misses a class raises :class:`SplitError` naming the class
and the fraction.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError, SplitError
from lesionbench.benchmark.types import Split, TaskKind, TaskMeta

logger = logging.getLogger(__name__)

DEFAULT_FRACTIONS: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Subset:
    """One limited-label training subset: the training lesions of (fraction, seed), in manifest order."""

    fraction: float
    seed: int
    lesion_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    n_train_total: int

    @property
    def n_lesions(self) -> int:
        return len(self.lesion_ids)

    @property
    def n_patients(self) -> int:
        return len(set(self.patient_ids))

    @property
    def hash(self) -> str:
        """Digest of the subset's lesion ids (order-free): equal subsets have equal hashes."""
        return _digest(sorted(self.lesion_ids))

    @property
    def name(self) -> str:
        """A file-name stem such as ``frac0.1_seed3``."""
        return f"frac{self.fraction:g}_seed{self.seed}"

    def to_frame(self) -> pd.DataFrame:
        n = self.n_lesions
        return pd.DataFrame(
            {
                "lesion_id": list(self.lesion_ids),
                "patient_id": list(self.patient_ids),
                "fraction": [self.fraction] * n,
                "seed": [self.seed] * n,
                "subset_hash": [self.hash] * n,
            }
        )

    def write(self, path: Path) -> Path:
        """Write the subset as CSV (lesion_id, patient_id, fraction, seed, subset_hash)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_frame().to_csv(path, index=False)
        return path


def read_subset(path: Path, *, n_train_total: int = 0) -> Subset:
    """Read a subset file written by :meth:`Subset.write`; the stored hash is checked."""
    df = pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str})
    if df.empty:
        raise SplitError(f"{path}: subset file has no lesions. Re-run `lesionbench run` to rewrite it.")
    sub = Subset(float(df["fraction"].iloc[0]), int(df["seed"].iloc[0]), tuple(df["lesion_id"]), tuple(df["patient_id"]), n_train_total)
    if str(df["subset_hash"].iloc[0]) != sub.hash:
        raise SplitError(f"{path}: the lesion ids do not match the stored subset_hash (edited file?). Re-run `lesionbench run`.")
    return sub


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(str(line).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def split_hash(manifest: pd.DataFrame) -> str:
    """Digest of the train/val/test partition (lesion, patient, split), independent of row order."""
    rows = sorted(f"{l}\t{p}\t{s}" for l, p, s in zip(manifest["lesion_id"], manifest["patient_id"], manifest["split"], strict=True))
    return _digest(rows)


# -------------------------------------------------------------------------------- leakage
def leaked_patients(manifest: pd.DataFrame) -> tuple[str, ...]:
    """Patients whose lesions sit in more than one of train / val / test, sorted."""
    n_splits = manifest.groupby(manifest["patient_id"].astype(str))["split"].nunique()
    return tuple(sorted(n_splits.index[n_splits > 1]))


def audit_leakage(manifest: pd.DataFrame, meta: TaskMeta) -> tuple[str, ...]:
    """Check that no patient crosses splits.

    For lesionbench's own splits a leak is a :class:`SplitError`; for a published split
    (``meta.published_split``) the leaked patients are returned (and logged) so they are reported
    with the results.
    """
    leaked = leaked_patients(manifest)
    if not leaked:
        return ()
    shown = ", ".join(leaked[:10]) + (f" and {len(leaked) - 10} more" if len(leaked) > 10 else "")
    if not meta.published_split:
        raise SplitError(
            f"Task {meta.name!r} (version {meta.version}): {len(leaked)} patient(s) have lesions in more than one of "
            f"train/val/test ({shown}). lesionbench's own splits must be grouped by patient: re-create the manifest "
            "(`lesionbench prepare` with the default grouped split), or mark the task as a published split."
        )
    logger.warning(
        "Task %s uses a published split in which %d patient(s) cross train/val/test (%s); reported with the results.",
        meta.name,
        len(leaked),
        shown,
    )
    return leaked


# ------------------------------------------------------------------------------- subsets
def _version_key(meta: TaskMeta) -> int:
    return int(hashlib.sha256(f"{meta.name}\n{meta.version}".encode()).hexdigest()[:12], 16)


def _class_names(meta: TaskMeta) -> list[str]:
    if meta.kind == TaskKind.SURVIVAL:
        return ["alive at 2 years", "died within 2 years"]
    k = max(meta.n_classes, 2) if meta.kind == TaskKind.BINARY else meta.n_classes
    return [meta.class_names[i] if i < len(meta.class_names) else str(i) for i in range(k)]


def _lesion_classes(train: pd.DataFrame, meta: TaskMeta) -> np.ndarray:
    """Per training lesion: the class index whose presence is required (-1 = none, e.g. censored)."""
    if meta.kind == TaskKind.SURVIVAL:
        y2 = two_year_label(train["time"].to_numpy(float), train["event"].to_numpy(float))
        return np.where(np.isfinite(y2), np.nan_to_num(y2), -1).astype(int)
    return train["label"].to_numpy().astype(int)


def _lesion_strata(train: pd.DataFrame, meta: TaskMeta) -> np.ndarray:
    if meta.kind == TaskKind.SURVIVAL:
        t = train["time"].to_numpy(float)
        edges = np.quantile(t, [1 / 3, 2 / 3])
        tertile = np.searchsorted(edges, t, side="right")
        return np.array([f"e{int(e)}t{q}" for e, q in zip(train["event"], tertile, strict=True)])
    return np.array([f"c{int(v)}" for v in train["label"]])


def patient_order(manifest: pd.DataFrame, meta: TaskMeta, seed: int) -> list[str]:
    """The seeded, stratified draw order of the training patients (every subset of ``seed`` is a prefix)."""
    train = _train(manifest, meta)
    strata = pd.Series(_lesion_strata(train, meta), index=train.index)
    patients = train["patient_id"].astype(str)
    # the commonest stratum of each patient's lesions (ties: the first in sorted order)
    per_patient = (
        pd.DataFrame({"p": patients, "s": strata}).groupby(["p", "s"]).size().reset_index(name="n").sort_values(["p", "n", "s"], ascending=[True, False, True])
    )
    pstrat = per_patient.drop_duplicates("p").set_index("p")["s"]
    rng = np.random.default_rng([int(seed), _version_key(meta)])
    keys: dict[str, float] = {}
    for s in sorted(pstrat.unique()):
        members = sorted(pstrat.index[pstrat == s])
        n = len(members)
        ranks = rng.permutation(n)
        u = rng.random(n)
        for m, r, uu in zip(members, ranks, u, strict=True):
            keys[m] = (r + uu) / n
    order = sorted(keys, key=lambda p: (keys[p], p))

    # move the earliest carrier of each required class to the front, rarest class first
    classes = _lesion_classes(train, meta)
    carriers: dict[int, set[str]] = {}
    for p, c in zip(patients, classes, strict=True):
        if c >= 0:
            carriers.setdefault(int(c), set()).add(p)
    front: list[str] = []
    for c in sorted(carriers, key=lambda c: (len(carriers[c]), c)):
        if not carriers[c] & set(front):
            front.append(next(p for p in order if p in carriers[c]))
    in_front = set(front)
    return front + [p for p in order if p not in in_front]


def _train(manifest: pd.DataFrame, meta: TaskMeta) -> pd.DataFrame:
    train = manifest[manifest["split"] == Split.TRAIN.value]
    if train.empty:
        raise SplitError(f"Task {meta.name!r} has no lesion with split 'train'; a probe needs training lesions. Check the manifest's split column.")
    missing = [c for c in meta.label_columns if c not in train.columns]
    if missing:
        raise SplitError(f"Task {meta.name!r}: the manifest lacks label column(s) {missing}; cannot stratify the subsets.")
    return train


def check_sweep(fractions: Sequence[float], seeds: Sequence[int]) -> None:
    """Raise one :class:`ConfigurationError` for fractions outside (0, 1], seeds that are not
    non-negative integers (numpy's generators take no negative seed), or a value given twice
    (a repeated run would be counted twice in the mean and SD across seeds)."""
    fractions, seeds = list(fractions), list(seeds)
    if not fractions:
        raise ConfigurationError("Give at least one training fraction, e.g. --fractions 1.0 0.1.")
    bad = [f for f in fractions if not (0.0 < float(f) <= 1.0)]
    if bad:
        raise ConfigurationError(f"Training fractions must lie in (0, 1]; got {bad}. Use e.g. --fractions 1.0 0.5 0.2 0.1.")
    if not seeds:
        raise ConfigurationError("Give at least one seed, e.g. --seeds 0 1 2.")
    bad_seeds = [s for s in seeds if isinstance(s, bool) or not float(s).is_integer() or int(s) < 0]
    if bad_seeds:
        raise ConfigurationError(f"Seeds must be non-negative integers; got {bad_seeds}. Use e.g. --seeds 0 1 2 3 4.")
    for what, values in (("fraction", [float(f) for f in fractions]), ("seed", [int(s) for s in seeds])):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ConfigurationError(f"Each {what} may be given once; {twice} repeated. Leave out the repeats.")


def draw_subsets(manifest: pd.DataFrame, meta: TaskMeta, *, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> dict[float, Subset]:
    """The nested subsets of one seed, keyed by fraction. Raises :class:`SplitError` if a class cannot be present."""
    check_sweep(fractions, [seed])
    train = _train(manifest, meta)
    classes = _lesion_classes(train, meta)
    names = _class_names(meta)
    required = range(len(names))
    present_in_train = set(classes[classes >= 0].tolist())
    for c in required:
        if c not in present_in_train:
            raise SplitError(
                f"Task {meta.name!r}: class {names[c]!r} has no lesion in the train split, so no training subset can contain it. "
                "Check the labels and the split, or drop the class from the task."
            )
    order = patient_order(manifest, meta, seed)
    pat = train["patient_id"].astype(str).to_numpy()
    n_per_patient = pd.Series(pat).value_counts()
    cum = np.cumsum([n_per_patient[p] for p in order])
    n = len(train)
    out: dict[float, Subset] = {}
    for f in fractions:
        target = max(1, math.ceil(float(f) * n - 1e-9))
        k = int(np.searchsorted(cum, target) + 1)
        chosen = set(order[:k])
        mask = np.isin(pat, list(chosen))
        have = set(classes[mask].tolist())
        for c in required:
            if c not in have:
                carriers = np.unique(pat[classes == c])
                raise SplitError(
                    f"Task {meta.name!r}: the {f:.0%} training subset (seed {seed}, {int(mask.sum())} of {n} lesions) cannot contain "
                    f"class {names[c]!r}: the train split has {int((classes == c).sum())} lesion(s) of it in {len(carriers)} patient(s), "
                    f"and the subset has room for only {k} patient(s). Use larger fractions (e.g. --fractions 1.0 0.5) for this task."
                )
        sub = train[mask]
        out[float(f)] = Subset(float(f), int(seed), tuple(sub["lesion_id"].astype(str)), tuple(sub["patient_id"].astype(str)), n)
    return out


def draw_subset(manifest: pd.DataFrame, meta: TaskMeta, fraction: float, seed: int) -> Subset:
    """One subset; identical to ``draw_subsets(..., seed=seed)[fraction]``."""
    return draw_subsets(manifest, meta, fractions=[fraction], seed=seed)[float(fraction)]
