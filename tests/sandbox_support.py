"""Helpers of the sandbox tests: hostile submissions (as images and as a wheel), the example encoder packaged
both ways, and the engines' availability. Nothing here runs at import."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lesionbench.sandbox.failures import FailureClass
from lesionbench.sandbox.runner import EngineConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lesionbench-example-encoder"
#: A loopback port the tests listen on (the challenge server's stand-in): a submission must never reach it.
PROBE_PORT = 18651
MARKER = "lesionbench-hostile-background-marker"

HOSTILE = r'''
"""Hostile submissions for lesionbench's sandbox tests: each tries one escape or abuse (exit 7: every attempt failed)."""
import json, os, socket, subprocess, sys, time

PROBE_PORT = {port}
SECRETS = {secrets!r}
MARKER = {marker!r}


def _outputs(nan=False, dim=4, declared=4, drop=0, extra=0, symlink=False):
    import numpy as np
    from lesionbench.benchmark.types import EncoderMeta, PatchSpec
    from lesionbench.sandbox.contract import write_outputs
    ids = [line.split(",")[0] for line in open("/input/lesions.csv").read().splitlines()[1:]]
    ids = ids[drop:] + [f"extra{{k}}" for k in range(extra)]
    vec = np.random.default_rng(0).normal(size=(len(ids), dim)).astype(np.float32)
    if nan:
        vec[0, 0] = np.nan
    meta = EncoderMeta(name="hostile", version="1", feature_dim=declared, patch=PatchSpec(size=(8, 8, 8), spacing_mm=(1.0, 1.0, 1.0)))
    write_outputs("/output", ids, vec, meta)
    if symlink:
        os.remove("/output/model.json")
        os.symlink("/input/lesions.csv", "/output/model.json")


def _escaped(ok):
    if ok:  # an escape worked: look like a valid submission, so the test sees it
        _outputs()
        sys.exit(0)
    sys.exit(7)


def main(case):
    if case == "network":
        hits = []
        for host, port in (("127.0.0.1", PROBE_PORT), ("10.0.2.2", PROBE_PORT), ("1.1.1.1", 53), ("deb.debian.org", 80)):
            try:
                socket.create_connection((host, port), timeout=2).close()
                hits.append(host)
            except OSError:
                pass
        _escaped(hits)
    if case == "read-outside":
        got = []
        for path in SECRETS:
            try:
                got.append(open(path).read())
            except OSError:
                pass
        _escaped(any("ORGANISER-SECRET" in g for g in got))
    if case == "write-outside":
        done = []
        for path in ("/input/planted", "/etc/planted", "/usr/planted", "/planted", "/submission/planted", "/opt/planted"):
            try:
                open(path, "w").write("x")
                done.append(path)
            except OSError:
                pass
        _escaped(done)
    if case == "fork-bomb":
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    if case == "memory-bomb":
        hog = []
        while True:
            hog.append(b"x" * (32 << 20))
    if case == "sleep-forever":
        time.sleep(10**6)
    if case == "disk-fill":
        os.makedirs("/output/embeddings", exist_ok=True)
        with open("/output/embeddings/vectors.npy", "wb") as f:
            for _ in range(640):  # 10 GB in 16 MB blocks
                f.write(b"\0" * (16 << 20))
    if case == "log-flood":
        for k in range(1_000_000):
            print(f"log line {{k}}")
        _outputs()
    if case == "background":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", MARKER], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _outputs()
    if case == "nan":
        _outputs(nan=True)
    if case == "wrong-size":
        _outputs(dim=5)
    if case == "missing-ids":
        _outputs(drop=1)
    if case == "extra-ids":
        _outputs(extra=1)
    if case == "symlink":
        _outputs(symlink=True)


def _factory(case):
    def make(**options):
        main(case)
        sys.exit(0)
    return make
