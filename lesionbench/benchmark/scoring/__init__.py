"""Scoring: limited-label subsets and k-shot draws, clinical endpoints, probes (:mod:`.probes`), metrics with
bootstrap intervals and paired tests, and the sweep from plan to execution with its saved runs.

A new probe goes in :mod:`.probes`, a new metric in :mod:`.metrics` (its weighted kernel in :mod:`._kernels`).
Scale-out (Dask) and training (fine-tuning) are handed in by the caller, never imported from here."""
