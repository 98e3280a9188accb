"""Code submissions: participants' encoders run sandboxed on hidden data, the organiser's probes score them.

Modules: :mod:`~lesionbench.sandbox.contract` (the versioned input/output contract and its checks),
:mod:`~lesionbench.sandbox.runner` (Podman, Docker, Apptainer and bubblewrap as configuration, limits),
:mod:`~lesionbench.sandbox.failures` (failure classes), :mod:`~lesionbench.sandbox.serve` (the entry command
that serves any registered encoder through the contract), :mod:`~lesionbench.sandbox.base_image` (the base
image recipe), :mod:`~lesionbench.sandbox.evaluate` (the organiser side: stage, run, check, score) and
:mod:`~lesionbench.sandbox.hidden` (the hidden synthetic cohort). See docs/code_submissions.md.
"""
