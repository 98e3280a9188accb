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

Validation subsets (:func:`draw_val_subsets`). A limited-label run must not tune C, the threshold or
early stopping on a validation split many times the size of its training subset. By default the
validation split is subsampled with the same fraction, by the same rules (patient-grouped,
stratified, nested within a seed), from its own stream ``default_rng([seed, <task version key>, 1])``,
so it is a pure function of (task version, fraction, seed) and independent of the training draw. A
validation subset too small to hold a class that the validation split has is not an error here:
:func:`missing_classes` names the classes, and the scorer then chooses C by cross-validation on the
training subset for that run, with a warning (see :mod:`lesionbench.benchmark.scoring.sweep`).
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

from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.errors import ConfigurationError, SplitError
from lesionbench.benchmark.host import atomic_write
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
    #: The split it is drawn from: ``"train"``, or ``"val"`` for a validation subset.
    split: str = Split.TRAIN.value
    #: k-shot sets (:mod:`lesionbench.benchmark.scoring.shots`): the shot count, and whether it is per class or in total (0, "": a fraction).
    shots: int = 0
    shots_per: str = ""

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
        """A file-name stem such as ``frac0.1_seed3`` (``frac0.1_seed3_val`` for a validation subset; k-shot sets:
        ``shots5_seed3`` per class, ``budget48_seed3`` in total)."""
        if self.shots:
            stem = f"{'shots' if self.shots_per == 'class' else 'budget'}{self.shots}_seed{self.seed}"
        else:
            stem = f"frac{self.fraction:g}_seed{self.seed}"
        return stem if self.split == Split.TRAIN.value else f"{stem}_{self.split}"

    def to_frame(self) -> pd.DataFrame:
        n = self.n_lesions
        shots = {"shots": [self.shots] * n, "shots_per": [self.shots_per] * n} if self.shots else {}
        return pd.DataFrame(
            {
                **shots,
                "lesion_id": list(self.lesion_ids),
                "patient_id": list(self.patient_ids),
                "fraction": [self.fraction] * n,
                "seed": [self.seed] * n,
                "split": [self.split] * n,
                "subset_hash": [self.hash] * n,
            }
        )

    def write(self, path: Path) -> Path:
        """Write the subset as CSV (lesion_id, patient_id, fraction, seed, split, subset_hash)."""
        frame = self.to_frame()
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_subset(path: Path, *, n_train_total: int = 0) -> Subset:
    """Read a subset file written by :meth:`Subset.write`; the stored hash is checked."""
    df = pd.read_csv(path, dtype={"lesion_id": str, "patient_id": str})
    if df.empty:
        raise SplitError(f"{path}: subset file has no lesions. Re-run `lesionbench run` to rewrite it.")
    split = str(df["split"].iloc[0]) if "split" in df.columns else Split.TRAIN.value
    shots = (int(df["shots"].iloc[0]), str(df["shots_per"].iloc[0])) if "shots" in df.columns else (0, "")
    sub = Subset(float(df["fraction"].iloc[0]), int(df["seed"].iloc[0]), tuple(df["lesion_id"]), tuple(df["patient_id"]), n_train_total, split, *shots)
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


#: Random streams: the training draw, and the validation draw (independent of it).
_STREAMS = {Split.TRAIN.value: (), Split.VAL.value: (1,)}


def patient_order(manifest: pd.DataFrame, meta: TaskMeta, seed: int, *, split: str = Split.TRAIN.value) -> list[str]:
    """The seeded, stratified draw order of the patients of ``split`` (every subset of ``seed`` is a prefix)."""
    train = _rows(manifest, meta, split)
    strata = pd.Series(_lesion_strata(train, meta), index=train.index)
    patients = train["patient_id"].astype(str)
    # the commonest stratum of each patient's lesions (ties: the first in sorted order)
    per_patient = (
        pd.DataFrame({"p": patients, "s": strata}).groupby(["p", "s"]).size().reset_index(name="n").sort_values(["p", "n", "s"], ascending=[True, False, True])
    )
    pstrat = per_patient.drop_duplicates("p").set_index("p")["s"]
    rng = np.random.default_rng([int(seed), _version_key(meta), *_STREAMS[split]])
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
    return _rows(manifest, meta, Split.TRAIN.value)


