"""Robustness: how stable an encoder's features and predictions are under controlled perturbations
(:mod:`.perturb`, :mod:`.evaluate`) and between two scans of one patient (:mod:`.retest`), with the
stability statistics both use (:mod:`.stability`) and the result they write (:mod:`.result`).

A new perturbation goes in :mod:`.perturb`; a new stability statistic in :mod:`.stability`."""

from lesionbench.benchmark.robustness.evaluate import evaluate_robustness
from lesionbench.benchmark.robustness.result import (
    RobustnessResult,
    load_robustness,
    log_robustness,
    robustness_metrics,
    robustness_path,
    summary_table,
    write_robustness,
)

__all__ = ["RobustnessResult", "evaluate_robustness", "load_robustness", "log_robustness", "robustness_metrics", "robustness_path", "summary_table", "write_robustness"]
