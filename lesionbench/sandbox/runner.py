"""Run a submission in a sandbox: Podman or Docker for images, Apptainer on clusters, bubblewrap for packages.

The engine and its flags are configuration (:class:`EngineConfig`); the defaults are always: no network,
read-only root, every capability dropped, no new privileges, an unprivileged user, limits on memory,
processes, CPU, open files, wall time and output size (:class:`Limits`), optional GPUs, and the container
killed and removed on any exit. Only ``/input`` (read-only) and ``/output`` are mounted.

``/output`` is a size-capped file system: as root, a ``tmpfs`` of ``Limits.output_mb`` is mounted on the host
folder for the run (:func:`output_area`); elsewhere each file is capped by ``RLIMIT_FSIZE`` and the folder is
watched and the sandbox killed once it holds more. The log is drained as it comes and only its last
``Limits.log_bytes`` are kept, so a million lines cost nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lesionbench.sandbox.failures import InfrastructureError

logger = logging.getLogger(__name__)

EngineKind = Literal["podman", "docker", "apptainer", "bubblewrap"]
#: The unprivileged user every sandbox runs as (``nobody``).
SANDBOX_UID = 65534
#: Per-job user ids are drawn from [JOB_UID_BASE, JOB_UID_BASE + JOB_UID_SPAN).
JOB_UID_BASE, JOB_UID_SPAN = 200_000, 60_000


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    memory_mb: int = 4096
    pids: int = 256
    cpus: float = 2.0
    wall_s: float = 3600.0
    output_mb: int = 512
    nofile: int = 1024
    tmp_mb: int = 256
    log_bytes: int = 64 * 1024
    #: GPUs for the run: "" none, "all", or a comma-separated list of device indices.
    gpus: str = ""
    #: The unprivileged user (and group) the sandbox runs as. RLIMIT_NPROC counts a user's processes on the
    #: whole host, so concurrent jobs get users of their own (:func:`job_uid`): one job's fork bomb then
    #: cannot starve another's forks.
    uid: int = SANDBOX_UID

    @property
    def output_bytes(self) -> int:
        return self.output_mb << 20


@dataclass(frozen=True)
class EngineConfig:
    """An engine: its command with global flags (``command``) and extra ``podman run``-style flags (``run_args``)."""

    kind: EngineKind
    command: tuple[str, ...]
    run_args: tuple[str, ...] = ()

    @classmethod
    def podman(cls, run_args: Sequence[str] = ()) -> EngineConfig:
        # runc and cgroupfs: the default crun refuses hybrid cgroup layouts (docs/code_submissions.md)
        return cls("podman", ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"), tuple(run_args))

    @classmethod
    def docker(cls, run_args: Sequence[str] = ()) -> EngineConfig:
        return cls("docker", ("docker",), tuple(run_args))

    @classmethod
    def apptainer(cls, run_args: Sequence[str] = ()) -> EngineConfig:
        return cls("apptainer", ("apptainer",), tuple(run_args))

    @classmethod
    def bubblewrap(cls, run_args: Sequence[str] = ()) -> EngineConfig:
        return cls("bubblewrap", ("bwrap",), tuple(run_args))

    @classmethod
    def named(cls, kind: str, run_args: Sequence[str] = ()) -> EngineConfig:
        """The default configuration of engine ``kind``."""
        makers = {"podman": cls.podman, "docker": cls.docker, "apptainer": cls.apptainer, "bubblewrap": cls.bubblewrap, "bwrap": cls.bubblewrap}
        if kind not in makers:
            from lesionbench.benchmark.errors import ConfigurationError

            raise ConfigurationError(f"Unknown sandbox engine {kind!r}; choose one of podman, docker, apptainer, bubblewrap.")
        return makers[kind](run_args)

    def available(self) -> bool:
        """Whether the engine's executable is installed (a Docker client without a daemon counts as absent)."""
        if shutil.which(self.command[0]) is None:
            return False
        if self.kind == "docker":
            return subprocess.run([*self.command, "info"], capture_output=True, check=False, timeout=20).returncode == 0
        return True


@dataclass(frozen=True)
class RunRecord:
    """What the engine reported: exit code, whether it was killed for time, memory or output size, the log."""

    exit_code: int | None
    wall_s: float
    timed_out: bool = False
    oom_killed: bool = False
    output_full: bool = False
    log_tail: str = ""
    log_lines: int = 0
    command: tuple[str, ...] = field(default=(), repr=False)


def job_uid() -> int:
    """A user id of its own for one job (from a range no account uses)."""
    return JOB_UID_BASE + secrets.randbelow(JOB_UID_SPAN)