def _rows(manifest: pd.DataFrame, meta: TaskMeta, split: str) -> pd.DataFrame:
    train = manifest[manifest["split"] == split]
    if train.empty:
        raise SplitError(f"Task {meta.name!r} has no lesion with split {split!r}; a probe needs {split} lesions. Check the manifest's split column.")
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
    out: dict[float, Subset] = {}
    for f, (sub, k) in _prefixes(manifest, meta, fractions, seed, Split.TRAIN.value).items():
        have = set(_lesion_classes(sub, meta).tolist())
        for c in required:
            if c not in have:
                carriers = np.unique(train["patient_id"].astype(str).to_numpy()[classes == c])
                raise SplitError(
                    f"Task {meta.name!r}: the {f:.0%} training subset (seed {seed}, {len(sub)} of {len(train)} lesions) cannot contain "
                    f"class {names[c]!r}: the train split has {int((classes == c).sum())} lesion(s) of it in {len(carriers)} patient(s), "
                    f"and the subset has room for only {k} patient(s). Use larger fractions (e.g. --fractions 1.0 0.5) for this task."
                )
        out[f] = Subset(f, int(seed), tuple(sub["lesion_id"].astype(str)), tuple(sub["patient_id"].astype(str)), len(train))
    return out


def _prefixes(manifest: pd.DataFrame, meta: TaskMeta, fractions: Sequence[float], seed: int, split: str) -> dict[float, tuple[pd.DataFrame, int]]:
    """Per fraction: the rows of ``split`` in the shortest prefix of the patient order holding ``ceil(f x n)`` lesions, and its patient count."""
    rows = _rows(manifest, meta, split)
    order = patient_order(manifest, meta, seed, split=split)
    pat = rows["patient_id"].astype(str).to_numpy()
    n_per_patient = pd.Series(pat).value_counts()
    cum = np.cumsum([n_per_patient[p] for p in order])
    out: dict[float, tuple[pd.DataFrame, int]] = {}
    for f in fractions:
        target = max(1, math.ceil(float(f) * len(rows) - 1e-9))
        k = int(np.searchsorted(cum, target) + 1)
        out[float(f)] = (rows[np.isin(pat, order[:k])], k)
    return out


def draw_val_subsets(manifest: pd.DataFrame, meta: TaskMeta, *, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> dict[float, Subset]:
    """The nested validation subsets of one seed, keyed by fraction (the whole validation split at 1.0).

    Same rules as the training subsets, from an independent stream; a class that a subset cannot hold is
    reported by :func:`missing_classes`, not raised. Empty dict when the task has no validation split.
    """
    check_sweep(fractions, [seed])
    if not (manifest["split"] == Split.VAL.value).any():
        return {}
    out: dict[float, Subset] = {}
    for f, (sub, _) in _prefixes(manifest, meta, fractions, seed, Split.VAL.value).items():
        n_val = int((manifest["split"] == Split.VAL.value).sum())
        out[f] = Subset(f, int(seed), tuple(sub["lesion_id"].astype(str)), tuple(sub["patient_id"].astype(str)), n_val, Split.VAL.value)
    return out


def missing_classes(manifest: pd.DataFrame, meta: TaskMeta, subset: Subset) -> list[str]:
    """Names of the classes (survival: 2-year outcomes) present in ``subset``'s split but not in ``subset``."""
    rows = _rows(manifest, meta, subset.split)
    classes = _lesion_classes(rows, meta)
    inside = rows["lesion_id"].astype(str).isin(set(subset.lesion_ids)).to_numpy()
    names = _class_names(meta)
    lost = sorted(set(classes[classes >= 0].tolist()) - set(classes[inside & (classes >= 0)].tolist()))
    return [names[c] if c < len(names) else str(c) for c in lost]


def draw_subset(manifest: pd.DataFrame, meta: TaskMeta, fraction: float, seed: int) -> Subset:
    """One subset; identical to ``draw_subsets(..., seed=seed)[fraction]``."""
    return draw_subsets(manifest, meta, fractions=[fraction], seed=seed)[float(fraction)]
