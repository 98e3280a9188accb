"""lesionbench: an open benchmark harness for 3D CT foundation models on cancer-imaging biomarker tasks.

The Python API (:mod:`lesionbench.api`) is available here: ``lesionbench.get_tasks()``, ``get_task``,
``get_encoders``, ``get_encoder``, ``extract_features``, ``evaluate``, ``compare``, ``load_results``.
They are imported on first use, so ``import lesionbench`` stays light and the harness never imports upward.
"""

from __future__ import annotations

from typing import Any

from lesionbench._version import __version__

from lesionbench import _moved

_moved.install()  # the old paths of modules moved in 0.2 keep working for one release, with a warning

_API = ("compare", "evaluate", "extract_features", "get_encoder", "get_encoders", "get_task", "get_tasks", "load_results")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """The API functions, imported from :mod:`lesionbench.api` when first asked for (PEP 562)."""
    if name in _API:
        from lesionbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'lesionbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
