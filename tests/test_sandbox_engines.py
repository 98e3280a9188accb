"""Code submissions in real sandboxes: Podman (images) and bubblewrap (packages) on a small hidden cohort.

The base image is built once per machine and cached by its recipe digest (``$LESIONBENCH_SANDBOX_CACHE``, default
``$TMPDIR/lesionbench-sandbox-cache``); the hostile suites run under tight limits (15 s wall, 256 MB, 64 processes,
32 MB of output) so they stay bounded. These tests skip only where an engine is absent (CI installs them)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lesionbench.sandbox.evaluate import run_code_submission
from lesionbench.sandbox.runner import EngineConfig, Limits
from sandbox_support import CASES, EXAMPLE, MARKER, PROBE_PORT, build_image, example_wheel, hostile_source, hostile_wheel, processes_with, root_engines

logger = logging.getLogger(__name__)
PODMAN_MISSING, BWRAP_MISSING = root_engines()
SCORING = {"probe": "linear", "fractions": (1.0,), "seeds": (0,), "n_boot": 50}
HOSTILE_LIMITS = Limits(memory_mb=256, pids=64, cpus=1.0, wall_s=15.0, output_mb=32, tmp_mb=32)
#: bubblewrap's memory limit is RLIMIT_AS (address space, not resident memory): the serving process's imports need more
BWRAP_HOSTILE_LIMITS = dataclasses.replace(HOSTILE_LIMITS, memory_mb=1024)
PODMAN = EngineConfig.podman()


@pytest.fixture(scope="session")
def base():
    from lesionbench.sandbox.base_image import ensure_base

    cache = Path(os.environ.get("LESIONBENCH_SANDBOX_CACHE") or Path(tempfile.gettempdir()) / "lesionbench-sandbox-cache")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:  # xdist workers: one builds, the other waits and finds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_base(cache=cache, engine=list(PODMAN.command) if not PODMAN_MISSING else None)


@pytest.fixture(scope="session")
def task(tmp_path_factory):
    from lesionbench.sandbox.hidden import hidden_task

    root = tmp_path_factory.mktemp("hidden")
    # the organiser's seed file, fixed here so that 6 patients give train, validation and test patients
    (root / "seed").write_text("2\n")
    return hidden_task("synthetic_malignancy", root=root / "cohort", patients=6, seed_file=root / "seed")


@pytest.fixture(scope="session")
def secrets_on_host(task, tmp_path_factory):
    """Host paths a submission must never read: the task's labels, a token file, the organiser's seed."""
    token = tmp_path_factory.mktemp("store") / "token"
    token.write_text("ORGANISER-SECRET token\n")
    manifest = Path(task.data_dir) / "manifest.csv"
    with open(manifest, "a") as f:
        f.write("")  # the labels file exists; its content is the secret
    return [str(manifest), str(token), str(Path(task.data_dir).parents[1] / "seed"), "/etc/shadow"], token


@contextlib.contextmanager
def _listener():
    """The challenge server's stand-in on loopback: counts every connection it accepts."""
    hits = []
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", PROBE_PORT))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, addr = srv.accept()
                hits.append(addr)
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield hits
    finally:
        stop.set()
        t.join()
        srv.close()


