"""Issue 20 (Integrity II), item 21: every untrusted table is bounded in time and memory before it is parsed:
a file of wrong-width rows stops at the row limit, and a features file is held as numbers, not as a string
per cell (a 416 MiB file took 5.4 GB)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import SubmissionError
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.leaderboard.submissions.submission_file import validate_features, validate_predictions

META = TaskMeta(name="bounds_binary", version="1", kind=TaskKind.BINARY, description="", main_metric="auc", metrics=("auc",))


def _manifest(n: int) -> pd.DataFrame:
    return pd.DataFrame({"lesion_id": [f"L{i:05d}" for i in range(n)], "patient_id": [f"P{i}" for i in range(n)],
                         "split": (["train", "val", "test", "test"] * n)[:n], "label": np.arange(n) % 2})  # fmt: skip


def test_wrong_width_rows_stop_at_the_row_limit(tmp_path):
    man = _manifest(20)  # 10 test lesions: at most 2 * 10 + 1000 rows are read
    path = tmp_path / "p.csv"
    path.write_text("lesion_id,score\n" + "x\n" * 50_000)
    with pytest.raises(SubmissionError) as error:
        validate_predictions(path, META, man)
    assert "more than 1020 rows" in str(error.value)


def test_a_few_wrong_width_rows_are_listed_and_counted(tmp_path):
    man = _manifest(20)
    ids = man.loc[man["split"] == "test", "lesion_id"]
    path = tmp_path / "p.csv"
    path.write_text("lesion_id,score\n" + "".join(f"{i},0.5\n" for i in ids) + "a,b,c\n" * 30)
    with pytest.raises(SubmissionError, match=r"lines 12, 13, .* and 20 more have a different number of fields than the header \(2\)"):
        validate_predictions(path, META, man)


def test_a_features_file_is_held_as_numbers_not_strings(tmp_path):
    n, d = 200, 1000
    man = _manifest(n)
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.random((n, d)), columns=[f"f{j}" for j in range(d)])
    table.insert(0, "lesion_id", man["lesion_id"])
    path = tmp_path / "features.csv"
    table.to_csv(path, index=False, float_format="%.6f")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        out = validate_features(path, man)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (n, d + 1) and np.allclose(out.iloc[:, 1:].to_numpy(), table.iloc[:, 1:].to_numpy(), atol=1e-6)
    # the file's bytes, their decoded lines and float32 values: a few times the file, not ~10x (a str per cell)
    assert peak < 4 * size, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"


def test_bad_cells_of_a_features_file_are_still_named(tmp_path):
    man = _manifest(6)
    lines = ["lesion_id,f0,f1"] + [f"{i},{k}.5,{k}" for k, i in enumerate(man["lesion_id"])]
    lines[3] = f"{man['lesion_id'][2]},abc,1"
    lines[5] = f"{man['lesion_id'][4]},1,inf"
    path = tmp_path / "features.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SubmissionError) as error:
        validate_features(path, man)
    msg = str(error.value)
    assert "column 'f0': not a number at line 4 (got 'abc')" in msg and "column 'f1': NaN or infinite value at line 6" in msg
