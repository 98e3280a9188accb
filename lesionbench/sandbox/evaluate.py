"""The organiser side of a code submission: stage the hidden lesions, run the sandbox, check, score.

:func:`run_code_submission` is the one call (the CLI's ``evaluate-image`` / ``evaluate-package`` and the
challenge server's job kind use it):

1. **stage** every lesion of the task (train, validation and test) into ``input/``: ``lesions.csv`` with only
   the contract's columns, under pseudonymous lesion ids in a shuffled order, and the images hard-linked (or
   copied) under neutral names. Labels, patient ids and splits never enter the sandbox;
2. **run** the submission (an image archive or reference with Podman/Docker/Apptainer, or wheels in a
   bubblewrap venv installed offline) under :class:`~lesionbench.sandbox.runner.Limits`;
3. **check** the outputs (:func:`lesionbench.sandbox.contract.read_outputs`) and classify any failure
   (:class:`~lesionbench.sandbox.failures.FailureClass`);
4. **score** the embeddings with the ordinary scorer (:func:`lesionbench.benchmark.scoring.scorer.evaluate` with
   ``features=``: the same probes, protocols, seeds and CIs as any entry) and write ordinary results, with
   ``extra["code_submission"]`` saying they were computed in a sandbox on hidden data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.scoring.scorer import evaluate, result_folder, write_result
from lesionbench.benchmark.types import EncoderMeta, TaskResult
from lesionbench.sandbox.contract import Embeddings, read_outputs, write_inputs
from lesionbench.sandbox.failures import BadOutputError, FailureClass, InfrastructureError, Outcome, SubmissionFailed
from lesionbench.sandbox.runner import EngineConfig, Limits, RunRecord, UnloadableImage, job_uid, load_image, output_area, remove_image, run_bubblewrap, run_container

logger = logging.getLogger(__name__)

SubmissionKind = Literal["image", "package"]
#: Exit codes with which an OCI engine reports its own failure (not the container's).
ENGINE_FAILURE_CODES = (125,)


@dataclass(frozen=True)
class CodeSubmissionResult:
    """A submission's outcome and, when it passed, its scored :class:`TaskResult` (written under ``out_dir``)."""

    outcome: Outcome
    result: TaskResult | None = None
    result_dir: Path | None = None
    #: The checked embeddings in the task manifest's row order (``None`` when the run failed).
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class _Frozen:
    """The scorer's view of a sandboxed encoder: its card, no code (the features are given)."""

    meta: EncoderMeta


def _image_suffix(path: str) -> str:
    name = Path(path).name.lower()
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
        if name.endswith(ext):
            return ext
    return Path(path).suffix


