"""Audited loading of zoo weights: the release's container and key layout, and nothing silently skipped.

:func:`load_audited` accepts the checkpoint of a card's :class:`~lesionbench.baselines.zoo._zoo.WeightsFile`
(safetensors, or ``torch.load(weights_only=True)`` with only the card's ``safe_globals``), unwraps its
container, drops only the card's ignored key patterns, strips the prefix, and refuses anything missing,
unexpected, mis-shaped or non-finite, naming every key.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lesionbench.baselines.zoo._card import WeightsFile, ZooModel
from lesionbench.benchmark.errors import WeightsError


logger = logging.getLogger(__name__)


def read_checkpoint(path: str | Path, weights: WeightsFile | None = None) -> Any:
    """A checkpoint file: safetensors (``.safetensors``) or ``torch.load(weights_only=True)`` with only the
    card's ``safe_globals`` allowed; clear errors for files that are neither."""
    return read_checkpoint_and_digest(path, weights)[0]


def read_checkpoint_and_digest(path: str | Path, weights: WeightsFile | None = None) -> tuple[Any, str]:
    """:func:`read_checkpoint` and the sha256 of the bytes it loaded, from one read of the file (a file
    swapped in under the same path between hashing and loading cannot slip through)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        import hashlib

        from safetensors import SafetensorError
        from safetensors.torch import load

        from lesionbench.benchmark.encoders.weights import read_bytes_once

        data = read_bytes_once(path)  # one bounded read of a regular file: these bytes are hashed and loaded
        try:
            return load(data), hashlib.sha256(data).hexdigest()
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} could not be read as safetensors ({type(exc).__name__}: {exc}); the file is damaged or not weights.") from exc
    import importlib

    import torch

    from lesionbench.benchmark.encoders.weights import read_checkpoint as read_torch_checkpoint

    allowed = []
    for dotted in (weights.safe_globals if weights else ()):
        mod, _, attr = dotted.rpartition(".")
        allowed.append(getattr(importlib.import_module(mod), attr))
    try:
        with torch.serialization.safe_globals(allowed):
            return read_torch_checkpoint(path)
    except WeightsError as exc:
        try:  # lists the classes the file would rebuild, without executing anything
            unsafe = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) - {f"{c.__module__}.{c.__qualname__}" for c in allowed})
        except Exception:  # noqa: BLE001 - only a better message is lost
            unsafe = []
        if not unsafe:
            raise
        raise WeightsError(
            f"{path} holds Python objects of {unsafe}, which weights_only loading refuses. Only the classes named in the "
            f"card's WeightsFile.safe_globals ({list(weights.safe_globals) if weights else []}) are allowed; a file with others "
            "is not the released checkpoint (or the card must name them after review)."
        ) from exc


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap(checkpoint: Any, weights: WeightsFile, *, source: str) -> tuple[dict[str, Any], list[str]]:
    """The network's state dict inside ``checkpoint`` (container unwrapped, ignored keys dropped, prefix
    stripped, keys renamed) and the list of ignored keys."""
    obj = checkpoint
    if not _is_state_dict(obj):
        for key in weights.containers:
            if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            top = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise WeightsError(
                f"{source}: no state dict found (tried the containers {list(weights.containers)}; top level: {top}). "
                f"Use the released {weights.filename} ({weights.where})."
            )
    sd = dict(obj)
    ignored = sorted(k for k in sd if any(fnmatch.fnmatchcase(k, p) for p in weights.ignored))
    kept = {k: v for k, v in sd.items() if k not in set(ignored)}
    p = weights.prefix
    if p and any(k.startswith(p) for k in kept):
        kept = {(k[len(p) :] if k.startswith(p) else f"<no prefix {p!r}> {k}"): v for k, v in kept.items()}
    for old, new in weights.rename:
        kept = {k.replace(old, new): v for k, v in kept.items()}
    return kept, ignored


def check_finite(state_dict: Mapping[str, Any], *, source: str) -> None:
    """Raise :class:`~lesionbench.benchmark.encoders.weights.NonFiniteWeightsError` naming every tensor with NaN or
    infinite values (the harness's one check, shared with FMCIB's loader)."""
    from lesionbench.benchmark.encoders.weights import check_finite_state_dict

    check_finite_state_dict(state_dict, source)


def audit(network: Any, state_dict: Mapping[str, Any], *, source: str, model: str) -> None:
    """Raise :class:`WeightsError` naming every missing, unexpected or mis-shaped key."""
    from lesionbench.benchmark.encoders.weights import key_problems

    expected = network.state_dict()
    problems = key_problems(expected, state_dict)
    if problems:
        raise WeightsError(f"{source} does not fit the {model} network ({len(expected)} tensors): " + "; ".join(problems) + ".")


def load_audited(network: Any, checkpoint: Any, model: ZooModel, *, source: str, assign: bool = False) -> int:
    """Load ``checkpoint`` (a path, a checkpoint object or a state dict) into ``network`` strictly, as the
    card's :class:`WeightsFile` describes; return the number of tensors loaded. Nothing is loaded unless
    every network tensor is present with its shape, nothing else is left, and every value is finite.
    ``assign=True`` adopts the checkpoint's tensors (a network built on the meta device)."""
    if isinstance(checkpoint, (str, Path)):
        checkpoint = read_checkpoint(checkpoint, model.weights)
    sd, ignored = unwrap(checkpoint, model.weights, source=source)
    audit(network, sd, source=source, model=model.name)
    check_finite(sd, source=source)
    expected = network.state_dict()
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True, assign=assign)
    logger.info("%s: loaded %d tensors from %s (%d checkpoint keys deliberately ignored)", model.name, len(sd), source, len(ignored))
    return len(sd)
