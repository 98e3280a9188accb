"""The installed package's version, in a module of its own so that any layer can read it without
importing the top-level package's API."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lesionbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
