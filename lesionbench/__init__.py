"""lesionbench: an open benchmark harness for 3D CT foundation models on cancer-imaging biomarker tasks."""

from __future__ import annotations

from lesionbench._version import __version__

from lesionbench import _moved

_moved.install()  # the old paths of modules moved in 0.2 keep working for one release, with a warning

__all__ = ["__version__"]