def _place(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (same file system), else copy; world-readable either way."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    if dest.stat().st_mode & 0o444 != 0o444:
        shutil.copyfile(src, dest.with_suffix(dest.suffix + ".tmp"))
        dest.unlink()
        dest.with_suffix(dest.suffix + ".tmp").rename(dest)
        dest.chmod(0o444)


def stage_inputs(manifest: pd.DataFrame, input_dir: Path) -> list[str]:
    """Stage ``manifest``'s lesions into ``input_dir`` under pseudonymous ids; returns each manifest row's staged id."""
    input_dir = Path(input_dir)
    (input_dir / "images").mkdir(parents=True, exist_ok=True)
    n = len(manifest)
    ids = [f"L{secrets.token_hex(6)}" for _ in range(n)]
    names: dict[str, str] = {}
    rows = []
    for k in np.random.default_rng(secrets.randbits(64)).permutation(n).tolist():
        rec = manifest.iloc[k]
        paths = []
        for col in ("image_path", "mask_path"):
            src = str(rec.get(col, "") or "") if col in manifest.columns else ""
            if not src or src == "nan":
                paths.append("")
                continue
            if src not in names:
                names[src] = f"images/{len(names):05d}{_image_suffix(src)}"
                _place(Path(src), input_dir / names[src])
            paths.append(names[src])
        rows.append({"lesion_id": ids[k], "image_path": paths[0], "coordX": rec["coordX"], "coordY": rec["coordY"], "coordZ": rec["coordZ"], "mask_path": paths[1]})
    write_inputs(pd.DataFrame(rows), input_dir)
    for p in [input_dir, input_dir / "images"]:
        p.chmod(0o755)
    return ids


def wheel_encoders(wheels: Sequence[Path]) -> list[str]:
    """The ``lesionbench.encoders`` entry-point names the wheels declare (read from their metadata, not run)."""
    names = []
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            for member in z.namelist():
                if member.count("/") == 1 and member.split("/")[0].endswith(".dist-info") and member.endswith("/entry_points.txt"):
                    section = ""
                    for line in z.read(member).decode("utf-8", "replace").splitlines():
                        line = line.strip()
                        if line.startswith("["):
                            section = line.strip("[]").strip()
                        elif section == "lesionbench.encoders" and "=" in line:
                            names.append(line.split("=", 1)[0].strip())
    return names


def _wheel_list(path: Path) -> list[Path]:
    path = Path(path)
    wheels = sorted(path.glob("*.whl")) if path.is_dir() else [path]
    if not wheels or any(w.suffix != ".whl" or not w.is_file() for w in wheels):
        raise ConfigurationError(f"{path}: a package submission is a .whl file or a folder of .whl files (its dependencies included); build one with `pip wheel . -w wheels/`.")
    return wheels


def classify(record: RunRecord, limits: Limits, *, kind: str) -> Outcome | None:
    """The failure class of a finished run (``None``: it exited cleanly and its outputs are to be checked)."""
    base = {"exit_code": record.exit_code, "wall_s": record.wall_s, "log_tail": record.log_tail, "log_lines": record.log_lines}
    if record.timed_out:
        return Outcome(FailureClass.TIMED_OUT, f"wall time limit {limits.wall_s:g} s", **base)
    if record.oom_killed or (kind == "bubblewrap" and record.exit_code != 0 and "MemoryError" in record.log_tail):
        return Outcome(FailureClass.OUT_OF_MEMORY, f"memory limit {limits.memory_mb} MB", **base)
    if record.output_full:
        return Outcome(FailureClass.BAD_OUTPUT, f"output-size: /output reached its cap of {limits.output_mb} MB", **base)
    if kind in ("podman", "docker") and record.exit_code in ENGINE_FAILURE_CODES:
        return Outcome(FailureClass.INFRASTRUCTURE, f"the {kind} engine failed (exit {record.exit_code})", **base)
    if record.exit_code != 0:
        return Outcome(FailureClass.CRASHED, f"exit code {record.exit_code}", **base)
    return None


def install_package(wheels: Sequence[Path], work: Path, *, engine: EngineConfig, base: Any, limits: Limits) -> Outcome | None:
    """Install the wheels (``--no-index --no-deps``: exactly the files given) into ``work/submission/venv`` on the
    base's Python, inside the same sandbox as the run; ``None`` when it worked, else the failure."""
    whl_dir, venv = work / "wheels", work / "submission"
    whl_dir.mkdir(parents=True)
    for w in wheels:
        shutil.copyfile(w, whl_dir / w.name)
    venv.mkdir()
    if os.geteuid() == 0:
        os.chown(venv, limits.uid, limits.uid)
    install = ("set -e; pip=$(ls /usr/share/python-wheels/pip-*.whl); python3 -m venv --without-pip --system-site-packages /submission/venv; "
               '/submission/venv/bin/python "$pip/pip" install -q --no-index --no-deps --no-cache-dir /input/*.whl')  # fmt: skip
    with output_area(work / "install-out", limits) as scratch:
        # the wheels where the inputs go at run time: the read-only root only has mount points /input, /output, /submission
        rec = run_bubblewrap(engine, base.rootfs, [(whl_dir, "/input", False), (venv, "/submission", True)], ["/bin/sh", "-c", install], scratch, limits)
    if rec.exit_code == 0 and not rec.timed_out:
        return None
    failed = classify(rec, limits, kind="bubblewrap") or Outcome(FailureClass.CRASHED, "exit code 0")
    return dataclasses.replace(failed, detail=f"installing the wheels: {failed.detail}")


#: The command that serves a package's encoder inside bubblewrap (its venv at /submission/venv).
PACKAGE_COMMAND = ("/submission/venv/bin/python", "-m", "lesionbench", "serve-contract")


def package_binds(input_dir: Path, output_dir: Path, work: Path) -> list[tuple[Path, str, bool]]:
    """What a package's run sees: the inputs and its venv read-only, ``/output`` writable."""
    return [(input_dir, "/input", False), (output_dir, "/output", True), (work / "submission", "/submission", False)]


def run_sandboxed(submission: str | Path, kind: SubmissionKind, ids: list[str], input_dir: Path, work: Path, *, engine: EngineConfig,
                  limits: Limits, encoder: str | None = None, base: Any = None) -> tuple[Outcome, Embeddings | None]:  # fmt: skip
    """Run a staged submission and check its outputs: (outcome, embeddings in ``ids`` order or ``None``)."""
    env: dict[str, str] = {}
    if kind == "package":
        if engine.kind != "bubblewrap":
            raise ConfigurationError(f"Package submissions run under bubblewrap, not {engine.kind}; build an image of the package for {engine.kind}.")
        wheels = _wheel_list(Path(submission))
        found = wheel_encoders(wheels)
        name = encoder or (found[0] if len(found) == 1 else "")
        if not name:
            raise ConfigurationError(f"The wheels declare {len(found)} lesionbench.encoders entry points ({found}); name the one to run with --encoder.")
        env["LESIONBENCH_ENCODER"] = name
        failed = install_package(wheels, work, engine=engine, base=base, limits=limits)
        if failed is not None:
            return failed, None
    with output_area(work / "output", limits) as out:
        if kind == "package":
            rec = run_bubblewrap(engine, base.rootfs, package_binds(input_dir, out, work), PACKAGE_COMMAND, out, limits, env)
        else:
            loaded = Path(str(submission)).is_file()
            try:
                ref = load_image(engine, Path(submission)) if loaded else str(submission)
            except UnloadableImage as exc:
                return Outcome(FailureClass.CRASHED, str(exc)), None
            try:
                rec = run_container(engine, ref, input_dir, out, limits, env)
            finally:
                if loaded:  # an archive's image is the submission's alone: it goes with the run
                    remove_image(engine, ref)
        failed = classify(rec, limits, kind=engine.kind)
        if failed is not None:
            return failed, None
        ok = {"exit_code": rec.exit_code, "wall_s": rec.wall_s, "log_tail": rec.log_tail, "log_lines": rec.log_lines}
        try:
            emb = read_outputs(out, ids, max_bytes=limits.output_bytes)
        except BadOutputError as exc:
            return Outcome(FailureClass.BAD_OUTPUT, str(exc), **ok), None
    return Outcome(None, "", **ok), emb


def run_code_submission(submission: str | Path, *, kind: SubmissionKind, task: Any, out_dir: Path, engine: EngineConfig | str | None = None,
                        limits: Limits | None = None, encoder: str | None = None, base: Any = None, work_dir: Path | None = None,
                        hidden: bool = True, **scoring: Any) -> CodeSubmissionResult:  # fmt: skip
    """Run one code submission on every lesion of ``task`` and score it; never raises for the submission's own
    failures (they are the :class:`Outcome`), only for the organiser's configuration.

    ``kind``: ``"image"`` (a ``podman save``/``docker save`` archive, or an image reference already on the
    engine) or ``"package"`` (a wheel or folder of wheels, run under bubblewrap). ``engine``: an
    :class:`EngineConfig` or its name (default podman for images, bubblewrap for packages). ``base``: the
    :class:`~lesionbench.sandbox.base_image.BaseImage` whose root filesystem hosts packages (built if needed).
    ``scoring``: options of :func:`lesionbench.benchmark.scoring.scorer.evaluate` (``probe``, ``fractions``, ``seeds``,
    ``n_boot``, ``shots``, ...).
    """
    if kind not in ("image", "package"):
        raise ConfigurationError(f"Unknown submission kind {kind!r}; choose image or package.")
    engine = engine if isinstance(engine, EngineConfig) else EngineConfig.named(engine or ("podman" if kind == "image" else "bubblewrap"))
    limits = limits or Limits()
    if os.geteuid() == 0 and limits.uid == Limits().uid:
        limits = dataclasses.replace(limits, uid=job_uid())  # a user of its own: process limits stay per job
    if not engine.available():
        return CodeSubmissionResult(Outcome(FailureClass.INFRASTRUCTURE, f"the {engine.kind} engine is not available on this worker"))
    manifest = task.manifest().reset_index(drop=True)
    if kind == "package" and base is None:
        from lesionbench.sandbox.base_image import ensure_base

        base = ensure_base()
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="lesionbench-submission-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        ids = stage_inputs(manifest, work / "input")
        try:
            outcome, emb = run_sandboxed(submission, kind, ids, work / "input", work, engine=engine, limits=limits, encoder=encoder, base=base)
        except InfrastructureError as exc:
            return CodeSubmissionResult(Outcome(FailureClass.INFRASTRUCTURE, str(exc)))
    logger.info("submission %s: %s %s (%.1f s, %d log lines)", submission, outcome.failure or "ok", outcome.detail, outcome.wall_s, outcome.log_lines)
    if emb is None:
        return CodeSubmissionResult(outcome)
    scoring.setdefault("progress", False)
    result = evaluate(task, _Frozen(emb.encoder), features=emb.vectors, out_dir=Path(out_dir), **scoring)
    digest = _submission_digest(Path(submission)) if Path(str(submission)).exists() else str(submission)
    extra = {**result.extra, "code_submission": {"hidden_data": bool(hidden), "kind": kind, "engine": engine.kind, "submission": digest,
                                                 "contract": emb.card.get("contract"), "wall_s": round(outcome.wall_s, 3)}}  # fmt: skip
    result = dataclasses.replace(result, extra=extra)
    rdir = result_folder(Path(out_dir), result)
    write_result(result, rdir)
    return CodeSubmissionResult(outcome, result, rdir, emb.vectors)


def _submission_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.whl")) if path.is_dir() else [path]:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def raise_for_failure(res: CodeSubmissionResult) -> TaskResult:
    """The result, or :class:`SubmissionFailed` with the outcome."""
    if res.result is None:
        raise SubmissionFailed(res.outcome)
    return res.result


def submit_code_submission(client: Any, submission: str | Path, *, gpus: int = 0, **kwargs: Any) -> Any:
    """:func:`run_code_submission` as a task of a Dask ``client``, on a worker that declares the resource
    ``sandbox`` (one with the engine: ``dask worker --resources "sandbox=1,GPU=1"``) and, with ``gpus``, as many
    ``GPU``s; returns the future. The challenge server's job kind calls this or the function itself."""
    resources = {"sandbox": 1, **({"GPU": gpus} if gpus else {})}
    return client.submit(run_code_submission, submission, resources=resources, pure=False, **kwargs)
