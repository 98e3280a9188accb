"""Helpers for the submission tests: a task whose labels only the harness holds, predictions of known quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from _lb_fixtures import fake_scores, make_manifest
from lesionbench.benchmark.types import TaskMeta


class FakeTask:
    """A task whose labels only the harness holds (the Task protocol: meta + manifest())."""

    def __init__(self, meta: TaskMeta, seed: int = 0):
        self.meta = meta
        self._manifest = make_manifest(meta, seed=seed)

    def manifest(self) -> pd.DataFrame:
        return self._manifest.copy()


def predictions(task: FakeTask, quality: float = 1.2, seed: int = 5) -> pd.DataFrame:
    """lesion_id + score columns for every test lesion, from a model of signal strength ``quality``."""
    test = task.manifest().query("split == 'test'").reset_index(drop=True)
    scores = fake_scores(task.meta, test, quality, np.random.default_rng(seed))
    return pd.concat([test[["lesion_id"]], scores], axis=1)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def tree(root: Path) -> list[str]:
    """Every path below ``root`` (empty when it does not exist), to prove that nothing was written."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
