"""Hostile submission files: every check is linear and bounded (columns, line length, rows), and random
or truncated bytes are one clear error, exit code 2 in the CLI, and nothing written."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from _lb_fixtures import BINARY, MULTI
from _submit_fixtures import FakeTask, predictions, tree, write_csv
from lesionbench.benchmark.errors import SubmissionError
from lesionbench.leaderboard import submit, validate_features, validate_predictions
from lesionbench.leaderboard.submissions.submission_file import MAX_EXTRA_COLUMNS, MAX_LINE_CHARS, MAX_SUBMISSION_BYTES

# Generous: the checks take milliseconds; the quadratic duplicate-column check took 52 s on 20,000 columns.
FAST_S = 5.0


@pytest.fixture(scope="module")
def task() -> FakeTask:
    return FakeTask(BINARY)


def _rejected(path: Path, task: FakeTask, *, features: bool = False) -> tuple[str, float]:
    t0 = time.perf_counter()
    with pytest.raises(SubmissionError) as ei:
        if features:
            validate_features(path, task.manifest())
        else:
            validate_predictions(path, task.meta, task.manifest())
    return str(ei.value), time.perf_counter() - t0


def test_twenty_thousand_junk_columns_are_refused_fast(task: FakeTask, tmp_path: Path) -> None:
    """The issue's file: a valid submission plus 20,000 junk columns (about 1 MB)."""
    good = predictions(task)
    junk = [f"junk{i}" for i in range(20_000)]
    header = ",".join(["lesion_id", "score", *junk])
    row_tail = "," * len(junk)
    body = "".join(f"{i},{s}{row_tail}\n" for i, s in zip(good["lesion_id"], good["score"]))
    path = tmp_path / "wide.csv"
    path.write_text(header + "\n" + body)
    msg, took = _rejected(path, task)
    assert "the header line is longer than 65536 characters" in msg
    assert took < FAST_S, f"{took:.1f} s"
    # Short names keep the header under the line limit; the column count refuses it before any row is read.
    path.write_text(",".join(["lesion_id", "score", *(f"c{i}" for i in range(5_000))]) + "\n" + body)
    msg, took = _rejected(path, task)
    assert f"file has 5002 columns; at most {1 + 1 + MAX_EXTRA_COLUMNS} are accepted" in msg and took < FAST_S


def test_many_duplicate_columns_are_named_in_linear_time(task: FakeTask, tmp_path: Path) -> None:
    path = tmp_path / "dups.csv"
    path.write_text("lesion_id,score,score,x,x\nL0090,0.5,0.5,1,1\n")
    msg, _ = _rejected(path, task)
    assert "duplicate column names ['score', 'x']" in msg
    # Features may have thousands of columns; a repeated one among them is found just as fast.
    man = task.manifest()
    names = [f"f{i}" for i in range(8_000)] + ["f17"]
    path.write_text("lesion_id," + ",".join(names) + "\n" + "".join(f"{i}," + ",".join(["1"] * len(names)) + "\n" for i in man["lesion_id"][:5]))
    msg, took = _rejected(path, task, features=True)
    assert "duplicate column names ['f17']" in msg and took < FAST_S


