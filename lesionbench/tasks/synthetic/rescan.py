"""Synthetic cohort, part 5a: a patient's rescan (same anatomy, lesions and labels, rigidly shifted by
1-3 mm, a new noise draw of the same level), drawn from the cohort's seed and the patient index. The
cohort's generator calls it for the test-retest twin (:mod:`lesionbench.tasks.synthetic.retest`)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Range of the rigid shift between scan and rescan (mm).
RETEST_SHIFT_MM = (1.0, 3.0)
_SHIFT_STREAM, _NOISE_STREAM = 7, 8


def retest_shift(seed: int, index: int) -> np.ndarray:
    """The rescan's rigid shift (mm, canonical x, y, z) of patient ``index``."""
    rng = np.random.default_rng([seed, _SHIFT_STREAM, index])
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v) * rng.uniform(*RETEST_SHIFT_MM)


def rescan(seed: int, index: int, geo: Any, hu: np.ndarray, labels: np.ndarray, lesions: list[tuple[Any, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[tuple[Any, np.ndarray]], np.ndarray]:
    """The rescan of a patient's noise-free volume: shifted volume, masks and lesion centres, and its noise."""
    from scipy import ndimage

    shift = retest_shift(seed, index)
    vox = shift / np.asarray(geo.spacing)  # canonical arrays are [x, y, z]
    moved = ndimage.shift(hu, vox, order=1, mode="nearest").astype(np.float32)
    moved_labels = ndimage.shift(labels, vox, order=0, mode="constant", cval=0)
    noise = np.random.default_rng([seed, _NOISE_STREAM, index]).standard_normal(hu.shape, dtype=np.float32)
    return moved, moved_labels, [(plan, centre + shift) for plan, centre in lesions], noise
