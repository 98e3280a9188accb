"""Supervised-from-scratch baselines: 3D CNNs trained on each limited-label training subset.

The paper's "supervised from scratch" reference, through the same harness as every frozen encoder:
the scorer calls :meth:`SupervisedEncoder.fit` on the training subset of each (fraction, seed) run
(survival tasks: the 2-year label), with the validation split for early stopping, then
:meth:`SupervisedEncoder.encode` gives penultimate-layer features for the shared linear probe, and
:meth:`SupervisedEncoder.predict_proba` the network's own predictions (logged beside the probe's).

Two registered encoders:

``supervised-cnn`` (the demo's default; trains in seconds on a CPU)
    A light residual 3D CNN from MONAI building blocks. The patch is converted back to HU and given
    as two channels, two standard CT windows: wide (-1024..1024 HU, lung and bone) and soft tissue
    (W 400, L 40), where lesion density differences are large enough to learn from ~100 patches in a
    few epochs. Both are averaged over 2x2x2 blocks (50^3 at 1 mm -> 25^3 at 2 mm): lesion-level
    texture survives, and the augmentation and the network cost 8x less. Then a stride-2
    convolution stem (16 channels, 13^3), two stride-2 :class:`monai.networks.blocks.ResidualUnit`
    blocks (32 and 64 channels, 7^3 and 4^3; batch norm, PReLU), global average pooling (the 64-d
    features), dropout 0.2 and a linear head. 0.28 M parameters.
    Defaults: 15 epochs, batch 16, AdamW lr 3e-3, early stopping patience 5 epochs, and one torch
    thread (``threads=1``, restored afterwards): MONAI's per-patch augmentations and a network this
    small gain nothing from intra-op threads, and with two threads on a busy two-core machine the
    augmentation alone was measured 30x slower. Measured speed: ``benchmarks/supervised_speed.py``.

``supervised-resnet50`` (``--full``; needs a GPU to be practical)
    FMCIB's trunk, ``monai.networks.nets.resnet50(n_input_channels=1, widen_factor=2,
    conv1_t_stride=2, feed_forward=False, bias_downsample=True)`` (4096-d features, 184.5 M
    parameters) from random initialisation, plus a linear head, on the FMCIB input unchanged
    ((HU + 1024) / 3072, 50^3 at 1 mm). Defaults: 100 epochs, batch 16, AdamW lr 1e-4, patience 15.

Training, both: the reference augmentations, each with p = 0.5 (MONAI ``RandFlip`` per axis,
``RandRotate90`` in the axial plane, a small ``RandAffine``: rotation up to 15 degrees, scaling
up to 10 %, translation up to 2 voxels; ``RandGaussianSmooth``, sigma 0.25-1 voxel); class-weighted
cross-entropy (weights ``n / (k * n_c)`` over the classes present, scikit-learn's "balanced");
early stopping on the validation split's class-balanced cross-entropy, restoring the best epoch
(without ``val``, all epochs run and the last weights are kept). Binary tasks use two logits.
Batch-norm statistics are recomputed exactly over the unaugmented training patches before each
validation (and after the last epoch): with so few optimiser steps the usual running averages lag
the weights, and evaluation-mode outputs would swing from epoch to epoch.

Determinism: everything random is drawn from ``seed`` (weight initialisation and dropout under
:func:`torch.random.fork_rng`, so the caller's global RNG state is left exactly as it was; the batch
order from a local :func:`numpy.random.default_rng`; the augmentations through MONAI's
``set_random_state``), with deterministic algorithms switched on only for the duration of the call.
On a CPU the same seed gives bit-identical features; on CUDA some 3D kernels have no deterministic
implementation (PyTorch warns once), so results may differ in the last digits.

Encoding before ``fit`` uses the seeded random initialisation and logs a warning: it is a legitimate
"random features" control, never a silent substitute for a trained model.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lesionbench.baselines._supervised_nets import LightCNN, ResNet50Trunk
from lesionbench.baselines._training import augmentations, balanced_weights, batches, check_labels, precise_batch_norm, resolve_device, seeded, torch_threads
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.encoders.plugins import ENCODERS
from lesionbench.benchmark.types import EncoderMeta, PatchSpec

logger = logging.getLogger(__name__)

__all__ = ["SupervisedEncoder", "TrainingConfig", "LightCNN", "supervised_cnn", "supervised_resnet50"]

_AUGMENTATION = "RandFlip(x,y,z) RandRotate90(axial) RandAffine(15deg,10%,2vox) RandGaussianSmooth(0.25-1) p=0.5"


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines how a :class:`SupervisedEncoder` trains (part of its fingerprint)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 0
    augment: bool = True
    #: torch intra-op threads during fit/encode (restored afterwards); None keeps torch's setting.
    threads: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            problems.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            problems.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.patience, int) and self.patience >= 1):
            problems.append(f"patience must be an integer >= 1, got {self.patience!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            problems.append(f"threads must be an integer >= 1 or None, got {self.threads!r}")
        if not isinstance(self.seed, int):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if problems:
            raise ConfigurationError("Invalid training options: " + "; ".join(problems) + ".")


class SupervisedEncoder:
    """A trainable encoder: a 3D CNN trunk plus a linear head, trained from scratch by :meth:`fit`.

    Parameters
    ----------
    name, version, description:
        Registry identity (see :func:`supervised_cnn`, :func:`supervised_resnet50`).
    trunk_factory:
        Builds the feature trunk (an ``nn.Module`` with ``out_features``); called under the seed.
    input_transform:
        ``"windows_pool2"`` (two CT windows as channels, 2x2x2 average pooling), ``"fmcib"``
        (the (HU + 1024) / 3072 patch unchanged) or ``"none"`` (every channel as cut; a fine-tuned
        encoder's own input, :mod:`lesionbench.baselines.finetune`).
    config:
        Training options (:class:`TrainingConfig`).
    device:
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    n_classes:
        Number of classes; by default ``max(label) + 1`` over the labels given to :meth:`fit`.
    """

    def __init__(
        self,
        *,
        name: str,
        version: str,
        description: str,
        trunk_factory: Callable[[], nn.Module],
        feature_dim: int,
        input_transform: str,
        config: TrainingConfig,
        device: str = "auto",
        n_classes: int | None = None,
        citation: str = "",
    ):
        if input_transform not in ("windows_pool2", "fmcib", "none"):
            raise ConfigurationError(
                f"Unknown input_transform {input_transform!r}; use 'windows_pool2', 'fmcib' or 'none'."
            )
        if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 2):
            raise ConfigurationError(f"n_classes must be an integer >= 2 (or None to infer it), got {n_classes!r}.")
        self.config = config
        self.device = resolve_device(device)
        self.n_classes = n_classes
        self._trunk_factory = trunk_factory
        self._input_transform = input_transform
        self.meta = EncoderMeta(
            name=name,
            version=version,
            feature_dim=feature_dim,
            patch=PatchSpec(size=(50, 50, 50), spacing_mm=(1.0, 1.0, 1.0), method="fmcib", with_mask=False),
            description=description,
            citation=citation,
            trainable=True,
            settings=(
                ("epochs", str(config.epochs)),
                ("batch_size", str(config.batch_size)),
                ("lr", repr(float(config.lr))),
                ("weight_decay", repr(float(config.weight_decay))),
                ("patience", str(config.patience)),
                ("seed", str(config.seed)),
                ("augmentation", _AUGMENTATION if config.augment else "none"),
                ("input", input_transform),
            ),
        )
        # Built lazily (under the seed) so that deep copies made by the scorer before fit are cheap.
        self._trunk: nn.Module | None = None
        self._head: nn.Linear | None = None
        self._init_trunk: nn.Module | None = None
        self.classes_: np.ndarray | None = None
        #: Per-epoch training history of the last fit: dicts with epoch, train_loss, val_loss, seconds.
        self.history_: list[dict[str, float]] = []
        self.best_epoch_: int | None = None
        self._warned_unfitted = False

    # ------------------------------------------------------------------ public API
    @property
    def is_fitted(self) -> bool:
        return self._head is not None

    def fit(
        self,
        patches: np.ndarray,
        labels: np.ndarray,
        *,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        seed: int | None = None,
    ) -> SupervisedEncoder:
        """Train trunk and head from the seeded random initialisation on ``patches``/``labels``.

        ``labels`` are integer class indices ``0..k-1`` (binary: 0/1; survival: the 2-year label with
        undecided rows already removed). ``val`` = ``(patches, labels)`` drives early stopping.
        ``seed``: the run's seed (the scorer passes each (fraction, seed) run's); initialisation, dropout,
        augmentation and batch order are drawn from ``config.seed + seed`` (``training_seed_``), so the
        spread over a sweep's seeds includes the initialisation. Run seed 0 trains as before.
        """
        cfg = self.config
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ConfigurationError(f"seed must be an integer or None, got {seed!r}.")
        train_seed = int(cfg.seed) + int(seed or 0)
        self.training_seed_ = train_seed
        x = self._prepare(patches, "patches")
        y = check_labels(labels, len(x), "labels")
        val_xy = None
        if val is not None:
            if not (isinstance(val, tuple) and len(val) == 2):
                raise ConfigurationError("val must be a (patches, labels) tuple, or None.")
            vx = self._prepare(val[0], "val patches")
            vy = check_labels(val[1], len(vx), "val labels")
            val_xy = (vx, vy) if len(vx) else None
        n_classes = max(int(y.max()) + 1, 2, self.n_classes or 0, int(val_xy[1].max()) + 1 if val_xy else 0)
        self.classes_ = np.arange(n_classes)
        weights = balanced_weights(y, n_classes)

        t_start = time.perf_counter()
        self.history_ = []
        with torch_threads(cfg.threads), seeded(train_seed, self.device):
            trunk = self._trunk_factory().to(self.device)
            head = nn.Linear(trunk.out_features, n_classes).to(self.device)
            model = nn.ModuleDict({"trunk": trunk, "head": head})
            dropout = nn.Dropout(p=0.2)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, device=self.device))
            augment = augmentations(train_seed) if cfg.augment else None
            order_rng = np.random.default_rng(train_seed)
            best_loss, best_state, bad_epochs = math.inf, None, 0
            self.best_epoch_ = None
            for epoch in range(cfg.epochs):
                t0 = time.perf_counter()
                model.train()
                total, count = 0.0, 0
                for idx in batches(order_rng.permutation(len(x)), cfg.batch_size):
                    xb = x[idx]
                    if augment is not None:
                        xb = torch.stack([torch.as_tensor(augment(xi)).as_subclass(torch.Tensor) for xi in xb])
                    xb = xb.to(self.device)
                    yb = torch.as_tensor(y[idx], device=self.device)
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(head(dropout(trunk(xb))), yb)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                record = {"epoch": epoch, "train_loss": total / count, "val_loss": float("nan")}
                if val_xy is not None or epoch == cfg.epochs - 1:
                    precise_batch_norm(trunk, x, cfg.batch_size, self.device)
                if val_xy is not None:
                    val_loss = self._val_loss(trunk, head, *val_xy)
                    record["val_loss"] = val_loss
                    if val_loss < best_loss - 1e-6:
                        best_loss, bad_epochs, self.best_epoch_ = val_loss, 0, epoch
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        bad_epochs += 1
                record["seconds"] = time.perf_counter() - t0
                self.history_.append(record)
                if val_xy is not None and bad_epochs >= cfg.patience:
                    logger.debug("%s: early stop after epoch %d (best %d).", self.meta.name, epoch, self.best_epoch_)
                    break
            if best_state is not None:
                model.load_state_dict(best_state)
        model.eval()
        self._trunk, self._head = trunk, head
        logger.info(
            "%s: trained on %d patches (%d classes) for %d epochs%s in %.1f s on %s.",
            self.meta.name, len(x), n_classes, len(self.history_),
            f", best val epoch {self.best_epoch_}" if self.best_epoch_ is not None else "",
            time.perf_counter() - t_start, self.device,
        )
        return self

    def encode(self, patches: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``(n, feature_dim)`` float32, in input order."""
        trunk = self._trunk if self._trunk is not None else self._initial_trunk()
        with torch_threads(self.config.threads):
            return self._run(trunk, self._prepare(patches, "patches"), head=None).astype(np.float32)

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        """The network's own class probabilities ``(n, n_classes)`` (columns follow ``classes_``)."""
        if self._trunk is None or self._head is None:
            raise ConfigurationError(
                f"{self.meta.name}: predict_proba needs a trained network; call fit(patches, labels) first."
            )
        with torch_threads(self.config.threads):
            logits = self._run(self._trunk, self._prepare(patches, "patches"), head=self._head)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    # ------------------------------------------------------------------ internals
    def _initial_trunk(self) -> nn.Module:
        if not self._warned_unfitted:
            logger.warning(
                "%s: encode() before fit() gives the features of the seeded random initialisation "
                "(seed %d), not of a trained network.", self.meta.name, self.config.seed,
            )
            self._warned_unfitted = True
        if self._init_trunk is None:
            with seeded(self.config.seed, self.device):
                self._init_trunk = self._trunk_factory().to(self.device).eval()
        return self._init_trunk

    def _prepare(self, patches: np.ndarray, what: str) -> torch.Tensor:
        arr = np.asarray(patches)
        if arr.ndim != 5 or arr.shape[1] < 1:
            raise ConfigurationError(
                f"{self.meta.name}: {what} must be shaped (n, channels, D, H, W) as cut for PatchSpec "
                f"{self.meta.patch.size}, got shape {arr.shape}."
            )
        first = np.ascontiguousarray(arr if self._input_transform == "none" else arr[:, :1], dtype=np.float32)
        x = torch.from_numpy(first if first.flags.writeable else first.copy())  # e.g. a memory map shared by parallel runs
        if not torch.isfinite(x).all():
            raise ConfigurationError(f"{self.meta.name}: {what} contain NaN or infinite values.")
        if self._input_transform == "windows_pool2":
            # Back to HU, then two standard CT windows as channels: a wide one (-1024..1024 HU, lung and
            # bone) and the soft-tissue window (W 400, L 40), where lesion density differences are large
            # enough for a network trained from scratch on ~100 patches to pick up in a few epochs.
            hu = x * 3072.0 - 1024.0
            x = torch.cat([hu.clamp(-1024.0, 1024.0) / 1024.0, (hu.clamp(-160.0, 240.0) - 40.0) / 200.0], dim=1)
            if min(x.shape[2:]) >= 2:
                x = torch.nn.functional.avg_pool3d(x, kernel_size=2, ceil_mode=True)
        return x

    @torch.no_grad()
    def _run(self, trunk: nn.Module, x: torch.Tensor, *, head: nn.Module | None) -> np.ndarray:
        trunk.eval()
        out = []
        step = max(self.config.batch_size, 32)
        for i in range(0, len(x), step):
            f = trunk(x[i : i + step].to(self.device))
            out.append((head(f) if head is not None else f).float().cpu())
        if not out:
            width = head.out_features if head is not None else self.meta.feature_dim
            return np.zeros((0, width), dtype=np.float32)
        return torch.cat(out).numpy()

    @torch.no_grad()
    def _val_loss(self, trunk: nn.Module, head: nn.Module, vx: torch.Tensor, vy: np.ndarray) -> float:
        # Class-balanced over the validation split's own classes, like the tasks' balanced metrics.
        logits = torch.from_numpy(self._run(trunk, vx, head=head))
        w = torch.as_tensor(balanced_weights(vy, logits.shape[1]))
        return float(nn.functional.cross_entropy(logits, torch.as_tensor(vy), weight=w))

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(name={self.meta.name!r}, epochs={c.epochs}, batch_size={c.batch_size}, "
            f"lr={c.lr}, seed={c.seed}, device={str(self.device)!r}, fitted={self.is_fitted})"
        )


