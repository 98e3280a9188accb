"""Where the work of a sweep runs when not in this process: the :class:`Executor` contract.

The core runs everything locally (in order, or in ``jobs`` worker processes). A caller that wants the
work elsewhere, e.g. on Dask workers (:class:`lesionbench.scaleout.sweep.DaskExecutor`), hands an executor to
:func:`lesionbench.benchmark.scoring.scorer.evaluate`; the core never imports scale-out code itself.
The numbers must not depend on the executor: it only decides where the same functions are called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class Executor(Protocol):
    """Runs feature extraction and (fraction, seed) runs somewhere other than this process."""

    def extract_features(self, manifest: pd.DataFrame, encoder: Any, *, cache_dir: Any, batch_size: int | None, progress: bool) -> np.ndarray:
        """Features of every manifest row, in manifest order, as
        :func:`lesionbench.benchmark.encoders.features.extract_features` computes them."""
        ...

    def score_runs(self, plan: Any, provider: Any, rdir: Path, todo: list[tuple[int, Any]], score_one: Callable[..., Any]) -> Iterator[Any]:
        """``score_one(plan, provider, rdir, slot, run)`` of every ``(slot, run)`` in ``todo``, yielded as they finish."""
        ...


__all__ = ["Executor"]