def container_args(engine: EngineConfig, image: str, name: str, input_dir: Path, output_dir: Path, limits: Limits, env: dict[str, str]) -> list[str]:
    """The full ``run`` command line of an OCI engine (podman, docker) or Apptainer."""
    m = f"{limits.memory_mb}m"
    if engine.kind == "apptainer":
        cmd = [*engine.command, "run", "--containall", "--cleanenv", "--no-home", "--no-privs", "--net", "--network", "none",
               "--memory", m, "--pids-limit", str(limits.pids), "--cpus", str(limits.cpus),
               "--bind", f"{input_dir}:/input:ro", "--bind", f"{output_dir}:/output"]  # fmt: skip
        for k, v in env.items():
            cmd += ["--env", f"{k}={v}"]
        if limits.gpus:
            cmd.append("--nv")
        return [*cmd, *engine.run_args, image]
    cmd = [*engine.command, "run", "--name", name, "--network", "none", "--read-only", "--cap-drop", "all",
           "--security-opt", "no-new-privileges", "--user", f"{limits.uid}:{limits.uid}",
           "--memory", m, "--memory-swap", m, "--pids-limit", str(limits.pids), "--cpus", str(limits.cpus),
           "--ulimit", f"nofile={limits.nofile}:{limits.nofile}", "--ulimit", f"nproc={limits.pids}:{limits.pids}",
           "--ulimit", f"fsize={limits.output_bytes}:{limits.output_bytes}",
           "--tmpfs", f"/tmp:rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777",
           "--log-driver", "none", "--stop-timeout", "1", "--pull", "never",
           "-v", f"{input_dir}:/input:ro", "-v", f"{output_dir}:/output:rw"]  # fmt: skip
    if engine.kind == "podman":
        cmd += ["--read-only-tmpfs=false"]  # no writable /run, /var/tmp: /tmp (capped) and /output only
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    if limits.gpus:
        cmd += ["--gpus", limits.gpus] if engine.kind == "docker" else ["--device", f"nvidia.com/gpu={limits.gpus}"]
    return [*cmd, *engine.run_args, image]


