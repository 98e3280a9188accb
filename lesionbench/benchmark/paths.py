"""Where lesionbench keeps data, caches and downloaded weights (all overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables, documented in the README.
DATA_ENV = "LESIONBENCH_DATA"
CACHE_ENV = "LESIONBENCH_CACHE"


def data_root() -> Path:
    """Root of prepared task data: ``$LESIONBENCH_DATA`` or ``~/.cache/lesionbench/data``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "lesionbench" / "data").expanduser()


def cache_root() -> Path:
    """Root of feature caches and weights: ``$LESIONBENCH_CACHE`` or ``~/.cache/lesionbench/cache``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lesionbench" / "cache").expanduser()
