"""Fine-tuning adapter: any encoder with a torch network becomes trainable on each training subset.

An encoder is :class:`Adaptable` when it exposes ``torch_module()``: the ``nn.Module`` that maps its
patches, exactly as the harness cuts them for ``meta.patch`` (``(n, channels, D, H, W)`` float32), to
``(n, meta.feature_dim)`` features. FMCIB (``fmcib``, ``fmcib-random-init``) is; a zoo or third-party
encoder joins by adding that one method.

:func:`finetune` wraps it in the training path of the supervised baselines
(:class:`lesionbench.baselines.supervised_cnn.SupervisedEncoder`), so a fine-tuned encoder is trained
exactly as ``supervised-cnn`` is, only from the pre-trained weights instead of a random initialisation:
per (fraction, seed) run the scorer deep-copies it and calls ``fit`` on the training subset (survival:
the 2-year label); ``fit`` copies the pristine pre-trained network (the original is never touched),
adds a seeded linear head, and trains both end to end with class-weighted cross-entropy, the reference
augmentations (p = 0.5 each), AdamW, exact batch-norm statistics before each validation, and early
stopping on the run's validation rows (best epoch restored). Deterministic on CPU under the seed,
without touching global RNG state. The fine-tuned network's features then go through the run's probe
(linear or k-NN) like any encoder's, and its own head's predictions are scored too
(``params["head_metrics"]``).

Results are the protocol ``"finetune"`` (:mod:`lesionbench.benchmark.scoring.protocols`): their own result
folder (``<encoder>/finetune-<probe>``), resume key, MLflow params and leaderboard identity; the
encoder keeps its name, and its metadata says ``trainable`` and carries the training settings, so a
fine-tuned row is never mixed with the frozen-feature rows of the same encoder.

GPU memory (FMCIB's 3D ResNet-50, widen 2, 184.5 M parameters, 50^3 patches, float32, AdamW), measured
on CPU by ``benchmarks/finetune_memory.py`` (parameter count from the module; activations as the bytes
autograd saves for the backward pass): weights, gradients and the two AdamW moments (16 bytes per
parameter) plus the pristine and best-epoch weight copies (4 bytes each) take 4.12 GiB; the saved
activations 95.6 MiB per patch. Batch 16 needs about 5.6 GiB, batch 32 about 7.1 GiB, plus the
framework's workspace. CPU fine-tuning of this network is for tests only (tiny patches, one epoch).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Protocol, runtime_checkable

from torch import nn

from lesionbench.baselines.supervised_cnn import SupervisedEncoder, TrainingConfig
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.types import EncoderMeta

logger = logging.getLogger(__name__)

__all__ = ["Adaptable", "FINETUNE_DEFAULTS", "finetune", "is_adaptable"]

#: Training defaults for fine-tuning on a GPU (FMCIB-sized networks); the tests pass tiny ones.
FINETUNE_DEFAULTS: dict[str, Any] = {"epochs": 50, "batch_size": 16, "lr": 1e-4, "weight_decay": 1e-4, "patience": 10, "seed": 0, "augment": True, "threads": None}


@runtime_checkable
class Adaptable(Protocol):
    """An encoder whose network can be fine-tuned: ``torch_module()`` maps its patches to its features."""

    meta: EncoderMeta

    def torch_module(self) -> nn.Module: ...


def is_adaptable(encoder: Any) -> bool:
    return callable(getattr(encoder, "torch_module", None)) and hasattr(encoder, "meta")


class _Trunk(nn.Module):
    """The encoder's network with flat ``(n, feature_dim)`` output, as the training path expects."""

    def __init__(self, module: nn.Module, out_features: int):
        super().__init__()
        self.module = module
        self.out_features = int(out_features)

    def forward(self, x):
        return self.module(x).reshape(len(x), -1)


class _PretrainedCopy:
    """A trunk factory that returns a fresh copy of the pristine pre-trained network at each call.

    Deep-copying the factory (the scorer copies the encoder once per run) shares the pristine network
    instead of copying it: it is never trained, only copied, so one copy in memory serves every run.
    """

    def __init__(self, module: nn.Module, out_features: int):
        self.module = module.eval()
        self.out_features = int(out_features)

    def __call__(self) -> nn.Module:
        return _Trunk(copy.deepcopy(self.module).train(), self.out_features)

    def __deepcopy__(self, memo: dict) -> _PretrainedCopy:
        return self


def finetune(encoder: Any, *, device: str | None = None, **training: Any) -> SupervisedEncoder:
    """``encoder`` (:class:`Adaptable`) as a trainable encoder that fine-tunes its network on each training subset.

    ``training``: :class:`TrainingConfig` fields (``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
    ``patience``, ``seed``, ``augment``, ``threads``; defaults :data:`FINETUNE_DEFAULTS`). ``device``:
    default the encoder's own device, else CUDA when available.
    """
    if not is_adaptable(encoder):
        raise ConfigurationError(
            f"Encoder {getattr(getattr(encoder, 'meta', None), 'name', type(encoder).__name__)!r} cannot be fine-tuned: it exposes no "
            "torch_module() (the nn.Module that maps its patches to its features). Add that method to the encoder, or score its "
            "frozen features without --adapt."
        )
    unknown = sorted(set(training) - set(FINETUNE_DEFAULTS))
    if unknown:
        raise ConfigurationError(f"Unknown fine-tuning option(s) {unknown}; available: {', '.join(FINETUNE_DEFAULTS)}.")
    meta: EncoderMeta = encoder.meta
    if meta.trainable:
        raise ConfigurationError(f"Encoder {meta.name!r} is already trained on each subset; fine-tuning applies to pre-trained (frozen) encoders.")
    module = encoder.torch_module()
    if not isinstance(module, nn.Module):
        raise ConfigurationError(f"{meta.name}.torch_module() returned {type(module).__name__}, not a torch.nn.Module.")
    opts = {**FINETUNE_DEFAULTS, **training}
    config = TrainingConfig(
        epochs=int(opts["epochs"]), batch_size=int(opts["batch_size"]), lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"]),
        patience=int(opts["patience"]), seed=int(opts["seed"]), augment=bool(opts["augment"]), threads=None if opts["threads"] is None else int(opts["threads"]),
    )  # fmt: skip
    device = device or str(getattr(encoder, "device", "") or "auto")
    adapted = SupervisedEncoder(
        name=meta.name,
        version=meta.version,
        description=f"Fine-tuned end to end on each training subset from: {meta.description}",
        trunk_factory=_PretrainedCopy(module, meta.feature_dim),
        feature_dim=meta.feature_dim,
        input_transform="none",
        config=config,
        device=device,
        citation=meta.citation,
    )
    # the pre-trained encoder's identity (weights digest, patch recipe, settings) plus how it was fine-tuned
    adapted.meta = dataclasses.replace(
        meta, trainable=True, description=adapted.meta.description,
        settings=(*meta.settings, ("adapt", "finetune"), *(kv for kv in adapted.meta.settings if kv[0] != "input")),
    )  # fmt: skip
    return adapted
