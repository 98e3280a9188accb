"""Issue 20 (Integrity II), the command line: no output line carries a URI's password or token (10), and the
environment's failures are one `error:` line, exit 2, nothing written, never a traceback (22)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.tracking.mlflow_sink import redact_uri
from lesionbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
URI = "http://alice:p@ss;word@127.0.0.1:18231/?token=SECRET1;password=SECRET2&sig=SECRET3"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("text", "leaks"),
    [
        ("http://alice:p@ss@db.example:5000/x", ["p@ss", "ss@db"]),
        ("https://u:a@b@c@host/", ["a@b", "b@c"]),
        ("/api?token=SECRET1;password=SECRET2/api/2.0/mlflow&experiment=x", ["SECRET1", "SECRET2"]),
        ("url='http://h/?access_key=ab/cd+ef==&x=1'", ["ab/cd", "cd+ef"]),
    ],
)
def test_redact_uri_hides_the_whole_secret(text, leaks):
    out = redact_uri(text)
    assert "***" in out and not any(s in out for s in leaks), out


def test_no_output_line_of_a_failing_mlflow_read_holds_a_secret(tmp_path):
    """urllib3's retry warnings quote the request URL with its query; a password with '@' was cut at the first '@'."""
    proc = subprocess.run([sys.executable, "-m", "lesionbench", "-q", "leaderboard", "build", "--tracking-uri", URI, "--out", str(tmp_path / "lb")],
                          capture_output=True, text=True, env=_env(), timeout=120, check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "urllib3" in out, out  # the retry warning was shown (redacted)
    for secret in ("SECRET1", "SECRET2", "SECRET3", "p@ss", "ss;word"):
        assert secret not in out, out
    _one_error_line(proc.stderr)


# ------------------------------------------------------------------------------ item 22: one line
def _seeds(tmp_path: Path, *, with_image: bool = True) -> Path:
    img = sitk.GetImageFromArray(np.zeros((20, 30, 30), dtype=np.int16))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    row = {"lesion_id": "L1", "coordX": 15.0, "coordY": 15.0, "coordZ": 10.0}
    if with_image:
        row["image_path"] = "ct.nii.gz"
    path = tmp_path / "seeds.csv"
    pd.DataFrame([row]).to_csv(path, index=False)
    return path


def test_extract_on_a_table_without_image_path_is_one_line(tmp_path, capsys):
    out = tmp_path / "out" / "f.csv"
    assert main(["-q", "extract", str(_seeds(tmp_path, with_image=False)), "--encoder", "example-intensity-histogram", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "seeds.csv lacks column(s) ['image_path']" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["parent-is-a-file", "output-is-a-folder"])
def test_extract_to_an_unusable_output_path_is_one_line_before_any_work(tmp_path, capsys, case):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.csv").mkdir()
    out = tmp_path / "file" / "f.csv" if case == "parent-is-a-file" else tmp_path / "folder.csv"
    assert main(["-q", "extract", str(_seeds(tmp_path)), "--encoder", "example-intensity-histogram", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert ("is a file, not a folder" if case == "parent-is-a-file" else "is a folder; give a file name") in line
    assert not list((os.environ["LESIONBENCH_CACHE"] and Path(os.environ["LESIONBENCH_CACHE"])).glob("features/*")), "no work was done"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_extract_into_a_read_only_folder_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert main(["-q", "extract", str(_seeds(tmp_path)), "--encoder", "example-intensity-histogram", "-o", str(ro / "f.csv")]) == 2
    assert "cannot be written" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "you may not write there")])
def test_a_failed_write_midway_is_one_line_and_leaves_no_file(tmp_path, capsys, monkeypatch, code, says):
    from lesionbench.benchmark.encoders import features

    out = tmp_path / "f.csv"

    def fail(table, feats, path, **kw):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(features, "write_feature_table", fail)
    assert main(["-q", "extract", str(_seeds(tmp_path)), "--encoder", "example-intensity-histogram", "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and says in line and not out.exists()


def test_a_closed_stdout_is_one_line(tmp_path):
    proc = subprocess.run(f"'{sys.executable}' -m lesionbench tasks list >&-", shell=True, capture_output=False, stderr=subprocess.PIPE,
                          text=True, env=_env(), timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "standard output is closed" in _one_error_line(proc.stderr)


def test_warnings_a_command_prints_are_redacted():
    """Python prints a warning with warnings.formatwarning: inside a command that is the redacting one."""
    import warnings

    from lesionbench.cli._errors import redacted_warnings

    with redacted_warnings():
        text = warnings.formatwarning("Could not log to MLflow at http://bob:pa@ss@h/?api_token=SECRET4", UserWarning, "x.py", 1)
    assert "UserWarning" in text and "http://***@h/?api_token=***" in text and "SECRET4" not in text and "pa@ss" not in text
    assert warnings.formatwarning.__name__ == "formatwarning"  # restored
