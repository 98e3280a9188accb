"""Loading model weights that come from strangers: one clear error for anything that is not a checkpoint,
a digest of exactly the bytes that were loaded, and no non-finite parameters.

Shared by every encoder that loads a PyTorch checkpoint (FMCIB and the model-zoo encoders):

- :func:`load_checkpoint`: ``torch.load(weights_only=True)`` (tensors and plain containers only, never
  code); every failure of torch on a file that is not a checkpoint (random bytes, a text file, a truncated
  download, a pickle of objects) becomes one :class:`~lesionbench.benchmark.errors.WeightsError` naming the
  file and what a valid checkpoint is.
- :func:`read_checkpoint`: the same, plus the sha256 of the file's content, hashed from the same open file
  the checkpoint is then read from, so the digest that keys a feature cache is that of the weights in use
  (never one remembered by path, size or modification time).
- :func:`check_finite_state_dict`: NaN or infinite parameters are a load error naming the tensors (an
  all-NaN encoder would otherwise give all-NaN features and a silent exit 0).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lesionbench.benchmark.errors import WeightsError

logger = logging.getLogger(__name__)

#: What a loadable checkpoint is, for error messages.
VALID_CHECKPOINT = (
    "A valid checkpoint is a file written by torch.save() of a dict of tensors (a state dict, or e.g. "
    "{'state_dict': ...}), loadable with torch.load(path, weights_only=True)."
)
#: Non-finite tensors named in full in an error; the rest are counted.
MAX_TENSORS_LISTED = 10


class NonFiniteWeightsError(WeightsError):
    """A checkpoint whose parameters hold NaN or infinite values; ``tensors`` names them."""

    def __init__(self, source: str, tensors: list[str]):
        self.source = source
        self.tensors = list(tensors)
        shown = ", ".join(tensors[:MAX_TENSORS_LISTED])
        more = f" and {len(tensors) - MAX_TENSORS_LISTED} more" if len(tensors) > MAX_TENSORS_LISTED else ""
        super().__init__(
            f"{source}: {len(tensors)} tensor(s) hold NaN or infinite values: {shown}{more}. The checkpoint is "
            "damaged or comes from a diverged training run; its features would be meaningless. Use an intact "
            "checkpoint (e.g. an earlier epoch, or re-download the released weights)."
        )


def check_finite_state_dict(state_dict: Mapping[str, Any], source: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming every floating-point tensor of ``state_dict`` that holds
    a NaN or an infinite value. Tensors without data (the ``meta`` device) and non-tensors are skipped."""
    import torch

    bad = []
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or value.is_meta or not (value.is_floating_point() or value.is_complex()):
            continue
        if value.device.type == "cpu" and value.dtype not in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            # numpy's isfinite: ~0.1 s for 300 MB of float32 here, torch.isfinite(...).all() ~5 s on 2 busy cores
            finite = bool(np.isfinite(value.detach().numpy()).all())
        else:
            finite = bool(torch.isfinite(value).all())
        if not finite:
            bad.append(str(name))
    if bad:
        raise NonFiniteWeightsError(source, bad)


def key_problems(expected: Mapping[str, Any], state_dict: Mapping[str, Any]) -> list[str]:
    """Every way ``state_dict`` fails to fit a network whose own state dict is ``expected``: the missing,
    unexpected and mis-shaped keys, each group as one phrase naming (up to ten of) the keys. Empty: it fits."""
    import torch

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    bad_shape = sorted(
        f"{k} {tuple(state_dict[k].shape) if isinstance(state_dict[k], torch.Tensor) else type(state_dict[k]).__name__} "
        f"(expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(state_dict)
        if not isinstance(state_dict[k], torch.Tensor) or tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad_shape)):
        if keys:
            shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
            problems.append(f"{len(keys)} {what} key(s): {shown}")
    return problems


def _torch_load(f: str | BinaryIO, source: str, hint: str) -> Any:
    import pickle
    import warnings

    import torch

    try:
        # not mmap=True: a memory-mapped checkpoint changes under a live encoder if the file is rewritten
        with warnings.catch_warnings():  # local: torch warns about the pickle protocol of files it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(f, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # torch raises IndexError, KeyError, struct.error, ... on arbitrary bytes
        if isinstance(exc, pickle.UnpicklingError):
            # torch's own text advises weights_only=False, which would run code from an untrusted file
            why = "not a PyTorch tensor checkpoint: only tensors and plain containers are loaded (weights_only=True)"
        else:
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise WeightsError(
            f"{source} could not be read as a PyTorch checkpoint ({why}). The file is corrupt, truncated or not a "
            f"weights file. {VALID_CHECKPOINT}" + (f" {hint}" if hint else "")
        ) from None


def load_checkpoint(path: str | Path, *, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any file that is not a checkpoint is one
    :class:`WeightsError` naming it (``hint``: how to get the right file, appended to the message)."""
    path = Path(path)
    _check_file(path, hint)
    with open(path, "rb") as f:
        return _torch_load(f, str(path), hint)


def read_checkpoint(path: str | Path, *, hint: str = "") -> tuple[Any, str]:
    """``(checkpoint, sha256 of the file)``: as :func:`load_checkpoint`, hashing the content first from the
    same open file (a file swapped in under the same path between hashing and loading cannot slip through)."""
    path = Path(path)
    _check_file(path, hint)
    with open(path, "rb") as f:
        h = hashlib.sha256()
        while chunk := f.read(1 << 24):
            h.update(chunk)
        f.seek(0)
        digest = h.hexdigest()
        return _torch_load(f, str(path), hint), digest


def _check_file(path: Path, hint: str) -> None:
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "not found"
        raise WeightsError(f"weights file {path} {what}. " + (hint or VALID_CHECKPOINT))