# ---------------------------------------------------------------------- registered factories
@ENCODERS.register("supervised-cnn")
def supervised_cnn(
    *,
    epochs: int = 15,
    batch_size: int = 16,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    seed: int = 0,
    device: str = "auto",
    augment: bool = True,
    n_classes: int | None = None,
    threads: int | None = 1,
) -> SupervisedEncoder:
    """The light supervised 3D CNN (the demo's default supervised baseline; see the module docstring)."""
    channels = (16, 32, 64)
    return SupervisedEncoder(
        name="supervised-cnn",
        version="1",
        description=(
            "Supervised from scratch: light residual 3D CNN (MONAI blocks; wide and soft-tissue CT windows "
            "at 25^3, 2 mm; 64-d penultimate features) trained on each training subset."
        ),
        trunk_factory=functools.partial(LightCNN, 2, channels),
        feature_dim=channels[-1],
        input_transform="windows_pool2",
        config=TrainingConfig(
            epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), weight_decay=float(weight_decay),
            patience=int(patience), seed=int(seed), augment=bool(augment),
            threads=None if threads is None else int(threads),
        ),
        device=device,
        n_classes=n_classes,
    )


@ENCODERS.register("supervised-resnet50")
def supervised_resnet50(
    *,
    epochs: int = 100,
    batch_size: int = 16,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    patience: int = 15,
    seed: int = 0,
    device: str = "auto",
    augment: bool = True,
    n_classes: int | None = None,
    threads: int | None = None,
) -> SupervisedEncoder:
    """FMCIB's architecture trained from random initialisation on each subset (the paper's baseline)."""
    return SupervisedEncoder(
        name="supervised-resnet50",
        version="1",
        description=(
            "Supervised from scratch: FMCIB's 3D ResNet-50 (widen 2, stride-2 stem, 4096-d) from random "
            "initialisation plus a linear head, trained on each training subset."
        ),
        trunk_factory=ResNet50Trunk,
        feature_dim=4096,
        input_transform="fmcib",
        config=TrainingConfig(
            epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), weight_decay=float(weight_decay),
            patience=int(patience), seed=int(seed), augment=bool(augment),
            threads=None if threads is None else int(threads),
        ),
        device=device,
        n_classes=n_classes,
        citation="Pai et al., Nature Machine Intelligence 2024, doi 10.1038/s42256-024-00807-9",
    )
