"""lesionbench: an open benchmark harness for 3D CT foundation models on cancer-imaging biomarker tasks."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lesionbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
