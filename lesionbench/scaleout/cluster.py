"""The Dask client of ``--dask ADDRESS | local:N`` or ``--dask-cluster FILE`` (a dask-jobqueue cluster spec).

A spec file (YAML or JSON) names a batch system and what one job asks for::

    kind: slurm          # slurm | pbs | lsf | sge
    cores: 8             # CPU cores per job (one Dask worker process per job by default)
    memory: 64GB         # memory per job
    walltime: "04:00:00"
    gpus: 1              # GPUs per job: --gres=gpu:N (Slurm); each worker advertises resources GPU=N
    account: radiology   # optional: the allocation to charge
    queue: gpu           # optional: partition / queue
    jobs: 4              # how many jobs (workers) to start
    processes: 1         # optional: worker processes per job
    local_directory: /scratch/$USER   # optional: the workers' spill folder
    log_directory: /project/$USER/dask-logs   # optional: the jobs' stdout/stderr (default: the submitting folder)
    job_extra_directives: ["--constraint=a100"]   # optional: more scheduler directives

The job script is built by ``dask_jobqueue`` (``cluster.job_script()`` shows it; nothing is submitted
until :func:`connect` scales the cluster).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import ConfigurationError, LesionbenchError

logger = logging.getLogger(__name__)

#: Batch systems and their dask-jobqueue cluster classes.
KINDS: dict[str, str] = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster", "sge": "SGECluster"}
_KEYS = ("kind", "cores", "memory", "walltime", "gpus", "account", "queue", "jobs", "processes", "local_directory", "log_directory", "job_extra_directives")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
#: Set in every worker's environment. Dask starts workers with glibc's ``MALLOC_TRIM_THRESHOLD_=65536``, which
#: also fixes the mmap threshold at 128 KiB: every array above it (patches, blocks, activations) is mapped,
#: page-faulted and unmapped again. Measured: one extraction task of 200 lesions (medicalnet-r10) took 9.6 s
#: on a ``local:1`` worker and 5.3-5.4 s with this (as in a plain process); Dask's trimming is kept.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}
INSTALL_HINT = 'Dask is an optional dependency: pip install "lesionbench[dask]" (dask, distributed, dask-jobqueue).'


class DaskMissingError(LesionbenchError, ImportError):
    """The Dask extras are not installed."""


def require_dask() -> None:
    """One clear error when ``dask.distributed`` (or dask-jobqueue, for a spec file) is missing."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError as exc:
        raise DaskMissingError(f"--dask/--dask-cluster need Dask ({exc}). {INSTALL_HINT}") from None


@dataclass(frozen=True)
class ClusterSpec:
    """A validated dask-jobqueue cluster spec (see the module docstring)."""

    kind: str
    cores: int
    memory: str
    walltime: str
    jobs: int = 1
    gpus: int = 0
    account: str | None = None
    queue: str | None = None
    processes: int = 1
    local_directory: str | None = None
    log_directory: str | None = None
    job_extra_directives: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "the cluster spec") -> ClusterSpec:
        if not isinstance(d, dict):
            raise ConfigurationError(f"{source} must be a mapping of keys ({', '.join(_KEYS)}); got {type(d).__name__}.")
        unknown = sorted(set(map(str, d)) - set(_KEYS))
        if unknown:
            raise ConfigurationError(f"{source}: unknown key(s) {unknown}; the keys are {', '.join(_KEYS)}.")
        for key in ("kind", "cores", "memory", "walltime"):
            if d.get(key) in (None, ""):
                raise ConfigurationError(f"{source}: key {key!r} is required (e.g. kind: slurm, cores: 8, memory: 64GB, walltime: '04:00:00').")
        kind = str(d["kind"]).lower()
        if kind not in KINDS:
            raise ConfigurationError(f"{source}: key 'kind' is {d['kind']!r}; use one of {', '.join(KINDS)}.")
        ints = {k: _whole(d, k, source, minimum=1 if k != "gpus" else 0) for k in ("cores", "jobs", "gpus", "processes") if k in d}
        memory, walltime = str(d["memory"]).strip(), str(d["walltime"]).strip()
        if not _MEMORY.match(memory):
            raise ConfigurationError(f"{source}: key 'memory' is {d['memory']!r}; give a size such as 64GB or 500MiB.")
        if not _WALLTIME.match(walltime):
            raise ConfigurationError(f"{source}: key 'walltime' is {d['walltime']!r}; give HH:MM:SS (or D-HH:MM:SS), e.g. '04:00:00'.")
        extra = d.get("job_extra_directives") or ()
        if isinstance(extra, str) or not all(isinstance(x, str) for x in extra):
            raise ConfigurationError(f"{source}: key 'job_extra_directives' must be a list of strings, e.g. ['--constraint=a100'].")
        text = {k: (None if d.get(k) in (None, "") else str(d[k])) for k in ("account", "queue", "local_directory", "log_directory")}
        return cls(kind=kind, memory=memory, walltime=walltime, job_extra_directives=tuple(extra), **ints, **text)  # type: ignore[arg-type]

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the dask-jobqueue cluster class."""
        kw: dict[str, Any] = {"cores": self.cores, "memory": self.memory, "walltime": self.walltime, "processes": self.processes}
        extra = list(self.job_extra_directives)
        if self.gpus:
            if self.kind == "slurm":
                extra.append(f"--gres=gpu:{self.gpus}")
            elif self.kind == "pbs":
                kw["resource_spec"] = f"select=1:ncpus={self.cores}:ngpus={self.gpus}"
            elif self.kind == "lsf":
                extra.append(f'-gpu "num={self.gpus}"')
            else:
                extra.append(f"-l gpu={self.gpus}")
            # a trainable encoder's runs ask for GPU=1, so one runs per device at a time
            kw["worker_extra_args"] = ["--resources", f"GPU={self.gpus // max(self.processes, 1) or 1}"]
        if extra:
            kw["job_extra_directives"] = extra
        kw["job_script_prologue"] = [f"export {k}={v}" for k, v in WORKER_ENVIRON.items()]  # inherited by the workers
        if self.account:
            kw["account"] = self.account
        if self.queue:
            kw["queue"] = self.queue
        if self.local_directory:
            kw["local_directory"] = self.local_directory
        if self.log_directory:  # made on the submitting host and written in #SBATCH lines, where no shell expands $USER
            kw["log_directory"] = os.path.expanduser(os.path.expandvars(self.log_directory))
        return kw


def _whole(d: dict, key: str, source: str, *, minimum: int) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigurationError(f"{source}: key {key!r} must be a whole number >= {minimum}; got {v!r}.")
    return v


def read_spec(path: Path) -> ClusterSpec:
    """A :class:`ClusterSpec` from a YAML or JSON file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the cluster spec {path}: {exc.strerror or exc}.") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"The cluster spec {path} is not valid JSON: {exc}.") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"The cluster spec {path} is not valid YAML: {exc}.") from None
    return ClusterSpec.from_dict(data, source=f"The cluster spec {path}")


