"""The two plug-in contracts (tasks and encoders) and their registries.

A new task or encoder is one file: a module in ``lesionbench/tasks/`` or ``lesionbench/baselines/`` (or a
sub-package of either whose name does not start with ``_``)
(found automatically), or any module of a third-party distribution that declares an entry point in
the group ``lesionbench.tasks`` / ``lesionbench.encoders``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.encoders.registry import Registry, name_problem
from lesionbench.benchmark.types import EncoderMeta, TaskMeta

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@runtime_checkable
class Task(Protocol):
    """A benchmark task: metadata plus a lesion manifest (see :mod:`lesionbench.benchmark.data.manifest`)."""

    meta: TaskMeta

    def manifest(self) -> pd.DataFrame:
        """One validated row per lesion; ``image_path`` (and ``mask_path``) are absolute."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """A frozen feature extractor.

    ``encode`` maps patches cut by the harness according to ``meta.patch``, shaped
    ``(n, channels, D, H, W)`` float32, to features ``(n, meta.feature_dim)`` float32, in input order.
    """

    meta: EncoderMeta

    def encode(self, patches: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class TrainableEncoder(Encoder, Protocol):
    """An encoder the scorer trains on each limited-label training subset before encoding.

    ``labels`` are the training labels (survival tasks: the 2-year label); ``val`` is an optional
    ``(patches, labels)`` pair of the validation split for early stopping. Test labels are never shown.
    """

    def fit(self, patches: np.ndarray, labels: np.ndarray, *, val: tuple[np.ndarray, np.ndarray] | None = None) -> Any: ...


class _PackageRegistry(Registry):
    """A registry that first imports every module of its built-in package (so one file is enough)."""

    def __init__(self, kind: str, entry_point_group: str, package: str):
        super().__init__(kind, entry_point_group)
        self._package = package
        self._builtins_loaded = False

    def _load_entry_points(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            _import_public_modules(self._package)
        super()._load_entry_points()


def _import_public_modules(package: str) -> None:
    """Import every module of ``package`` and of its sub-packages whose names do not start with ``_``
    (a built-in task or encoder registers itself when its module is imported; ``_`` marks helpers)."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")
            if mod.ispkg:
                _import_public_modules(f"{package}.{mod.name}")


TASKS: Registry[Task] = _PackageRegistry("task", "lesionbench.tasks", "lesionbench.tasks")
ENCODERS: Registry[Encoder] = _PackageRegistry("encoder", "lesionbench.encoders", "lesionbench.baselines")


def get_task(name: str, **options: Any) -> Task:
    """Build the registered task ``name``; ``options`` (such as ``data_dir``) go to its factory."""
    return _build(TASKS, name, options)


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the registered encoder ``name``; ``options`` (such as ``weights``) go to its factory."""
    return _build(ENCODERS, name, options)


def _build(registry: Registry, name: str, options: dict[str, Any]) -> Any:
    factory = registry.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        built = factory(**options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc) or "got an unexpected" in str(exc):
            raise ConfigurationError(
                f"{registry.kind.capitalize()} {name!r} does not take the option(s) {sorted(options)}: {exc}. "
                "Leave out the options it does not support."
            ) from exc
        raise
    meta_name = getattr(getattr(built, "meta", None), "name", name)  # the name results are filed and ranked under
    if (why := name_problem(meta_name)) is not None:
        raise ConfigurationError(f"{registry.kind.capitalize()} {name!r} reports an invalid meta.name: {why}. Fix the plug-in's meta.name (it names its results and leaderboard rows).")
    return built
