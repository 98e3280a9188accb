"""The code-submission contract's checks, the failure classes and the staging of hidden lesions (no engine needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.types import EncoderMeta, PatchSpec
from lesionbench.sandbox import contract as C
from lesionbench.sandbox.evaluate import classify, stage_inputs, wheel_encoders
from lesionbench.sandbox.failures import BadOutputError, FailureClass, Outcome
from lesionbench.sandbox.runner import EngineConfig, Limits, RunRecord, bwrap_args, container_args

META = EncoderMeta(name="enc", version="1", feature_dim=3, patch=PatchSpec(size=(8, 8, 8), spacing_mm=(1.0, 1.0, 1.0)))
IDS = ["a", "b", "c", "d"]
CAP = 1 << 20


def _write(out: Path, ids=IDS, vectors=None) -> Path:
    vectors = np.arange(len(ids) * 3, dtype=np.float32).reshape(len(ids), 3) if vectors is None else vectors
    C.write_outputs(out, list(ids), vectors, META)
    return out


def _check(out: Path, expected=IDS) -> str:
    with pytest.raises(BadOutputError) as exc:
        C.read_outputs(out, list(expected), max_bytes=CAP)
    return exc.value.check


def test_round_trip_reorders_to_the_expected_ids(tmp_path):
    out = _write(tmp_path / "o")
    emb = C.read_outputs(out, ["c", "a", "d", "b"], max_bytes=CAP)
    assert emb.vectors.dtype == np.float32 and emb.vectors.shape == (4, 3)
    assert emb.vectors[0].tolist() == [6.0, 7.0, 8.0] and emb.vectors[1].tolist() == [0.0, 1.0, 2.0]
    assert emb.encoder == META and emb.card["contract"] == C.CONTRACT_VERSION


def test_nan_wrong_size_missing_extra_and_repeated_ids_are_named(tmp_path):
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    assert _check(_write(tmp_path / "nan", vectors=bad)) == "finite"
    out = _write(tmp_path / "size")
    np.save(out / "embeddings" / "vectors.npy", np.ones((4, 5), np.float32))
    assert _check(out) == "feature-size"
    assert _check(_write(tmp_path / "missing", ids=IDS[:3])) == "missing-ids"
    assert _check(_write(tmp_path / "extra", ids=[*IDS, "zz"])) == "extra-ids"
    out = _write(tmp_path / "dup")
    (out / "embeddings" / "lesion_ids.json").write_text(json.dumps(["a", "a", "b", "c"]))
    assert _check(out) == "ids"


def test_symlinks_extra_files_and_oversize_outputs_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("labels")
    out = _write(tmp_path / "link")
    (out / "model.json").unlink()
    os.symlink(secret, out / "model.json")
    assert _check(out) == "symlink"
    out = _write(tmp_path / "extra-file")
    (out / "notes.txt").write_text("hi")
    assert _check(out) == "output-files"
    out = _write(tmp_path / "big")
    with pytest.raises(BadOutputError) as exc:
        C.read_outputs(out, IDS, max_bytes=100)
    assert exc.value.check == "output-size"


def test_hostile_array_headers_are_refused_before_loading(tmp_path):
    out = _write(tmp_path / "huge")
    path = out / "embeddings" / "vectors.npy"
    with open(path, "wb") as f:  # a header promising 4 x 10^12 values, with no data behind it
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (4, 10**12)})
    (out / "model.json").write_text(json.dumps({"contract": C.CONTRACT_VERSION, "encoder": {**META.to_dict(), "feature_dim": 10**12}}))
    assert _check(out) == "model-card"  # feature_dim over the cap
    (out / "model.json").write_text(json.dumps({"contract": C.CONTRACT_VERSION, "encoder": META.to_dict()}))
    assert _check(out) == "feature-size"
    np.save(path, np.array([[{"x": 1}]] * 4, dtype=object), allow_pickle=True)
    assert _check(out) == "array-format"
    path.write_bytes(b"not an array")
    assert _check(out) == "array-format"
    (out / "model.json").write_text("{")
    assert _check(out) == "model-card"


def test_classification_of_runs():
    lim = Limits(wall_s=5, memory_mb=100, output_mb=10)
    assert classify(RunRecord(exit_code=137, wall_s=5.1, timed_out=True), lim, kind="podman").failure is FailureClass.TIMED_OUT
    assert classify(RunRecord(exit_code=137, wall_s=1, oom_killed=True), lim, kind="podman").failure is FailureClass.OUT_OF_MEMORY
    assert classify(RunRecord(exit_code=1, wall_s=1, log_tail="MemoryError"), lim, kind="bubblewrap").failure is FailureClass.OUT_OF_MEMORY
    assert classify(RunRecord(exit_code=137, wall_s=1), lim, kind="podman").detail == "exit code 137"  # a SIGKILL it sent itself
    assert classify(RunRecord(exit_code=1, wall_s=1, output_full=True), lim, kind="podman").detail.startswith("output-size")
    assert classify(RunRecord(exit_code=125, wall_s=1), lim, kind="podman").failure is FailureClass.INFRASTRUCTURE
    crash = classify(RunRecord(exit_code=3, wall_s=1, log_tail="Traceback"), lim, kind="podman")
    assert crash.failure is FailureClass.CRASHED and crash.detail == "exit code 3" and crash.counts_against_quota
    assert classify(RunRecord(exit_code=0, wall_s=1), lim, kind="podman") is None
    assert "log_tail" not in crash.for_participant("final") and crash.for_participant("sanity")["log_tail"] == "Traceback"
    assert not Outcome(FailureClass.INFRASTRUCTURE).counts_against_quota


def test_engine_command_lines_carry_every_default_restriction(tmp_path):
    lim = Limits(memory_mb=512, pids=32, cpus=1.5, output_mb=8, nofile=64)
    cmd = container_args(EngineConfig.podman(), "img", "n", tmp_path / "in", tmp_path / "out", lim, {"A": "1"})
    text = " ".join(cmd)
    for flag in ("--runtime runc", "--cgroup-manager cgroupfs", "--network none", "--read-only", "--cap-drop all", "--security-opt no-new-privileges",
                 "--memory 512m", "--pids-limit 32", "--cpus 1.5", "--pull never", "--ulimit nofile=64:64", "--ulimit nproc=32:32", f"{tmp_path / 'in'}:/input:ro"):
        assert flag in text, flag
    assert "--runtime" not in container_args(EngineConfig.docker(), "img", "n", tmp_path, tmp_path, lim, {})
    app = " ".join(container_args(EngineConfig.apptainer(), "img.sif", "n", tmp_path / "in", tmp_path / "out", Limits(gpus="all"), {}))
    assert "--containall" in app and "--network none" in app and "--nv" in app
    bw = bwrap_args(EngineConfig.bubblewrap(), tmp_path / "root", [(tmp_path / "in", "/input", False)], ["python3"], lim, {})
    assert bw[:4] == ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    assert ["--ro-bind", str(tmp_path / "in"), "/input"] == bw[bw.index("--ro-bind", 8) : bw.index("--ro-bind", 8) + 3]


@pytest.mark.skipif(not __import__("shutil").which("docker"), reason="needs the docker client (no daemon is used)")
@pytest.mark.parametrize("gpus", [None, "all"])
def test_the_docker_client_parses_the_docker_command_line(tmp_path, gpus):
    """Docker's own flag parser accepts every flag the runner gives it (with and without --gpus): the client
    parses the command line before it looks for a daemon, so a daemon nobody runs here answers instead of an
    "unknown flag" or "invalid argument" (the Podman line runs for real in tests/test_sandbox_engines.py)."""
    import subprocess

    cmd = container_args(EngineConfig.docker(), "lesionbench-no-such-image:0", "lb-parse-check", tmp_path / "in", tmp_path / "out",
                         Limits(memory_mb=512, pids=32, cpus=1.5, output_mb=8, nofile=64, gpus=gpus), {"A": "1"})  # fmt: skip
    assert ("--gpus" in cmd) == bool(gpus)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    said = (out.stdout + out.stderr).lower()
    assert out.returncode != 0 and "cannot connect to the docker daemon" in said, said
    assert "unknown flag" not in said and "invalid argument" not in said


def test_staging_carries_no_labels_and_pseudonymous_ids(tmp_path):
    img = tmp_path / "P001_scan.nii.gz"
    img.write_bytes(b"\0" * 10)
    manifest = pd.DataFrame({"lesion_id": ["P001_1", "P001_2"], "patient_id": ["P001", "P001"], "image_path": [str(img)] * 2,
                             "coordX": [1.0, 2.0], "coordY": [0.0, 0.0], "coordZ": [0.0, 0.0], "label": [1, 0], "split": ["train", "test"]})
    ids = stage_inputs(manifest, tmp_path / "input")
    staged = pd.read_csv(tmp_path / "input" / "lesions.csv", keep_default_na=False)
    assert list(staged.columns) == list(C.INPUT_COLUMNS)
    assert set(staged["lesion_id"]) == set(ids) and not set(ids) & {"P001_1", "P001_2"}
    assert staged["image_path"].tolist() == ["images/00000.nii.gz"] * 2 and "P001" not in (tmp_path / "input" / "lesions.csv").read_text()
    back = C.read_inputs(tmp_path / "input")
    assert "mask_path" not in back.columns and Path(back["image_path"][0]).read_bytes() == img.read_bytes()


def test_wheel_entry_points_are_read_without_installing(tmp_path):
    import zipfile

    whl = tmp_path / "enc-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("enc-1.0.dist-info/entry_points.txt", "[console_scripts]\nx = a:b\n\n[lesionbench.encoders]\nmy-enc = enc:Enc\n")
    assert wheel_encoders([whl]) == ["my-enc"]


def test_organiser_seed_is_drawn_once_private_and_never_named(tmp_path):
    from lesionbench.sandbox.hidden import organiser_seed, seed_digest

    path = tmp_path / "hidden" / "seed"
    seed = organiser_seed(path)
    assert organiser_seed(path) == seed and path.stat().st_mode & 0o777 == 0o600
    assert str(seed) not in seed_digest(seed) and seed_digest(seed) != seed_digest(seed + 1)
    path.write_text("not a number\n")
    with pytest.raises(Exception, match="one whole number"):
        organiser_seed(path)


def test_cli_refuses_a_missing_submission_with_one_error_line(tmp_path, capsys):
    from lesionbench.cli import main

    rc = main(["evaluate-package", str(tmp_path / "nope.whl"), "--task", "synthetic_malignancy", "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "nope.whl" in err
    assert not (tmp_path / "res").exists()
    rc = main(["evaluate-image", "nothing-here", "--task", "synthetic_malignancy", "--results", str(tmp_path / "res")])
    assert rc == 2 and "no such image archive" in capsys.readouterr().err
