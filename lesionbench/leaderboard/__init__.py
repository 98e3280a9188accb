"""Leaderboard pages and Kaggle-style submission scoring, built from the scorer's results.

- :func:`build_leaderboard` reads results from MLflow and/or local result files and writes
  ``index.html`` (self-contained), ``leaderboard.md``, ``leaderboard.json`` and its JSON Schema.
- :func:`submit` validates an untrusted predictions (or features) file, scores it on the public and
  private parts of a task's test set with the harness's labels, records the public score like any run
  and keeps the private one in the organiser store (:mod:`lesionbench.leaderboard.submissions.organiser`).
"""

from __future__ import annotations

from lesionbench.leaderboard.build import build_document, build_leaderboard
from lesionbench.leaderboard.collect import collect_results
from lesionbench.leaderboard.submissions.submit import public_private_split, submit, validate_features, validate_predictions

__all__ = [
    "build_document",
    "build_leaderboard",
    "collect_results",
    "public_private_split",
    "submit",
    "validate_features",
    "validate_predictions",
]
