"""Scale-out on Dask: a real ``distributed.LocalCluster`` of 2 worker processes gives the local path's
features and result.json; a worker killed mid-extraction and two clients sharing one cache change
nothing; the Slurm job script carries the cluster spec."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask_jobqueue")

import cloudpickle  # noqa: E402
import test_cli_run  # noqa: E402
from test_cli_run import _ToyEncoder, _ToyTask, _write_cohort  # noqa: E402

from lesionbench.benchmark.errors import ConfigurationError  # noqa: E402
from lesionbench.benchmark.encoders.features import extract_features  # noqa: E402
from lesionbench.benchmark.scoring.scorer import evaluate  # noqa: E402
from lesionbench.scaleout.cluster import ClusterSpec, DaskMissingError, connect, jobqueue_cluster, read_spec, require_dask  # noqa: E402
from lesionbench.scaleout.extract import extract_features_dask  # noqa: E402
from lesionbench.scaleout.sweep import DaskExecutor  # noqa: E402

# the toy plug-ins live in a test module the workers cannot import: send them by value
cloudpickle.register_pickle_by_value(test_cli_run)


class _SlowToy(_ToyEncoder):
    """The toy encoder, slow enough that a worker can be killed while it works."""

    def encode(self, patches: np.ndarray) -> np.ndarray:
        time.sleep(0.4)
        return super().encode(patches)


cloudpickle.register_pickle_by_value(__import__(__name__))


@pytest.fixture(scope="module")
def client():
    c = connect("local:2")
    yield c
    c.close()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    _write_cohort(data)  # 60 patients: train, val and test splits
    return data


def _manifest(cohort):
    return _ToyTask(data_dir=cohort).manifest()


def _shards(cache):
    return sorted(p.name for p in cache.rglob("shard-*.npz"))


def _wait_until_replaced(client, address: str, timeout: float = 60.0) -> None:
    """Until the scheduler lists two workers and the killed one (``address``: a restarted worker gets a new
    port) is not among them; ``wait_for_workers(2)`` also counts a dead worker not removed yet."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = client.scheduler_info()["workers"]
        if len(workers) == 2 and address not in workers:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the killed worker {address} was not replaced within {timeout:.0f} s")


