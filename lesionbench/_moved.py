"""Old import paths of modules that moved when the core was split into stages (lesionbench 0.2).

``import lesionbench.benchmark.plugins`` (and every other old path below) still works for one release: it
returns the module at its new home and warns with a :class:`DeprecationWarning` naming it, so third-party
encoders and notebooks keep working while they update. Written by hand because the standard library
has no alias for a moved module: a meta-path finder that hands back the new module object is the
smallest thing that keeps ``import a.b as c``, ``from a.b import x`` and ``mock.patch("a.b.x")`` working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

#: old dotted path -> new dotted path
MOVED: dict[str, str] = {
    "lesionbench.leaderboard._numeric_rows": "lesionbench.leaderboard.submissions._numeric_rows",
    "lesionbench.leaderboard.challenge": "lesionbench.leaderboard.submissions.challenge",
    "lesionbench.leaderboard.organiser": "lesionbench.leaderboard.submissions.organiser",
    "lesionbench.leaderboard.private_dir": "lesionbench.leaderboard.submissions.private_dir",
    "lesionbench.leaderboard.publish": "lesionbench.leaderboard.submissions.publish",
    "lesionbench.leaderboard.submission_file": "lesionbench.leaderboard.submissions.submission_file",
    "lesionbench.leaderboard.submit": "lesionbench.leaderboard.submissions.submit",
    "lesionbench.baselines._medicalnet_net": "lesionbench.baselines.zoo._nets.medicalnet",
    "lesionbench.baselines._merlin_net": "lesionbench.baselines.zoo._nets.merlin",
    "lesionbench.baselines._pasta_net": "lesionbench.baselines.zoo._nets.pasta",
    "lesionbench.baselines._sam_med3d_net": "lesionbench.baselines.zoo._nets.sam_med3d",
    "lesionbench.baselines._spectre_net": "lesionbench.baselines.zoo._nets.spectre",
    "lesionbench.baselines._unet3d": "lesionbench.baselines.zoo._nets.unet3d",
    "lesionbench.baselines._voco_net": "lesionbench.baselines.zoo._nets.voco",
    "lesionbench.baselines._zoo": "lesionbench.baselines.zoo._zoo",
    "lesionbench.baselines._zoo_catalog": "lesionbench.baselines.zoo.catalog",
    "lesionbench.baselines._zoo_load": "lesionbench.baselines.zoo._load",
    "lesionbench.baselines._zoo_weights": "lesionbench.baselines.zoo._weights",
    "lesionbench.baselines.ct_fm": "lesionbench.baselines.zoo.ct_fm",
    "lesionbench.baselines.medicalnet": "lesionbench.baselines.zoo.medicalnet",
    "lesionbench.baselines.merlin": "lesionbench.baselines.zoo.merlin",
    "lesionbench.baselines.models_genesis": "lesionbench.baselines.zoo.models_genesis",
    "lesionbench.baselines.pasta": "lesionbench.baselines.zoo.pasta",
    "lesionbench.baselines.sam_med3d": "lesionbench.baselines.zoo.sam_med3d",
    "lesionbench.baselines.spectre": "lesionbench.baselines.zoo.spectre",
    "lesionbench.baselines.suprem": "lesionbench.baselines.zoo.suprem",
    "lesionbench.baselines.vista3d": "lesionbench.baselines.zoo.vista3d",
    "lesionbench.baselines.voco": "lesionbench.baselines.zoo.voco",
    "lesionbench.benchmark._fabricate": "lesionbench.benchmark.scoring._fabricate",
    "lesionbench.benchmark._image_checks": "lesionbench.benchmark.data._image_checks",
    "lesionbench.benchmark._kernels": "lesionbench.benchmark.scoring._kernels",
    "lesionbench.benchmark._series_checks": "lesionbench.benchmark.data._series_checks",
    "lesionbench.benchmark.dicomslices": "lesionbench.benchmark.data.dicomslices",
    "lesionbench.benchmark.endpoints": "lesionbench.benchmark.scoring.endpoints",
    "lesionbench.benchmark.feature_cache": "lesionbench.benchmark.encoders.feature_cache",
    "lesionbench.benchmark.features": "lesionbench.benchmark.encoders.features",
    "lesionbench.benchmark.geometry": "lesionbench.benchmark.data.geometry",
    "lesionbench.benchmark.knn_probe": "lesionbench.benchmark.scoring.probes.knn",
    "lesionbench.benchmark.linear_probe": "lesionbench.benchmark.scoring.probes.linear",
    "lesionbench.benchmark.manifest": "lesionbench.benchmark.data.manifest",
    "lesionbench.benchmark.metrics": "lesionbench.benchmark.scoring.metrics",
    "lesionbench.benchmark.perturb": "lesionbench.benchmark.robustness.perturb",
    "lesionbench.benchmark.plugins": "lesionbench.benchmark.encoders.plugins",
    "lesionbench.benchmark.probe_base": "lesionbench.benchmark.scoring.probes.base",
    "lesionbench.benchmark.protocols": "lesionbench.benchmark.scoring.protocols",
    "lesionbench.benchmark.rawmap": "lesionbench.benchmark.data.rawmap",
    "lesionbench.benchmark.reading": "lesionbench.benchmark.data.reading",
    "lesionbench.benchmark.registry": "lesionbench.benchmark.encoders.registry",
    "lesionbench.benchmark.retest": "lesionbench.benchmark.robustness.retest",
    "lesionbench.benchmark.run_one": "lesionbench.benchmark.scoring.run_one",
    "lesionbench.benchmark.saved_runs": "lesionbench.benchmark.scoring.saved_runs",
    "lesionbench.benchmark.scorer": "lesionbench.benchmark.scoring.scorer",
    "lesionbench.benchmark.seedcrop": "lesionbench.benchmark.patches.seedcrop",
    "lesionbench.benchmark.shots": "lesionbench.benchmark.scoring.shots",
    "lesionbench.benchmark.splits": "lesionbench.benchmark.scoring.splits",
    "lesionbench.benchmark.stability": "lesionbench.benchmark.robustness.stability",
    "lesionbench.benchmark.survival_probe": "lesionbench.benchmark.scoring.probes.survival",
    "lesionbench.benchmark.sweep": "lesionbench.benchmark.scoring.sweep",
    "lesionbench.benchmark.testing": "lesionbench.benchmark.encoders.testing",
    "lesionbench.benchmark.tracking_plots": "lesionbench.benchmark.tracking.plots",
    "lesionbench.benchmark.weights": "lesionbench.benchmark.encoders.weights",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old path goes in the next release).", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed; the import system set its ``__spec__`` to the old
        name's, so its own is put back (pickling, reloading and ``find_spec`` see the new path)."""
        module.__spec__ = self._spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old path of a moved module and loads the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
