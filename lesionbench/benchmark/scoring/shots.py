"""k-shot training sets: k labelled lesions per class (or a total budget), seeded, patient-grouped, nested.

A shot is one lesion; no two shots come from the same patient (lesions of one patient are correlated,
and a patient in a few-shot set would count twice). For each seed one draw sequence is built from
``np.random.default_rng([seed, <task version key>, stream])`` over the patients of the split (sorted
by id before shuffling, so the manifest's row order does not matter):

* per class, the patients holding a lesion of that class, in a seeded random order, each with one of
  its lesions of that class chosen at random (survival: the class is the 2-year outcome, died within
  two years or alive at two years; a lesion censored before 730 days is never a shot);
* round by round, each class (rarest first) takes the next patient of its queue that no earlier shot
  used. Shot ``r`` of a class depends only on the rounds before it.

``k`` shots per class are the first ``k`` rounds; a total budget of ``n`` is the first ``n`` shots of
the sequence (classes as balanced as the budget allows). So the draws are nested (the 5-shot set holds
the 1-shot set), each a pure function of (task version, k, seed) and of the split's own rows: the labels
of other splits, the test split's included, never change them. A class with fewer patients than ``k``
is a :class:`SplitError` naming the class.

Validation under k-shot (:func:`draw_val_shots`): the same number of shots, by the same rules, from
the validation split on its own stream. A run is tuned (C, k, threshold, early stopping) on those shots
only, never on a validation split many times its size; when the validation split cannot supply them, the
run falls back to cross-validation on its shots (see :mod:`lesionbench.benchmark.scoring.sweep`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, SplitError
from lesionbench.benchmark.scoring.splits import Subset, _class_names, _lesion_classes, _rows, _version_key
from lesionbench.benchmark.types import Split, TaskMeta

#: Random streams of the k-shot draws (the fractions use () and (1,)).
_STREAMS = {Split.TRAIN.value: (2,), Split.VAL.value: (3,)}
#: "class": k shots per class; "total": a budget of n shots over all classes.
SHOT_MODES: tuple[str, ...] = ("class", "total")


def check_shots(shots: Sequence[int], mode: str) -> None:
    """One :class:`ConfigurationError` for shot counts that are not distinct whole numbers >= 1."""
    if mode not in SHOT_MODES:
        raise ConfigurationError(f"shots_per must be 'class' (k shots per class) or 'total' (a budget over all classes); got {mode!r}.")
    shots = list(shots)
    if not shots:
        raise ConfigurationError("Give at least one shot count, e.g. --shots 1 5 10 or --shots-total 48.")
    bad = [s for s in shots if isinstance(s, bool) or not float(s).is_integer() or int(s) < 1]
    if bad:
        raise ConfigurationError(f"Shot counts must be whole numbers >= 1; got {bad}. Use e.g. --shots 1 5 10.")
    twice = sorted({int(s) for s in shots if shots.count(s) > 1})
    if twice:
        raise ConfigurationError(f"Each shot count may be given once; {twice} repeated. Leave out the repeats.")


def shot_sequence(manifest: pd.DataFrame, meta: TaskMeta, seed: int, *, split: str = Split.TRAIN.value) -> list[tuple[int, str, str]]:
    """The seeded draw sequence of ``split``: (class, lesion id, patient id) per shot, round by round."""
    rows = _rows(manifest, meta, split)
    classes = _lesion_classes(rows, meta)
    lesions = rows["lesion_id"].astype(str).to_numpy()
    patients = rows["patient_id"].astype(str).to_numpy()
    rng = np.random.default_rng([int(seed), _version_key(meta), *_STREAMS[split]])
    queues: dict[int, list[tuple[str, str]]] = {}
    for c in sorted(set(classes[classes >= 0].tolist())):
        holders = sorted(set(patients[classes == c]))
        order = rng.permutation(len(holders))
        queue = []
        for i in order:
            own = sorted(lesions[(patients == holders[i]) & (classes == c)])
            queue.append((own[int(rng.integers(len(own)))], holders[i]))
        queues[c] = queue
    used: set[str] = set()
    pos = dict.fromkeys(queues, 0)
    seq: list[tuple[int, str, str]] = []
    rarest_first = sorted(queues, key=lambda c: (len(queues[c]), c))
    while True:
        took = False
        for c in rarest_first:
            q = queues[c]
            while pos[c] < len(q) and q[pos[c]][1] in used:
                pos[c] += 1
            if pos[c] < len(q):
                lesion, patient = q[pos[c]]
                used.add(patient)
                seq.append((c, lesion, patient))
                pos[c] += 1
                took = True
        if not took:
            return seq


def _take(seq: list[tuple[int, str, str]], n_classes: int, k: int, mode: str) -> list[tuple[int, str, str]] | None:
    """The first ``k`` shots of each class (mode "class") or the first ``k`` shots (mode "total"); None when there are too few."""
    if mode == "total":
        return seq[:k] if len(seq) >= k else None
    picked, count = [], dict.fromkeys(range(n_classes), 0)
    for shot in seq:
        if count.get(shot[0], k) < k:
            picked.append(shot)
            count[shot[0]] += 1
    return picked if all(v == k for v in count.values()) else None


def _subset(manifest: pd.DataFrame, meta: TaskMeta, picked: list[tuple[int, str, str]], k: int, seed: int, mode: str, split: str) -> Subset:
    rows = _rows(manifest, meta, split)
    chosen = {lesion for _, lesion, _ in picked}
    inside = rows[rows["lesion_id"].astype(str).isin(chosen)]  # manifest order, like the fraction subsets
    return Subset(len(inside) / len(rows), int(seed), tuple(inside["lesion_id"].astype(str)), tuple(inside["patient_id"].astype(str)),
                  len(rows), split, shots=int(k), shots_per=mode)  # fmt: skip


def draw_shots(manifest: pd.DataFrame, meta: TaskMeta, *, shots: Sequence[int], seed: int = 0, mode: str = "class") -> dict[int, Subset]:
    """The nested k-shot training sets of one seed, keyed by k; :class:`SplitError` when a class cannot supply k patients."""
    check_shots(shots, mode)
    names = _class_names(meta)
    seq = shot_sequence(manifest, meta, seed)
    out: dict[int, Subset] = {}
    for k in sorted(int(s) for s in shots):
        picked = _take(seq, len(names), k, mode)
        if picked is None:
            have = {names[c]: sum(1 for s in seq if s[0] == c) for c in range(len(names))}
            raise SplitError(
                f"Task {meta.name!r}: {k} shot(s) {'per class' if mode == 'class' else 'in total'} cannot be drawn from the train split "
                f"(one lesion per patient; patients available per class: {have}). Use fewer shots."
            )
        out[k] = _subset(manifest, meta, picked, k, seed, mode, Split.TRAIN.value)
    return out


def draw_val_shots(manifest: pd.DataFrame, meta: TaskMeta, *, shots: Sequence[int], seed: int = 0, mode: str = "class") -> dict[int, Subset]:
    """The validation shots of one seed, keyed by k (same rules, own stream); a k the validation split cannot supply is left out."""
    check_shots(shots, mode)
    if not (manifest["split"] == Split.VAL.value).any():
        return {}
    seq = shot_sequence(manifest, meta, seed, split=Split.VAL.value)
    out: dict[int, Subset] = {}
    for k in sorted(int(s) for s in shots):
        picked = _take(seq, len(_class_names(meta)), k, mode)
        if picked is not None:
            out[k] = _subset(manifest, meta, picked, k, seed, mode, Split.VAL.value)
    return out


__all__ = ["SHOT_MODES", "check_shots", "draw_shots", "draw_val_shots", "shot_sequence"]