def _direct(task):
    from lesionbench.benchmark.encoders.features import extract_features

    spec = importlib.util.spec_from_file_location("lesionbench_example_encoder_direct", EXAMPLE / "lesionbench_example_encoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.IntensityHistogramEncoder(), extract_features(task.manifest(), mod.IntensityHistogramEncoder(), cache=False, progress=False)


def _metrics(result):
    """Every run's metrics with their CIs, as text (so an undefined metric, NaN, compares equal to itself)."""
    return {(r.fraction, r.seed, m): repr((v.value, v.ci_low, v.ci_high)) for r in result.runs for m, v in r.metrics.items()}


@pytest.mark.skipif(bool(BWRAP_MISSING), reason=BWRAP_MISSING or "-")
def test_example_encoder_as_a_package_matches_running_it_directly(base, task, tmp_path):
    from lesionbench.benchmark.scoring.scorer import evaluate

    enc, feats = _direct(task)
    direct = evaluate(task, enc, out_dir=tmp_path / "direct", progress=False, **SCORING)
    whl = example_wheel(tmp_path / "wheels")
    res = run_code_submission(whl, kind="package", task=task, out_dir=tmp_path / "sandboxed", base=base, limits=Limits(wall_s=300), **SCORING)
    assert res.outcome.ok, res.outcome
    np.testing.assert_array_equal(res.embeddings, feats)
    assert _metrics(res.result) == _metrics(direct)
    assert res.result.extra["code_submission"]["hidden_data"] is True and res.result.extra["code_submission"]["engine"] == "bubblewrap"
    assert "+hidden-6p-" in res.result.task.version and (res.result_dir / "result.json").is_file()


@pytest.mark.skipif(bool(PODMAN_MISSING), reason=PODMAN_MISSING or "-")
def test_example_encoder_as_an_image_archive_matches_running_it_directly(base, task, tmp_path):
    from lesionbench.benchmark.scoring.scorer import evaluate

    enc, feats = _direct(task)
    example_wheel(tmp_path / "ctx" / "wheels")
    # the participant's whole packaging: the base, their wheel, the encoder's name
    tag = build_image(PODMAN, "localhost/lesionbench-test-example:1", f"""FROM {base.image}
USER 0:0
COPY wheels /tmp/wheels
RUN pip=$(ls /usr/share/python-wheels/pip-*.whl) && python3 $pip/pip install -q --no-index --no-deps --break-system-packages /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER 65534:65534
ENV LESIONBENCH_ENCODER={enc.meta.name}
""", tmp_path / "ctx")
    archive = tmp_path / "example.tar"
    subprocess.run([*PODMAN.command, "save", "-q", "-o", str(archive), tag], check=True, capture_output=True, timeout=300)
    subprocess.run([*PODMAN.command, "rmi", "-f", tag], check=True, capture_output=True, timeout=120)
    direct = evaluate(task, enc, out_dir=tmp_path / "direct", progress=False, **SCORING)
    res = run_code_submission(archive, kind="image", task=task, out_dir=tmp_path / "sandboxed", limits=Limits(wall_s=300), **SCORING)
    assert res.outcome.ok, res.outcome
    np.testing.assert_array_equal(res.embeddings, feats)
    assert _metrics(res.result) == _metrics(direct)
    assert res.result.extra["code_submission"]["engine"] == "podman" and res.result.extra["code_submission"]["submission"].startswith("sha256:")


def _check_case(case, outcome):
    assert outcome.failure is case.failure, (case.name, outcome)
    assert case.detail in outcome.detail, (case.name, outcome)


@pytest.mark.skipif(bool(PODMAN_MISSING), reason=PODMAN_MISSING or "-")
def test_hostile_images_are_contained_and_classified(base, task, secrets_on_host, tmp_path):
    secrets, token = secrets_on_host
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "lesionbench_hostile.py").write_text(hostile_source(secrets))
    common = build_image(PODMAN, "localhost/lesionbench-test-hostile:common", f"FROM {base.image}\nCOPY lesionbench_hostile.py /opt/hostile/\nENV PYTHONPATH=/opt/hostile\n", ctx)
    tags = {c.name: build_image(PODMAN, f"localhost/lesionbench-test-hostile:{c.name}",
                                f'FROM {common}\nENTRYPOINT ["python3", "-c", "import lesionbench_hostile as h; h.main({c.name!r})"]\n', ctx)
            for c in CASES}  # fmt: skip
    start = time.monotonic()
    with _listener() as hits, ThreadPoolExecutor(3) as pool:
        futures = {c.name: pool.submit(run_code_submission, tags[c.name], kind="image", task=task, out_dir=tmp_path / c.name, limits=HOSTILE_LIMITS, **SCORING)
                   for c in CASES}  # fmt: skip
        results = {name: f.result() for name, f in futures.items()}
    elapsed = time.monotonic() - start
    rows = []
    for c in CASES:
        out = results[c.name].outcome
        rows.append(f"| {c.name} | {out.failure or 'ok'} | {out.detail} | {out.wall_s:.1f} s | {out.log_lines} |")
        _check_case(c, out)
    logger.warning("hostile images (%.1f s):\n%s", elapsed, "\n".join(rows))
    assert hits == [], "a submission reached the loopback listener"
    assert results["log-flood"].outcome.log_lines >= 1_000_000 and len(results["log-flood"].outcome.log_tail) <= HOSTILE_LIMITS.log_bytes
    assert processes_with(MARKER) == [], "a background process outlived its container"
    assert token.read_text() == "ORGANISER-SECRET token\n"
    left = subprocess.run([*PODMAN.command, "ps", "-a", "--filter", "name=lesionbench-sub-", "-q"], capture_output=True, text=True, check=False).stdout.split()
    assert left == [], "containers were left behind"
    for tag in [*tags.values(), common]:
        subprocess.run([*PODMAN.command, "rmi", "-f", tag], capture_output=True, timeout=120, check=False)


BWRAP_CASES = ("network", "read-outside", "write-outside", "fork-bomb", "memory-bomb", "disk-fill", "background", "nan")


@pytest.mark.skipif(bool(BWRAP_MISSING), reason=BWRAP_MISSING or "-")
def test_hostile_packages_are_contained_and_classified(base, task, secrets_on_host, tmp_path):
    secrets, _ = secrets_on_host
    whl = hostile_wheel(tmp_path / "wheels", secrets)
    cases = [c for c in CASES if c.name in BWRAP_CASES]
    start = time.monotonic()
    # side by side: each job runs as a user of its own, so one's fork bomb (RLIMIT_NPROC) cannot starve the others
    with _listener() as hits, ThreadPoolExecutor(3) as pool:
        futures = {c.name: pool.submit(run_code_submission, whl, kind="package", encoder=f"hostile-{c.name}", task=task, out_dir=tmp_path / c.name,
                                       base=base, limits=BWRAP_HOSTILE_LIMITS, **SCORING) for c in cases}  # fmt: skip
        results = {name: f.result() for name, f in futures.items()}
    logger.warning("hostile packages (%.1f s): %s", time.monotonic() - start, {k: (str(v.outcome.failure), v.outcome.detail, round(v.outcome.wall_s, 1)) for k, v in results.items()})
    for c in cases:
        _check_case(c, results[c.name].outcome)
    assert hits == []
    assert processes_with(MARKER) == [], "a background process outlived its sandbox"