def test_fifty_mebibyte_files_are_refused_within_seconds(task: FakeTask, tmp_path: Path) -> None:
    budget = MAX_SUBMISSION_BYTES - 2**20  # 49 MiB, just under the limit
    many_rows = tmp_path / "rows.csv"
    line = b"L0090,0.5\n"
    many_rows.write_bytes(b"lesion_id,score\n" + line * (budget // len(line)))
    msg, took = _rejected(many_rows, task)
    assert "file has more than 1240 rows; task 'luna16_malignancy' has 120 test lesions" in msg and took < FAST_S
    one_line = tmp_path / "line.csv"
    one_line.write_bytes(b"lesion_id,score\nL0090," + b"9" * budget + b"\n")
    msg, took = _rejected(one_line, task)
    assert f"line 2 is longer than {MAX_LINE_CHARS} characters" in msg and took < FAST_S
    commas = tmp_path / "commas.csv"
    commas.write_bytes(b"lesion_id,score\n" + b"," * budget)
    msg, took = _rejected(commas, task)
    assert "line 2 is longer" in msg and took < FAST_S


def test_ragged_rows_are_named_by_their_line_in_the_file(task: FakeTask, tmp_path: Path) -> None:
    good = predictions(task)
    lines = [f"{i},{s}" for i, s in zip(good["lesion_id"], good["score"])]
    lines[3] += ",extra"  # file line 5
    lines.insert(6, "")  # a blank line (file line 8) is skipped but keeps the numbering honest
    lines[10] = lines[10].split(",")[0] + ",oops"  # file line 12
    path = tmp_path / "ragged.csv"
    path.write_text("lesion_id,score\n" + "\n".join(lines) + "\n")
    msg, _ = _rejected(path, task)
    assert "line 5 has a different number of fields than the header (2)" in msg
    assert "column 'score': not a number at line 12 (got 'oops')" in msg


def test_extra_columns_within_the_bound_are_ignored(tmp_path: Path) -> None:
    task = FakeTask(MULTI)
    preds = predictions(task)
    for i in range(MAX_EXTRA_COLUMNS):
        preds[f"note{i}"] = "x"
    got = validate_predictions(write_csv(preds, tmp_path / "ok.csv"), MULTI, task.manifest())
    assert list(got.columns) == ["lesion_id", *(f"score_{c}" for c in MULTI.class_names)]


# --------------------------------------------------------------------------------------- fuzz
def _fuzz_files(task: FakeTask, folder: Path, n_random: int, n_truncated: int) -> list[Path]:
    rng = np.random.default_rng(20261130)
    valid = write_csv(predictions(task), folder / "valid.csv").read_bytes()
    last_line = valid.rstrip(b"\n").rsplit(b"\n", 1)[1]
    files = []
    for k in range(n_random):
        size = int(rng.integers(0, 3000))
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if k % 3 == 1:  # a plausible header, then noise
            data = b"lesion_id,score\n" + data
        elif k % 3 == 2:  # printable noise with separators, which reaches the CSV parser
            data = bytes(rng.choice(list(b'abcL0123456789.,;"\n\r\t -e'), size).astype(np.uint8))
        files.append(folder / f"random{k}.csv")
        files[-1].write_bytes(data)
    # Cut before the last row is complete, so at least one lesion is missing or damaged.
    for k, cut in enumerate(rng.integers(0, len(valid) - len(last_line), n_truncated)):
        files.append(folder / f"truncated{k}.csv")
        files[-1].write_bytes(valid[: int(cut)])
    return files


def test_fuzzed_submissions_are_one_clear_error_and_write_nothing(task: FakeTask, tmp_path: Path) -> None:
    folder = tmp_path / "fuzz"
    folder.mkdir()
    results, organiser = tmp_path / "results", tmp_path / "organiser"
    for path in _fuzz_files(task, folder, n_random=150, n_truncated=100):
        with pytest.raises(SubmissionError) as ei:  # nothing else: no ParserError, IndexError, UnicodeError ...
            submit(task, path, name="fuzz", results_dir=results, organiser_dir=organiser, n_boot=0)
        assert "submission rejected" in str(ei.value) and ei.value.problems, path.name
    assert not results.exists() and not organiser.exists()


def test_cli_fuzzed_submissions_exit_2_and_write_nothing(task: FakeTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import lesionbench.benchmark.encoders.plugins as plugins
    from lesionbench.cli import main

    monkeypatch.setattr(plugins, "get_task", lambda name, **kw: task)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    files = _fuzz_files(task, folder, n_random=6, n_truncated=4)
    before = tree(tmp_path)
    for path in files:
        rc = main(["submit", "--task", BINARY.name, str(path), "--name", "fuzz", "--results", str(tmp_path / "r"), "--no-mlflow"])
        err = capsys.readouterr().err
        assert rc == 2 and "submission rejected" in err and "Traceback" not in err, (path.name, err)
    assert tree(tmp_path) == before


def test_numbers_beyond_the_float_range_are_infinite_not_text(task: FakeTask, tmp_path: Path) -> None:
    preds = predictions(task).astype({"score": object})
    preds.loc[0, "score"] = "1e400"
    msg, _ = _rejected(write_csv(preds, tmp_path / "big.csv"), task)
    assert "column 'score': NaN or infinite value at line 2" in msg and "not a number" not in msg


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_scores_under_another_name_get_a_rename_hint(kind: str, tmp_path: Path) -> None:
    task = FakeTask(BINARY if kind == "binary" else MULTI)
    good = predictions(task)
    if kind == "binary":
        bad, hint = good.rename(columns={"score": "prob"}), "Rename the column 'prob' to 'score'"
    else:
        first = next(c for c in good.columns if c.startswith("score_"))
        bad = good.rename(columns={c: "p_" + c.removeprefix("score_") for c in good.columns if c.startswith("score_")})
        hint = f"Rename the columns p_<class> to score_<class> (e.g. 'p_{first.removeprefix('score_')}' -> '{first}')"
    msg, _ = _rejected(write_csv(bad, tmp_path / "renamed.csv"), task)
    assert hint in msg, msg
