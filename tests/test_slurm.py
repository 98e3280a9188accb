"""Dask extraction and a sweep on a real Slurm cluster (``--dask-cluster`` with ``kind: slurm``).

Runs where a Slurm controller answers ``sinfo`` (CI starts a single-node one with ``.ci/slurm-up``, which
also sets ``LESIONBENCH_SLURM_REQUIRED=1`` so that a broken Slurm fails here instead of skipping); skipped
elsewhere. The workers are real batch jobs (``sbatch``) of this interpreter on the same node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("dask_jobqueue")

from test_dask import _manifest, _ToyEncoder, _ToyTask, cohort  # noqa: E402, F401 (cohort: a fixture)

from lesionbench.benchmark.encoders.features import extract_features  # noqa: E402
from lesionbench.benchmark.scoring.scorer import evaluate  # noqa: E402
from lesionbench.scaleout.cluster import connect  # noqa: E402
from lesionbench.scaleout.extract import extract_features_dask  # noqa: E402
from lesionbench.scaleout.sweep import DaskExecutor  # noqa: E402


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in out.stdout.split())


pytestmark = pytest.mark.skipif(
    not _slurm_answers() and os.environ.get("LESIONBENCH_SLURM_REQUIRED") != "1", reason="no Slurm controller answers sinfo (CI starts one: .ci/slurm-up)"
)


def test_extraction_and_sweep_on_slurm_jobs_match_the_local_path(cohort, tmp_path, monkeypatch) -> None:  # noqa: F811
    assert _slurm_answers(), "LESIONBENCH_SLURM_REQUIRED=1 but sinfo shows no usable node: see .ci/slurm-up's log"
    monkeypatch.chdir(tmp_path)  # nothing lands in the folder the tests run from
    spec = tmp_path / "slurm.yaml"
    spec.write_text(f"kind: slurm\ncores: 1\nmemory: 2GB\nwalltime: '00:10:00'\njobs: 2\nlog_directory: {tmp_path}/logs\n")
    client = connect(cluster_file=spec)
    try:
        client.wait_for_workers(2, timeout=180)
        jobs = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, timeout=20).stdout.split()
        assert jobs.count("dask-worker") >= 2  # the workers are Slurm jobs
        assert len(list((tmp_path / "logs").glob("dask-worker-*.err"))) >= 2  # their logs where the spec says
        manifest = _manifest(cohort)
        local = extract_features(manifest, _ToyEncoder(), cache_dir=tmp_path / "local", progress=False)
        remote = extract_features_dask(manifest, _ToyEncoder(), client, cache_dir=tmp_path / "slurm", progress=False)
        np.testing.assert_array_equal(remote, local)

        opts = {"fractions": (1.0, 0.5), "seeds": (0,), "n_boot": 20, "progress": False}
        task = _ToyTask(data_dir=cohort)
        a = evaluate(task, _ToyEncoder(), out_dir=tmp_path / "res_local", cache_dir=tmp_path / "local", **opts)
        b = evaluate(task, _ToyEncoder(), out_dir=tmp_path / "res_slurm", cache_dir=tmp_path / "slurm", executor=DaskExecutor(client), **opts)
        assert [r.to_dict()["metrics"] for r in a.runs] == [r.to_dict()["metrics"] for r in b.runs]
        rel = "toy_blobs/1/toy_stats/linear/result.json"
        assert json.loads((tmp_path / "res_slurm" / rel).read_text())["runs"]
    finally:
        client.close()
