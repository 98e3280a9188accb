"""Training helpers of the supervised-from-scratch baselines (:mod:`lesionbench.baselines.supervised_cnn`) and of
fine-tuning (:mod:`lesionbench.baselines.finetune`): label checks, class weights, exact batch-norm statistics,
batches, the reference augmentations, and the thread and seed scopes that leave the caller's state as it was."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lesionbench.benchmark.errors import ConfigurationError


def resolve_device(device: str | torch.device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigurationError(f"Unknown device {device!r} ({exc}); use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device={device!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
    return dev


def check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ConfigurationError(f"{what} must be a 1-D array with one label per patch ({n}), got shape {y.shape}.")
    if n == 0:
        raise ConfigurationError(f"{what} is empty: there is nothing to train on.")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ConfigurationError(
                f"{what} contain NaN: drop undecided rows first (survival: censored before 2 years)."
            )
        if not np.all(y == np.round(y)):
            raise ConfigurationError(f"{what} must be integer class indices 0..k-1, got non-integer values.")
    elif y.dtype.kind not in "iub":
        raise ConfigurationError(f"{what} must be integer class indices 0..k-1, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ConfigurationError(f"{what} must be class indices >= 0, got {int(y.min())}.")
    return y


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's "balanced" class weights; classes absent from ``y`` get weight 0 (no samples anyway)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, dtype=np.float32)
    w[present] = len(y) / (present.sum() * counts[present])
    return w


@torch.no_grad()
def precise_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> None:
    """Recompute batch-norm running statistics as exact averages over the (unaugmented) training patches.

    With ~10-100 patches a network sees only tens of optimiser steps, and the default exponential
    running averages lag far behind the weights: evaluation-mode outputs (validation loss, features)
    then swing wildly from epoch to epoch. Exact statistics of the current weights fix that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches below
    model.train()
    for idx in batches(np.arange(len(x)), batch_size):
        model(x[idx].to(device))
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.train(was_training)


def batches(order: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Consecutive batches of ``order``; a last batch of one joins the one before it: batch norm in training
    mode cannot normalise a single sample whose deepest feature maps are one voxel (FMCIB's trunk on small patches)."""
    starts = list(range(0, len(order), size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield order[start : starts[i + 1] if i + 1 < len(starts) else len(order)]


def augmentations(seed: int) -> Any:
    """The reference augmentations, each applied with p = 0.5, seeded locally (no global RNG)."""
    from monai.transforms import Compose, RandAffine, RandFlip, RandGaussianSmooth, RandRotate90

    aug = Compose(
        [
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            RandFlip(prob=0.5, spatial_axis=2),
            RandRotate90(prob=0.5, spatial_axes=(1, 2)),  # axial plane: (D, H, W) = (z, y, x)
            RandAffine(
                prob=0.5,
                rotate_range=(math.radians(15),) * 3,
                scale_range=(0.1,) * 3,
                translate_range=(2,) * 3,
                padding_mode="border",
            ),
            RandGaussianSmooth(prob=0.5, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0)),
        ]
    )
    aug.set_random_state(seed=seed)
    return aug


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads for the block only (None: leave the setting alone)."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and force deterministic kernels for the block only; restore the caller's state after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
