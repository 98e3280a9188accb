"""Probes: what the benchmark fits on frozen features, scikit-learn shaped (``clone()`` per subset).

* :class:`LinearProbe` (:mod:`lesionbench.benchmark.scoring.probes.linear`) - the FMCIB protocol: feature
  cleaning and standardisation on the training subset, logistic regression with C chosen by the
  task's main metric on the validation split (grouped CV on the training subset without one), ties
  to the middle of the plateau; binary: the operating threshold chosen on validation (or on
  out-of-fold training predictions), never on test labels.
* :class:`SurvivalProbe` (:mod:`lesionbench.benchmark.scoring.probes.survival`) - the 2-year label through a
  :class:`LinearProbe`, plus an elastic-net Cox model on all features (penalty chosen on validation)
  for the C-index and the Kaplan-Meier risk groups.
* :class:`KNNProbe` / :class:`KNNSurvivalProbe` (:mod:`lesionbench.benchmark.scoring.probes.knn`) - cosine,
  distance-weighted k-NN on the same cleaned, standardised features, k chosen on validation; survival
  through the 2-year label.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.base import BaseEstimator

from lesionbench.benchmark.errors import UnknownNameError, did_you_mean
from lesionbench.benchmark.scoring.probes.knn import KNNProbe, KNNSurvivalProbe
from lesionbench.benchmark.scoring.probes.linear import C_GRID, C_REFINE, LinearProbe
from lesionbench.benchmark.scoring.probes.base import FeatureFilter, ProbeError
from lesionbench.benchmark.scoring.probes.survival import SurvivalProbe
from lesionbench.benchmark.types import TaskKind

#: Probe names accepted by the scorer and the CLI.
PROBES: tuple[str, ...] = ("linear", "knn")


def check_probe(name: str) -> None:
    """Raise :class:`UnknownNameError` (with the closest name) unless ``name`` is in :data:`PROBES`."""
    if name not in PROBES:
        raise UnknownNameError(f"Unknown probe {name!r}.{did_you_mean(name, PROBES)} Available: {', '.join(PROBES)}.")


def make_probe(name: str, kind: TaskKind, *, metric: str, n_classes: int, c_grid: Sequence[float] = C_GRID, refine: bool = True, random_state: int = 0) -> BaseEstimator:
    """A fresh, unfitted probe for a task kind (``clone`` it per subset)."""
    check_probe(name)
    if name == "knn":
        if TaskKind(kind) == TaskKind.SURVIVAL:
            return KNNSurvivalProbe(random_state=random_state)
        return KNNProbe(metric=metric, n_classes=n_classes, random_state=random_state)
    if TaskKind(kind) == TaskKind.SURVIVAL:
        return SurvivalProbe(c_grid=tuple(c_grid), refine=refine, random_state=random_state)
    return LinearProbe(metric=metric, n_classes=n_classes, c_grid=tuple(c_grid), refine=refine, random_state=random_state)


__all__ = ["C_GRID", "C_REFINE", "FeatureFilter", "KNNProbe", "KNNSurvivalProbe", "LinearProbe", "ProbeError", "SurvivalProbe", "check_probe", "make_probe"]
