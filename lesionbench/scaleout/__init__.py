"""Scale-out on Dask distributed: one API from a laptop's ``LocalCluster`` to a Slurm/PBS/LSF/SGE cluster
(``dask-jobqueue``) or a running scheduler (Kubernetes, a cloud account).

:func:`~lesionbench.scaleout.cluster.connect` makes the client; :func:`~lesionbench.scaleout.extract.extract_features_dask`
extracts features image by image on the workers into the shared feature cache; sweeps take it
as a :class:`~lesionbench.scaleout.sweep.DaskExecutor` through :func:`lesionbench.benchmark.scoring.scorer.evaluate`
(``executor=DaskExecutor(client)``) and submit every run as its own task.
Dask is an optional dependency: ``pip install "lesionbench[dask]"``.
"""

from __future__ import annotations
