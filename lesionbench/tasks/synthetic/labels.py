"""Synthetic cohort, part 3: the balanced site and malignancy designs, survival times and patient splits."""

from __future__ import annotations

import functools
import math

import numpy as np

from lesionbench.tasks.synthetic.lesions import SURVIVAL_A, SURVIVAL_D


def _survival(rng: np.random.Generator, aggressiveness: list[float], max_diameter_mm: float) -> tuple[int, int]:
    """One patient's (time in days, event): Weibull death time driven by its lesions' aggressiveness
    and its largest lesion, censored by independent uniform follow-up (see the package docstring)."""
    lp = (SURVIVAL_A * float(np.mean(aggressiveness)) + SURVIVAL_D * math.log(max_diameter_mm / 20.0)
          + 0.1 * (len(aggressiveness) - 1) + 0.4 * float(rng.standard_normal()))
    shape_k = 1.4
    t_death = 1200.0 * (float(rng.exponential()) / math.exp(lp)) ** (1.0 / shape_k)
    t_cens = float(rng.uniform(200.0, 3000.0))
    return int(max(1, round(min(t_death, t_cens)))), int(t_death <= t_cens)


def _patient_id(index: int) -> str:
    return f"P{index:05d}"


@functools.lru_cache(maxsize=4096)
def _block_perm(seed: int, stream: int, block: int, n: int = 8) -> tuple[int, ...]:
    return tuple(int(v) for v in np.random.default_rng([seed, stream, block]).permutation(n))


def _block_choice(seed: int, stream: int, index: int, n: int = 8) -> int:
    """Patient ``index``'s slot in its block of ``n``: every block holds each slot once."""
    return _block_perm(seed, stream, index // n, n)[index % n]


def _site_design(seed: int, index: int, slot: int) -> int:
    """Site of patient ``index``'s lesion number ``slot`` (0-3): each slot cycles through all 8 sites
    in every block of 8 patients (slot 0 in the stream the split is stratified on)."""
    return _block_choice(seed, 2 if slot == 0 else 20 + slot, index)


def _malignancy_design(seed: int, index: int, slot: int, site: int) -> int:
    """Designed label of lesion ``slot`` of patient ``index`` at ``site``, balanced within each split.

    The patients whose lesion ``slot`` is designed at ``site`` (one per block of 8, see
    :func:`_site_design`) are paired in index order within their split; each pair is one benign,
    one malignant (which one by a seeded coin). So in train, val and test alike every (lesion
    number, site) stratum is half malignant (up to one lesion, and up to lesions a patient does not
    have): malignancy is independent of the site, and a probe that learns the site gains nothing.
    Balancing within each split, not over the whole cohort, matters: a cohort-wide balance would
    make the test split's site-malignancy pattern the mirror image of the training split's, and a
    site-aware probe would score below chance.
    """
    split = _split_of(seed, index)
    stream = 2 if slot == 0 else 20 + slot
    j = 0  # earlier patients in this split whose lesion `slot` is designed at `site`
    for block in range(index // 8):
        partner = block * 8 + _block_perm(seed, stream, block).index(site)
        j += _split_of(seed, partner) == split
    coin = int(np.random.default_rng([seed, 5, slot, site, ("train", "val", "test").index(split), j // 2]).integers(2))
    return (coin + j) % 2


def _split_of(seed: int, index: int) -> str:
    """Patient-level split, stratified on the first lesion's site (prefix-stable in the cohort size).

    Among the patients whose first lesion has site ``c``, the k-th gets slot ``k % 5`` of a seeded
    permutation of (train, train, train, val, test) drawn per group of 5.
    """
    site = _block_choice(seed, 2, index)
    k = index // 8  # one patient per site in every block of 8
    return _split_pattern(seed, site, k // 5)[k % 5]


@functools.lru_cache(maxsize=4096)
def _split_pattern(seed: int, site: int, group: int) -> tuple[str, ...]:
    return tuple(str(v) for v in np.random.default_rng([seed, 4, site, group]).permutation(["train", "train", "train", "val", "test"]))