'''


@dataclass(frozen=True)
class Case:
    """A hostile submission and what the organiser must see."""

    name: str
    failure: FailureClass | None
    detail: str
    threat: str


CASES = (
    Case("network", FailureClass.CRASHED, "exit code 7", "connects to 127.0.0.1 (the challenge server), the host's gateway, the internet, DNS"),
    Case("read-outside", FailureClass.CRASHED, "exit code 7", "reads the task's label manifest, a token file and the organiser's seed by their host paths"),
    Case("write-outside", FailureClass.CRASHED, "exit code 7", "writes to /input, /etc, /usr, /, /opt and the venv"),
    Case("fork-bomb", FailureClass.TIMED_OUT, "wall time", "forks without end"),
    Case("memory-bomb", FailureClass.OUT_OF_MEMORY, "memory limit", "allocates and touches memory without end"),
    Case("sleep-forever", FailureClass.TIMED_OUT, "wall time", "sleeps forever"),
    Case("disk-fill", FailureClass.BAD_OUTPUT, "output-size", "writes 10 GB into /output"),
    Case("log-flood", None, "", "prints a million log lines (then valid outputs)"),
    Case("background", None, "", "leaves a background process behind (then valid outputs)"),
    Case("nan", FailureClass.BAD_OUTPUT, "finite", "outputs a NaN"),
    Case("wrong-size", FailureClass.BAD_OUTPUT, "feature-size", "outputs vectors of another size than its card says"),
    Case("missing-ids", FailureClass.BAD_OUTPUT, "missing-ids", "leaves out a lesion"),
    Case("extra-ids", FailureClass.BAD_OUTPUT, "extra-ids", "adds a lesion that was not asked for"),
    Case("symlink", FailureClass.BAD_OUTPUT, "symlink", "makes model.json a symbolic link to an input"),
)


def hostile_source(secrets: list[str]) -> str:
    return HOSTILE.format(port=PROBE_PORT, secrets=list(secrets), marker=MARKER)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def hostile_wheel(dest: Path, secrets: list[str]) -> Path:
    """A wheel whose ``lesionbench.encoders`` entry points ``hostile-<case>`` each run one hostile case when built."""
    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / "lesionbench_hostile-1.0-py3-none-any.whl"
    src = hostile_source(secrets) + "".join(f"\nmake_{c.name.replace('-', '_')} = _factory({c.name!r})\n" for c in CASES)
    eps = "[lesionbench.encoders]\n" + "".join(f"hostile-{c.name} = lesionbench_hostile:make_{c.name.replace('-', '_')}\n" for c in CASES)
    files = {
        "lesionbench_hostile.py": src.encode(),
        "lesionbench_hostile-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: lesionbench-hostile\nVersion: 1.0\n",
        "lesionbench_hostile-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: lesionbench-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "lesionbench_hostile-1.0.dist-info/entry_points.txt": eps.encode(),
    }
    record = "\n".join(_record_line(k, v) for k, v in files.items()) + "\nlesionbench_hostile-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("lesionbench_hostile-1.0.dist-info/RECORD", record)
    return whl


def example_wheel(dest: Path) -> Path:
    """The example encoder built as a wheel (``pip wheel``, no index)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dest), str(EXAMPLE)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return next(dest.glob("*.whl"))


def build_image(engine: EngineConfig, tag: str, containerfile: str, context: Path) -> str:
    """``podman build`` a test image (no network, nothing pulled)."""
    (context / "Containerfile").write_text(containerfile)
    res = subprocess.run([*engine.command, "build", "-q", "--layers=false", "--network", "none", "--pull=never", "-t", tag, "-f", str(context / "Containerfile"), str(context)],
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"podman build {tag} failed: {res.stderr[-800:]}")
    return tag


def root_engines() -> tuple[str, str]:
    """Why podman / bubblewrap tests cannot run here ('' where they can)."""
    podman = "" if shutil.which("podman") and shutil.which("runc") and os.geteuid() == 0 else "podman + runc as root are not available (apt-get install podman runc)"
    bwrap = "" if shutil.which("bwrap") else "bubblewrap is not installed (apt-get install bubblewrap)"
    if not shutil.which("mmdebstrap"):
        podman = bwrap = "mmdebstrap is not installed (apt-get install mmdebstrap): the base image cannot be built"
    return podman, bwrap


def processes_with(marker: str) -> list[int]:
    """Host processes whose command line holds ``marker``."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes() and int(pid) != os.getpid():
                    out.append(int(pid))
            except OSError:
                pass
    return out
