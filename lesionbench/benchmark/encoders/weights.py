"""Loading model weights that come from strangers: one clear error for anything that is not a checkpoint,
a digest of exactly the bytes that were loaded, and no non-finite parameters.

Shared by every encoder that loads a PyTorch checkpoint (FMCIB and the model-zoo encoders):

- :func:`load_checkpoint`: ``torch.load(weights_only=True)`` (tensors and plain containers only, never
  code); every failure of torch on a file that is not a checkpoint (random bytes, a text file, a truncated
  download, a pickle of objects) becomes one :class:`~lesionbench.benchmark.errors.WeightsError` naming the
  file and what a valid checkpoint is.
- :func:`read_checkpoint`: the same, plus the sha256 of the file's content. The file is read once into
  memory (bounded by the size ``fstat`` gives, so a file that grows meanwhile is refused), and those very
  bytes are hashed and deserialised: a checkpoint rewritten in place between hashing and loading cannot
  have its features cached under the other one's digest.
- Before deserialising, a zip checkpoint's directory is checked: ``torch.save`` stores its records
  uncompressed, so a compressed record (a zip bomb: 1 MB that inflates to gigabytes) or records larger
  than the file are refused before anything is allocated.
- :func:`check_finite_state_dict`: NaN or infinite parameters are a load error naming the tensors (an
  all-NaN encoder would otherwise give all-NaN features and a silent exit 0).
- :func:`key_problems`: integer or boolean tensors given for floating-point parameters are a problem
  naming them (a cast would turn a quantised or mangled checkpoint into a silently different network).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import zipfile
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
    unexpected and mis-shaped keys, and integer or bool tensors for floating-point parameters, each group as
    one phrase naming (up to ten of) the keys. Empty: it fits."""
    import torch

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    bad_shape = sorted(
        f"{k} {tuple(state_dict[k].shape) if isinstance(state_dict[k], torch.Tensor) else type(state_dict[k]).__name__} "
        f"(expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(state_dict)
        if not isinstance(state_dict[k], torch.Tensor) or tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    bad_type = sorted(
        f"{k} {str(state_dict[k].dtype).removeprefix('torch.')} (expected {str(expected[k].dtype).removeprefix('torch.')})"
        for k in set(expected) & set(state_dict)
        if isinstance(state_dict[k], torch.Tensor) and isinstance(expected[k], torch.Tensor)
        and (expected[k].is_floating_point() or expected[k].is_complex())
        and not (state_dict[k].is_floating_point() or state_dict[k].is_complex())
    )
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad_shape), ("wrongly typed (integer or bool for a floating-point parameter)", bad_type)):
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
    return read_checkpoint(path, hint=hint)[0]


def read_checkpoint(path: str | Path, *, hint: str = "") -> tuple[Any, str]:
    """``(checkpoint, sha256 of the file)``: the file is read once into memory and exactly those bytes are
    hashed and deserialised (a file rewritten under the same path meanwhile cannot slip through); a zip
    checkpoint with compressed or oversized records is refused before it is inflated."""
    path = Path(path)
    data = read_bytes_once(path, hint)
    digest = hashlib.sha256(data).hexdigest()
    _check_zip_records(data, str(path), hint)
    return _torch_load(io.BytesIO(data), str(path), hint), digest


def read_bytes_once(path: Path, hint: str = "") -> bytes:
    """The whole content of the regular file ``path``, from one open file, bounded by the size ``fstat``
    gave (a file that grows or shrinks while it is read is refused; a FIFO or device never blocks)."""
    _check_file(path, hint)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise WeightsError(f"weights file {path} cannot be opened ({exc.strerror or exc}). " + (hint or VALID_CHECKPOINT)) from None
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device after the check
            raise WeightsError(f"weights file {path} is not a regular file. " + (hint or VALID_CHECKPOINT))
        data = f.read(st.st_size + 1)
    if len(data) != st.st_size:
        raise WeightsError(
            f"weights file {path} changed while it was read ({st.st_size} bytes, then {len(data)}{'+' if len(data) > st.st_size else ''}). "
            "Wait until it is completely written (a download or copy under way?) and run again."
        )
    return data


def _check_zip_records(data: bytes, source: str, hint: str) -> None:
    """Refuse a zip checkpoint whose records are compressed or add up to more than the file: torch.save
    writes them stored, so either is a crafted file that would allocate far more memory than its size."""
    if not data.startswith(b"PK\x03\x04"):
        return  # not a zip (the legacy format, or not a checkpoint: torch says which)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return  # torch's own reader reports the damage
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    total = sum(i.file_size for i in infos)
    if packed or total > len(data):
        why = (f"{len(packed)} compressed record(s) ({', '.join(packed[:3])})" if packed else "") or (
            f"records of {total} bytes in a file of {len(data)} bytes")
        raise WeightsError(
            f"{source} is not a checkpoint torch.save() writes: {why}; torch.save stores records uncompressed, so the file "
            f"would inflate to {total} bytes in memory. Use the released weights file. " + (hint or VALID_CHECKPOINT)
        )


def _check_file(path: Path, hint: str) -> None:
    if not path.is_file():
        if path.is_dir():
            what = "is a folder, not a weights file"
        elif path.exists():
            what = "is not a regular file (a FIFO, socket or device)"
        else:
            what = "not found"
        raise WeightsError(f"weights file {path} {what}. " + (hint or VALID_CHECKPOINT))
