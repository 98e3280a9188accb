"""The bad-input battery of issue 13 (weights, image headers, numbers and names on the command line, file
permissions, durability) and the fuzz test: random and truncated bytes as weights files and as manifests
give one clear error each, exit code 2 on the command line, and nothing written."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import LesionbenchError, ManifestError, WeightsError
from lesionbench.benchmark.host import atomic_write, current_umask
from lesionbench.cli import main


# ------------------------------------------------------------------------------ file permissions
@pytest.fixture
def umask():
    """Set the process umask for one test (and restore it)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_respects_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    out = atomic_write(tmp_path / "shared" / "meta.json", lambda tmp: tmp.write_text("{}"))
    assert out.stat().st_mode & 0o777 == mode  # mkstemp alone gives 0o600: colleagues could not read it


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, umask):
    umask(0o077)
    path = tmp_path / "table.csv"
    path.write_text("old")
    path.chmod(0o664)  # a lab made it group-writable on purpose
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o664


def test_reading_the_umask_never_changes_it_under_other_threads(umask):
    # os.umask() can only be read by setting it; current_umask reads /proc instead, so a thread
    # creating files meanwhile never sees a temporary mask
    umask(0o027)
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with open("/proc/self/status") as f:
                seen.update(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))

    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc here: the set-and-restore fallback is used")
    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(2000):
            assert current_umask() == 0o027
    finally:
        stop.set()
        t.join()
    assert seen == {0o027}


# ------------------------------------------------------------------------------------ durability
def test_result_json_is_written_atomically(tmp_path, monkeypatch):
    from lesionbench.benchmark import scorer

    class Result:
        def to_dict(self):
            return {"task": "t", "runs": [1, 2, 3]}

    (tmp_path / scorer.RESULT_FILE).write_text('{"earlier": "result"}')
    real = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        scorer.write_result(Result(), tmp_path)
    monkeypatch.undo()
    assert (tmp_path / scorer.RESULT_FILE).read_text() == '{"earlier": "result"}' and len(list(tmp_path.iterdir())) == 1
    scorer.write_result(Result(), tmp_path)
    assert '"runs"' in (tmp_path / scorer.RESULT_FILE).read_text()