def _n_tasks(manifest) -> int:
    """Tasks of whole images, one batch (8, the toy's default) of lesions each: 2 lesions per image here."""
    return -(-manifest["image_path"].nunique() // 4)


def test_extraction_and_result_json_match_the_local_path(client, cohort, tmp_path, monkeypatch) -> None:
    manifest = _manifest(cohort)
    local = extract_features(manifest, _ToyEncoder(), cache_dir=tmp_path / "local", progress=False)
    remote = extract_features_dask(manifest, _ToyEncoder(), client, cache_dir=tmp_path / "dask", progress=False)
    np.testing.assert_array_equal(remote, local)
    assert len(_shards(tmp_path / "dask")) == _n_tasks(manifest)  # one shard per task
    # a second call finds everything in the cache: nothing is submitted, nothing written
    again = extract_features_dask(manifest, _ToyEncoder(), client, cache_dir=tmp_path / "dask", progress=False)
    np.testing.assert_array_equal(again, local)

    opts = {"fractions": (1.0, 0.5), "seeds": (0, 1), "n_boot": 50, "progress": False}
    task = _ToyTask(data_dir=cohort)
    a = evaluate(task, _ToyEncoder(), out_dir=tmp_path / "res_local", cache_dir=tmp_path / "local", **opts)
    b = evaluate(task, _ToyEncoder(), out_dir=tmp_path / "res_dask", cache_dir=tmp_path / "dask2", executor=DaskExecutor(client), **opts)
    assert [r.to_dict()["metrics"] for r in a.runs] == [r.to_dict()["metrics"] for r in b.runs]
    rel = "toy_blobs/1/toy_stats/linear"
    ja, jb = (json.loads((tmp_path / d / rel / "result.json").read_text()) for d in ("res_local", "res_dask"))
    for j in (ja, jb):  # wall-clock times and the creation stamp differ between any two runs
        j.pop("created"), j["extra"].pop("timing_s"), j["extra"].pop("started")
        for r in j["runs"]:
            r["params"].pop("probe_seconds")
    assert ja == jb
    for r in a.runs:
        assert (tmp_path / "res_local" / rel / r.predictions_path).read_bytes() == (tmp_path / "res_dask" / rel / r.predictions_path).read_bytes()

    # a client killed after 3 of its 4 runs: the re-run resumes the 3 saved runs and submits only the 4th
    import lesionbench.scaleout.sweep as dask_sweep

    submitted: list[int] = []
    real = dask_sweep.score_runs_dask
    monkeypatch.setattr(dask_sweep, "score_runs_dask", lambda client, plan, provider, rdir, todo, fn: submitted.append(len(todo)) or real(client, plan, provider, rdir, todo, fn))
    (tmp_path / "res_dask" / rel / "result.json").unlink()
    next((tmp_path / "res_dask" / rel / "runs").glob("*.json")).unlink()
    c = evaluate(task, _ToyEncoder(), out_dir=tmp_path / "res_dask", cache_dir=tmp_path / "dask2", executor=DaskExecutor(client), **opts)
    assert submitted == [1]
    assert [r.to_dict()["metrics"] for r in c.runs] == [r.to_dict()["metrics"] for r in a.runs]


def test_a_worker_killed_mid_extraction_is_survived(client, cohort, tmp_path) -> None:
    manifest = _manifest(cohort)
    local = extract_features(manifest, _ToyEncoder(), cache_dir=tmp_path / "local", progress=False)
    cache = tmp_path / "dask"
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_one_worker_once_work_started() -> None:
        deadline = time.time() + 30
        while time.time() < deadline and not _shards(cache):
            time.sleep(0.02)
        address, pid = next(iter(pids.items()))
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; Dask reruns what the dead one held
        killed.append(len(_shards(cache)))
        killed.append(address)

    killer = threading.Thread(target=kill_one_worker_once_work_started)
    killer.start()
    remote = extract_features_dask(manifest, _SlowToy(), client, cache_dir=cache, progress=False)
    killer.join()
    assert killed and killed[0] < _n_tasks(manifest)  # killed mid-extraction
    np.testing.assert_array_equal(remote, local)
    assert len(_shards(cache)) == _n_tasks(manifest)  # nothing lost, nothing written twice
    _wait_until_replaced(client, killed[1])


def test_two_clients_writing_one_cache_at_once(client, cohort, tmp_path) -> None:
    manifest = _manifest(cohort)
    local = extract_features(manifest, _ToyEncoder(), cache_dir=tmp_path / "local", progress=False)
    second = distributed.Client(client.scheduler.address)
    try:
        out: dict[int, Any] = {}

        def run(i: int, c: distributed.Client) -> None:
            try:
                out[i] = extract_features_dask(manifest, _SlowToy(), c, cache_dir=tmp_path / "shared", progress=False)
            except BaseException as exc:  # raised below, in the test's thread
                out[i] = exc

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((client, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        second.close()
    for got in out.values():
        if isinstance(got, BaseException):
            raise got
    np.testing.assert_array_equal(out[0], local)
    np.testing.assert_array_equal(out[1], local)
    assert len(_shards(tmp_path / "shared")) == _n_tasks(manifest)


def test_the_slurm_job_script_carries_the_spec(tmp_path) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(f"kind: slurm\ncores: 8\nmemory: 64GB\nwalltime: '04:00:00'\ngpus: 1\naccount: radiology\nqueue: gpu\njobs: 3\nlog_directory: {tmp_path}/logs\n")
    spec = read_spec(spec_file)
    assert spec.jobs == 3
    cluster = jobqueue_cluster(spec, scheduler_options={"dashboard_address": ":0"})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH --cpus-per-task=8", "#SBATCH --mem=60G", "#SBATCH -t 04:00:00", "#SBATCH --gres=gpu:1", "#SBATCH -A radiology", "#SBATCH -p gpu",
                 f"#SBATCH -o {tmp_path}/logs/dask-worker-%J.out"):  # fmt: skip
        assert line in script, script
    assert "--resources GPU=1" in script and "--nthreads 8" in script
    assert "export MALLOC_MMAP_THRESHOLD_=33554432" in script
    assert ClusterSpec.from_dict({"kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "01:00:00", "log_directory": "$HOME/logs"}).cluster_kwargs()[
        "log_directory"] == os.path.expanduser("~/logs")  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "condor", "cores": 1, "memory": "1GB", "walltime": "01:00:00"}, "key 'kind'"),
        ({"kind": "slurm", "memory": "1GB", "walltime": "01:00:00"}, "key 'cores' is required"),
        ({"kind": "slurm", "cores": 0, "memory": "1GB", "walltime": "01:00:00"}, "key 'cores' must be a whole number"),
        ({"kind": "slurm", "cores": 1, "memory": "lots", "walltime": "01:00:00"}, "key 'memory'"),
        ({"kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "an hour"}, "key 'walltime'"),
        ({"kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "01:00:00", "gpu": 1}, "unknown key(s) ['gpu']"),
    ],
)
def test_a_bad_cluster_spec_names_its_key(spec, message) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        ClusterSpec.from_dict(spec)


def test_without_dask_one_clear_error(monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(DaskMissingError, match=r'pip install "lesionbench\[dask\]"'):
        require_dask()
    from lesionbench.cli import main

    # one clear error at parse time, before the task or encoder is loaded
    assert main(["run", "--task", "nope", "--encoder", "nope", "--dask", "local:2"]) == 2
    assert 'pip install "lesionbench[dask]"' in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="local:N"):
        connect(None)


def _noisy(weights=None):
    return _ToyEncoder(noise=3.0, name="toy_noisy")


def test_cli_run_several_encoders_on_dask_equals_the_loop(client, cohort, tmp_path, monkeypatch, capsys) -> None:
    from lesionbench.benchmark.encoders.plugins import ENCODERS, TASKS
    from lesionbench.cli import main

    TASKS.names()
    ENCODERS.names()
    monkeypatch.setitem(TASKS._factories, "toy_blobs", _ToyTask)
    monkeypatch.setitem(ENCODERS._factories, "toy_stats", _ToyEncoder)
    monkeypatch.setitem(ENCODERS._factories, "toy_noisy", _noisy)
    # the toys are registered in this process only: the workers get the client's encoders instead of building their own
    monkeypatch.setattr("lesionbench.cli.run.encoder_builder", lambda args: None)
    monkeypatch.setenv("LESIONBENCH_CACHE", str(tmp_path / "cache"))
    common = ["-q", "run", "--task", "toy_blobs", "--data-dir", str(cohort), "--encoder", "toy_stats", "toy_noisy",
              "--fractions", "1.0", "0.5", "--seeds", "0", "--n-boot", "20", "--no-mlflow"]  # fmt: skip
    assert main([*common, "--results", str(tmp_path / "loop")]) == 0
    assert main([*common, "--results", str(tmp_path / "dask"), "--dask", client.scheduler.address]) == 0
    for enc in ("toy_stats", "toy_noisy"):
        ja, jb = (json.loads((tmp_path / d / f"toy_blobs/1/{enc}/linear/result.json").read_text()) for d in ("loop", "dask"))
        assert [r["metrics"] for r in ja["runs"]] == [r["metrics"] for r in jb["runs"]]
    assert capsys.readouterr().out.count("toy_blobs / toy_noisy / linear") == 2
    # refused at parse time, before any work
    assert main(["extract", "--task", "toy_blobs", "--encoder", "toy_stats", "--dask", "local:0", "-o", str(tmp_path / "f.csv")]) == 2
    assert "needs N >= 1 worker processes" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("kind: slurm\ncores: 4\nmemory: 8GB\nwalltime: 1h\n")
    assert main(["run", "--task", "toy_blobs", "--encoder", "toy_stats", "--dask-cluster", str(tmp_path / "bad.yaml")]) == 2
    assert "key 'walltime' is '1h'" in capsys.readouterr().err


class _SlowFeatures:
    """Frozen features that take a while per run, so a worker can be killed while runs are in flight."""

    def __init__(self, X: np.ndarray):
        self.X = X

    def __call__(self, subset, train_mask, val_mask):
        time.sleep(0.5)
        return self.X, None


def test_a_worker_killed_mid_sweep_is_survived(client, cohort, tmp_path) -> None:
    from lesionbench.benchmark.scoring.probes.linear import C_GRID
    from lesionbench.benchmark.scoring.sweep import plan_sweep, run_sweep

    manifest = _manifest(cohort)
    X = extract_features(manifest, _ToyEncoder(), cache_dir=tmp_path / "cache", progress=False)
    plan = plan_sweep(manifest, _ToyTask.meta, fractions=(1.0, 0.5), seeds=(0, 1, 2), n_boot=20, c_grid=C_GRID)
    emeta = _ToyEncoder().meta
    local = run_sweep(plan, emeta, _SlowFeatures(X), rdir=tmp_path / "local", data_digest="x", progress=False)
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_when_the_first_run_is_written() -> None:
        deadline = time.time() + 30
        while time.time() < deadline and not list((tmp_path / "dask" / "predictions").glob("*.csv")):
            time.sleep(0.02)
        killed.append(len(list((tmp_path / "dask" / "predictions").glob("*.csv"))))
        address, pid = next(iter(pids.items()))
        killed.append(address)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_the_first_run_is_written)
    killer.start()
    remote = run_sweep(plan, emeta, _SlowFeatures(X), rdir=tmp_path / "dask", data_digest="x", progress=False, executor=DaskExecutor(client))
    killer.join()
    assert killed and killed[0] < len(plan.runs)  # killed while runs were still to do
    assert [r.to_dict()["metrics"] for r in remote.runs] == [r.to_dict()["metrics"] for r in local.runs]
    assert len(list((tmp_path / "dask" / "runs").glob("*.json"))) == len(plan.runs)
    _wait_until_replaced(client, killed[1])


def test_a_rerun_on_a_worker_leaves_the_saved_record_alone(cohort, tmp_path) -> None:
    """Dask reruns a run whose finished result was lost with its worker; the client may have saved it already."""
    from lesionbench.benchmark.scoring.probes.linear import C_GRID
    from lesionbench.benchmark.scoring.run_one import score_run
    from lesionbench.benchmark.scoring.sweep import plan_sweep, run_sweep

    manifest = _manifest(cohort)
    X = extract_features(manifest, _ToyEncoder(), cache_dir=tmp_path / "cache", progress=False)
    plan = plan_sweep(manifest, _ToyTask.meta, fractions=(1.0,), seeds=(0, 1), n_boot=10, c_grid=C_GRID)
    provider = _SlowFeatures(X)
    run_sweep(plan, _ToyEncoder().meta, provider, rdir=tmp_path, data_digest="x", progress=False)
    saved = sorted((tmp_path / "runs").glob("*.json"))
    assert len(saved) == 2
    keys = {json.loads(p.read_text())["key"] for p in saved}
    (key,) = keys
    score_run(plan, provider, tmp_path, plan.runs[0], key=key)  # the late rerun, of the same sweep
    assert sorted((tmp_path / "runs").glob("*.json")) == saved
    # a saved run of other data is still dropped before its files are replaced, by the client
    again = run_sweep(plan, _ToyEncoder().meta, provider, rdir=tmp_path, data_digest="y", progress=False, resume=True)
    assert len(again.runs) == 2 and sorted((tmp_path / "runs").glob("*.json")) == saved
    assert not keys & {json.loads(p.read_text())["key"] for p in saved}


def test_local_workers_keep_large_arrays_off_mmap(client) -> None:
    """Dask's MALLOC_TRIM_THRESHOLD_ for workers pins glibc's mmap threshold at 128 KiB (1.8x slower extraction):
    local workers get MALLOC_MMAP_THRESHOLD_ too, and keep Dask's trimming."""
    from lesionbench.scaleout.cluster import WORKER_ENVIRON

    envs = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")})
    assert envs and all(e["MALLOC_MMAP_THRESHOLD_"] == WORKER_ENVIRON["MALLOC_MMAP_THRESHOLD_"] and e["MALLOC_TRIM_THRESHOLD_"] for e in envs.values())


def test_a_task_sets_torch_threads_in_its_own_thread(monkeypatch) -> None:
    """torch's CPU thread count is per OS thread: the encoder's, set where it was built, must be set again in
    the Dask thread that runs each extraction task, shared among the worker's task threads."""
    import types

    import distributed
    import torch

    from lesionbench.benchmark.host import usable_cores
    from lesionbench.scaleout import extract as E

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append((threading.get_ident(), n)))
    monkeypatch.setattr(distributed, "get_worker", lambda: types.SimpleNamespace(state=types.SimpleNamespace(nthreads=2)))
    E.pin_torch_threads(8)
    assert calls == [(threading.get_ident(), max(1, min(8, usable_cores() // 2)))]
    calls.clear()
    monkeypatch.setattr(distributed, "get_worker", lambda: (_ for _ in ()).throw(ValueError("no worker")))
    E.pin_torch_threads(None)  # off a worker: every usable core
    assert calls == [(threading.get_ident(), usable_cores())]
    pinned: list[Any] = []
    monkeypatch.setattr(E, "pin_torch_threads", lambda want=None: pinned.append(want))
    monkeypatch.setattr(E, "_ENCODERS", {})
    enc = _ToyEncoder()
    enc.threads = 3
    E.extract_images([], fingerprint=enc.meta.fingerprint(), source=enc, cache_root="/nonexistent", batch_size=4)
    assert pinned == [3]
    from lesionbench.scaleout.sweep import _pinned

    assert _pinned(lambda a, b: a + b, 2, 3) == 5 and pinned == [3, None]  # sweep tasks too (a trainable encoder trains there)


def test_trainable_runs_ask_for_a_gpu_only_where_workers_have_one() -> None:
    from lesionbench.scaleout.sweep import workers_have_gpus

    class _Info:
        def __init__(self, resources):
            self.resources = resources

        def scheduler_info(self):
            return {"workers": {"tcp://a": {"resources": self.resources}, "tcp://b": {"resources": {}}}}

    assert workers_have_gpus(_Info({"GPU": 1}))
    assert not workers_have_gpus(_Info({}))