def jobqueue_cluster(spec: ClusterSpec, **overrides: Any) -> Any:
    """The dask-jobqueue cluster of ``spec`` (no job is submitted until it is scaled)."""
    require_dask()
    try:
        import dask_jobqueue
    except ImportError:
        raise DaskMissingError(f"--dask-cluster needs dask-jobqueue. {INSTALL_HINT}") from None
    return getattr(dask_jobqueue, KINDS[spec.kind])(**{**spec.cluster_kwargs(), **overrides})


def connect(address: str | None = None, *, cluster_file: Path | None = None) -> Any:
    """A ``distributed.Client``: ``address`` is a running scheduler (``tcp://host:8786``) or ``local:N`` (a
    ``LocalCluster`` of N worker processes, one thread each); ``cluster_file`` a dask-jobqueue spec
    (its ``jobs`` are submitted now). The client's ``close()`` also closes a cluster made here."""
    if (address is None) == (cluster_file is None):
        raise ConfigurationError("Give one of --dask ADDRESS|local:N and --dask-cluster FILE.")
    require_dask()
    from dask.distributed import Client, LocalCluster

    if cluster_file is not None:
        spec = read_spec(cluster_file)
        cluster = jobqueue_cluster(spec)
        cluster.scale(jobs=spec.jobs)
        logger.info("Dask: %s cluster, %d job(s) requested; dashboard %s", spec.kind, spec.jobs, cluster.dashboard_link)
        return _owning(Client(cluster), cluster)
    m = re.fullmatch(r"local:(\d+)", address.strip())
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ConfigurationError(f"--dask {address}: a local cluster needs at least 1 worker (local:2).")
        # one thread per worker: encoders and probe fits use their own threads; processes, not threads, share work
        import dask.config

        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
        logger.info("Dask: local cluster of %d worker processes; dashboard %s", n, cluster.dashboard_link)
        return _owning(Client(cluster), cluster)
    if address.startswith("local"):
        raise ConfigurationError(f"--dask {address!r}: write local:N with N worker processes, e.g. local:2.")
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ConfigurationError(f"--dask {address}: no Dask scheduler answered ({exc}). Start one (dask scheduler) or check the address.") from None
    logger.info("Dask: scheduler %s, %d worker(s)", address, len(client.scheduler_info().get("workers", {})))
    return client


def _owning(client: Any, cluster: Any) -> Any:
    """Close ``cluster`` with ``client``."""
    close = client.close

    def close_both(*args: Any, **kwargs: Any) -> None:
        close(*args, **kwargs)
        cluster.close()

    client.close = close_both
    return client


__all__ = ["KINDS", "ClusterSpec", "DaskMissingError", "connect", "jobqueue_cluster", "read_spec", "require_dask"]
