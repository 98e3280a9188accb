"""The hidden synthetic cohort: the demo's data that no participant has seen.

It is the ordinary synthetic cohort (:mod:`lesionbench.tasks.synthetic`) generated from a seed that only the
organiser holds: :func:`organiser_seed` draws it once with :mod:`secrets` into a file readable by its owner
only. Results on it are filed under a task version that names a digest of the seed, never the seed itself
(the public cohort's version names its seed), so they never mix with results on the public cohort.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.paths import data_root

logger = logging.getLogger(__name__)

#: Patients of the hidden demo cohort (a small one: CI builds it).
HIDDEN_PATIENTS = 40


def hidden_root() -> Path:
    """``$LESIONBENCH_DATA/hidden``: the organiser's seed file and cohort."""
    return data_root() / "hidden"


def organiser_seed(path: Path | None = None) -> int:
    """The organiser's seed: read from ``path`` (default ``hidden_root()/seed``), drawn and written (mode 0600) if absent."""
    path = Path(path) if path is not None else hidden_root() / "seed"
    if path.is_file():
        text = path.read_text().strip()
        if not text.isdigit():
            raise ConfigurationError(f"{path} must hold one whole number (the organiser's seed); delete it to draw a new one.")
        return int(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = secrets.randbits(62)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{seed}\n")
    logger.info("drew a new organiser seed into %s", path)
    return seed


def seed_digest(seed: int) -> str:
    """What results may say about the seed: a digest that cannot be turned back into a cohort."""
    return hashlib.sha256(f"lesionbench-hidden:{seed}".encode()).hexdigest()[:10]


def hidden_task(name: str = "synthetic_malignancy", *, root: Path | None = None, patients: int = HIDDEN_PATIENTS,
                seed_file: Path | None = None, progress: bool = False) -> Any:  # fmt: skip
    """Synthetic task ``name`` on the hidden cohort (generated on first use), its version naming the seed's digest."""
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.tasks.synthetic import ensure_cohort

    root = Path(root) if root is not None else hidden_root() / "cohort"
    seed = organiser_seed(seed_file if seed_file is not None else root.parent / "seed")
    cohort = ensure_cohort(root, patients=patients, seed=seed, progress=progress)
    task = get_task(name, data_dir=cohort / name)
    base = type(task).meta.version
    task.meta = dataclasses.replace(task.meta, version=f"{base}+hidden-{patients}p-{seed_digest(seed)}")
    return task