def bwrap_args(engine: EngineConfig, rootfs: Path, binds: Sequence[tuple[Path, str, bool]], command: Sequence[str], limits: Limits, env: dict[str, str]) -> list[str]:
    """The ``bwrap`` command line: the base root filesystem read-only as ``/``, ``binds`` as (host, inside,
    writable), a capped ``/tmp``, no namespaces shared with the host (no network at all)."""
    cmd = [*engine.command, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--ro-bind", str(rootfs), "/", "--dev", "/dev", "--proc", "/proc",
           "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp", "--clearenv", "--chdir", "/tmp"]  # fmt: skip
    for host, inside, writable in binds:
        cmd += ["--bind" if writable else "--ro-bind", str(host), inside]
    for k, v in {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", **env}.items():
        cmd += ["--setenv", k, v]
    return [*cmd, *engine.run_args, "--", *command]


class _LogTail:
    """Drains a stream on a thread, keeping its last ``keep`` bytes and counting lines."""

    def __init__(self, stream, keep: int):
        self.keep, self.buf, self.lines = keep, bytearray(), 0
        self.thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self.thread.start()

    def _drain(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(1 << 16), b""):
            self.lines += chunk.count(b"\n")
            self.buf += chunk
            if len(self.buf) > 2 * self.keep:
                del self.buf[: len(self.buf) - self.keep]

    def text(self) -> str:
        self.thread.join(timeout=5)
        return bytes(self.buf[-self.keep :]).decode("utf-8", "replace")


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


@contextlib.contextmanager
def output_area(path: Path, limits: Limits) -> Iterator[Path]:
    """An empty ``/output`` folder writable by the sandbox user: a tmpfs of ``limits.output_mb`` where this
    process may mount one (root), else a plain folder (capped by RLIMIT_FSIZE and the watcher). Unmounted after use."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        opts = f"size={limits.output_mb}m,mode=0755,uid={limits.uid},gid={limits.uid},nosuid,nodev,noexec"
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "lesionbench-output", str(path)], capture_output=True, check=False).returncode == 0
    if not mounted:
        path.chmod(0o777)
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _is_capped(path: Path) -> bool:
    return os.path.ismount(path)


def rlimit_prefix(limits: Limits) -> list[str]:
    """``prlimit`` in front of a command: its own process limits (memory, processes, files, file size, no core
    dumps), set before it execs the sandbox, not from Python between fork and exec (unsafe with threads)."""
    b = limits.output_bytes
    return ["prlimit", f"--as={limits.memory_mb << 20}", f"--nproc={limits.pids}", f"--nofile={limits.nofile}", f"--fsize={b}", "--core=0", "--"]


def execute(cmd: list[str], limits: Limits, output_dir: Path, *, own_rlimits: bool = False, as_sandbox_user: bool = False,
            kill: Sequence[str] = (), cleanup: Sequence[str] = (), inspect_oom: Sequence[str] = (), cwd: Path | None = None) -> RunRecord:  # fmt: skip
    """Run ``cmd`` under ``limits``: wall-time kill, output watch, bounded log; ``kill``/``cleanup`` are the
    engine commands that stop and remove the container (run on every exit), ``inspect_oom`` asks whether the
    kernel killed it for memory."""
    user = {"user": limits.uid, "group": limits.uid, "extra_groups": []} if as_sandbox_user and os.geteuid() == 0 else {}
    start = time.monotonic()
    timed_out = output_full = oom = False
    if own_rlimits:
        cmd = [*rlimit_prefix(limits), *cmd]
    try:
        # a session (and process group) of its own: a kill reaches everything it started
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, **user)  # fmt: skip
    except OSError as exc:
        raise InfrastructureError(f"could not start the sandbox ({cmd[0]}): {exc}. Install it or choose another engine.") from exc
    log = _LogTail(proc.stdout, limits.log_bytes)
    capped = _is_capped(output_dir)

    def stop() -> None:
        if kill:
            subprocess.run(list(kill), capture_output=True, check=False, timeout=60)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    try:
        while proc.poll() is None:
            if time.monotonic() - start > limits.wall_s:
                timed_out = True
                stop()
                break
            if not capped and _tree_bytes(output_dir) > limits.output_bytes:
                output_full = True
                stop()
                break
            time.sleep(0.1)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop()
            code = proc.wait(timeout=60)
        if inspect_oom:
            res = subprocess.run(list(inspect_oom), capture_output=True, text=True, check=False, timeout=60)
            oom = res.stdout.strip().lower() == "true"
    finally:
        if proc.poll() is None:
            stop()
            proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session (bubblewrap's are gone with its namespace)
        if cleanup:
            subprocess.run(list(cleanup), capture_output=True, check=False, timeout=120)
    tail = log.text()
    if capped:
        st = os.statvfs(output_dir)
        output_full = output_full or st.f_bavail * st.f_frsize < (1 << 20)
    return RunRecord(exit_code=code, wall_s=time.monotonic() - start, timed_out=timed_out, oom_killed=oom,
                     output_full=output_full, log_tail=tail, log_lines=log.lines, command=tuple(cmd))  # fmt: skip


def thread_env(limits: Limits) -> dict[str, str]:
    """Thread pools sized to the CPU limit (BLAS and OpenMP would otherwise size them to the host's cores)."""
    n = str(max(1, int(limits.cpus)))
    return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def run_container(engine: EngineConfig, image: str, input_dir: Path, output_dir: Path, limits: Limits, env: dict[str, str] | None = None) -> RunRecord:
    """Run ``image``'s entry point with the contract's mounts under ``limits``; the container is always removed."""
    name = f"lesionbench-sub-{uuid.uuid4().hex[:12]}"
    cmd = container_args(engine, image, name, input_dir, output_dir, limits, {**thread_env(limits), **(env or {})})
    if engine.kind == "apptainer":
        return execute(cmd, limits, output_dir, own_rlimits=True)
    eng = list(engine.command)
    # podman 4.3's conmon (cgroup v1, cgroupfs) records an OOM kill as a file "oom" in its working folder
    # instead of the bundle's, so State.OOMKilled stays false: run it in a folder of its own and look there too
    with tempfile.TemporaryDirectory(prefix="lesionbench-engine-") as cwd:
        rec = execute(cmd, limits, output_dir, kill=[*eng, "kill", name], cleanup=[*eng, "rm", "-f", name],
                      inspect_oom=[*eng, "inspect", "--format", "{{.State.OOMKilled}}", name], cwd=Path(cwd))  # fmt: skip
        if (Path(cwd) / "oom").exists() and not rec.oom_killed:
            rec = dataclasses.replace(rec, oom_killed=True)
    return rec


def run_bubblewrap(engine: EngineConfig, rootfs: Path, binds: Sequence[tuple[Path, str, bool]], command: Sequence[str], output_dir: Path,
                   limits: Limits, env: dict[str, str] | None = None) -> RunRecord:  # fmt: skip
    """Run ``command`` in a bubblewrap sandbox on ``rootfs`` as the unprivileged user, with rlimits."""
    cmd = bwrap_args(engine, rootfs, binds, command, limits, {**thread_env(limits), **(env or {})})
    return execute(cmd, limits, output_dir, own_rlimits=True, as_sandbox_user=True)


class UnloadableImage(InfrastructureError):
    """An image archive the engine refuses: the submission's fault, not the organiser's."""


def load_image(engine: EngineConfig, archive: Path) -> str:
    """Load a ``podman save`` / ``docker save`` archive; returns the image reference (its id)."""
    res = subprocess.run([*engine.command, "load", "-q", "-i", str(archive)], capture_output=True, text=True, check=False, timeout=900)
    if res.returncode != 0:
        why = res.stderr.strip()[-300:]
        if "no space left" in why.lower():
            raise InfrastructureError(f"{engine.kind} load of {archive} failed: the engine's storage is full ({why})")
        raise UnloadableImage(f"the image archive does not load ({engine.kind} load exit {res.returncode}: {why})")
    ref = res.stdout.strip().splitlines()[-1].split("Loaded image(s):")[-1].split("Loaded image:")[-1].strip()
    return ref.split(",")[0].strip()


def remove_image(engine: EngineConfig, ref: str) -> None:
    """Remove an image the runner loaded (Apptainer runs files: nothing to remove)."""
    if engine.kind in ("podman", "docker"):
        subprocess.run([*engine.command, "rmi", "-f", ref], capture_output=True, check=False, timeout=300)
