"""Where lesionbench keeps data, caches and downloaded weights (all overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables, documented in the README.
DATA_ENV = "LESIONBENCH_DATA"
CACHE_ENV = "LESIONBENCH_CACHE"
WEIGHTS_ENV = "LESIONBENCH_WEIGHTS"
#: Set to 1 to forbid every download (model weights, hub files); HF_HUB_OFFLINE is honoured too.
OFFLINE_ENV = "LESIONBENCH_OFFLINE"


def data_root() -> Path:
    """Root of prepared task data: ``$LESIONBENCH_DATA`` or ``~/.cache/lesionbench/data``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "lesionbench" / "data").expanduser()


def cache_root() -> Path:
    """Root of feature caches and weights: ``$LESIONBENCH_CACHE`` or ``~/.cache/lesionbench/cache``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lesionbench" / "cache").expanduser()


def weights_dir() -> Path:
    """Where downloaded weights live: ``$LESIONBENCH_WEIGHTS`` or ``$LESIONBENCH_CACHE/weights``."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else cache_root() / "weights"


def offline() -> bool:
    """Whether downloads are forbidden (``$LESIONBENCH_OFFLINE`` or ``$HF_HUB_OFFLINE`` set to 1/true/yes)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", OFFLINE_ENV))
