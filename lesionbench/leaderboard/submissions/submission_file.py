"""Validate an untrusted submission file: a predictions (or features) CSV for one task.

The harness holds the labels (the task's manifest); a submission is only ``lesion_id -> scores``.

Rules a predictions file must follow (all problems are reported at once, in one
:class:`~lesionbench.benchmark.errors.SubmissionError`, before anything is written):

- at most :data:`MAX_SUBMISSION_BYTES` (checked before the file is read), UTF-8 CSV with a header;
- a ``lesion_id`` column and the task's score columns: multiclass ``score_<class name>`` (or
  ``score_0 .. score_<k-1>``), binary ``score`` (probability of the positive class), survival ``risk``
  (higher = worse prognosis; ranks the C-index) and optionally ``score`` (probability of death within
  2 years; ranks the 2-year AUC, for which the risk stands in when it is absent); at most
  :data:`MAX_EXTRA_COLUMNS` other columns, which are ignored;
- every test lesion of the task exactly once: no missing, duplicate, unknown or non-test ids;
- every row as many fields as the header, no line longer than :data:`MAX_LINE_CHARS` characters;
- scores numeric and finite; probabilities in [0, 1]; multiclass rows sum to 1 within
  :data:`ROW_SUM_TOLERANCE` and are then renormalised to exactly 1 (so rounding in a written CSV
  is harmless, while logits or one-hot rows of the wrong task are refused, not silently rescaled);
- the submission (team) name: 1 to :data:`MAX_NAME_LENGTH` characters out of letters, digits, space and
  ``._+()-``, starting with a letter or digit, no ``..`` (it names a folder and an MLflow run).

The file is hostile until proven otherwise, so every check is linear in its size: the header is
bounded (columns and line length) before any row is split, rows are streamed and only the columns
the task needs are kept, and the number of rows is bounded by the task's lesion count. A 50 MiB
file is refused or read in about a second, with memory bounded by the file size.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import SubmissionError
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.leaderboard import _stats
from lesionbench.leaderboard.submissions._numeric_rows import numeric_rows

#: Largest accepted submission file; checked with ``stat`` before reading a byte.
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
#: Largest accepted features file (features for every lesion are bigger than predictions).
MAX_FEATURES_BYTES = 512 * 1024 * 1024
MAX_NAME_LENGTH = 64
#: Columns a predictions file may carry beyond ``lesion_id`` and the task's score columns (ignored).
MAX_EXTRA_COLUMNS = 16
#: Most feature columns a features file may have (FMCIB: 4096).
MAX_FEATURE_COLUMNS = 16384
#: Longest accepted line of a predictions file, in characters.
MAX_LINE_CHARS = 1 << 16
#: Multiclass probability rows may deviate this much from 1 before they are refused.
ROW_SUM_TOLERANCE = 0.01
#: How many offending rows or ids one problem lists before summarising.
MAX_LISTED = 10

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+()-]*")


# ------------------------------------------------------------------------------------ names
def name_problems(name: str) -> list[str]:
    """Everything wrong with a submission name (empty list when it is acceptable)."""
    problems = []
    shown = repr(name if len(name) <= 80 else name[:80] + "...")
    if not name:
        return ["name is empty. Give --name, e.g. --name my-team-v1."]
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"name {shown} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed.")
    if "/" in name or "\\" in name:
        problems.append(f"name {shown} contains a path separator; names cannot contain '/' or '\\'.")
    if ".." in name:
        problems.append(f"name {shown} contains '..'; use another spelling.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems.append(f"name {shown} contains control characters; use printable characters only.")
    if not problems and not _NAME_RE.fullmatch(name):
        problems.append(
            f"name {shown} has characters other than letters, digits, space and ._+()- or does not start with a letter or digit; "
            "e.g. --name 'my-team v2'."
        )
    return problems


def name_slug(name: str) -> str:
    """The folder-safe form of a validated name (lower case, spaces and parentheses as '-')."""
    slug = re.sub(r"[^a-z0-9._+-]+", "-", name.lower()).strip("-.")
    return slug or "submission"


# ------------------------------------------------------------------------------------ reading
def _lines(line_numbers: np.ndarray | list[int]) -> str:
    """File line numbers (header = line 1), capped at MAX_LISTED."""
    rows = [int(r) for r in line_numbers]
    shown = ", ".join(str(r) for r in rows[:MAX_LISTED])
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"line{'s' if len(rows) > 1 else ''} {shown}{more}"


def _ids(ids: list[str] | np.ndarray) -> str:
    ids = list(ids)
    shown = ", ".join(repr(str(i)[:40]) for i in ids[:MAX_LISTED])
    more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
    return shown + more


class _Unreadable(Exception):
    """Internal: the CSV cannot be read any further; the message is the problem to report."""


@dataclass(frozen=True)
class _Csv:
    """An untrusted CSV opened for reading: its stripped header, its rows (line number, fields) and its digest."""

    header: list[str]
    rows: Iterator[tuple[int, list[str]]]
    sha256: str


def _csv_rows(data: bytes, max_line_chars: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank CSV row, streamed: memory stays bounded by one line.

    Lines longer than ``max_line_chars`` stop the reading before they are split into fields, so a
    single giant line (or header) costs neither quadratic time nor memory.
    """
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    physical = 0

    def lines() -> Iterator[str]:
        nonlocal physical
        while line := text.readline(max_line_chars + 1):
            physical += 1
            if len(line.rstrip("\r\n")) > max_line_chars:
                what = "the header line" if physical == 1 else f"line {physical}"
                raise _Unreadable(f"{what} is longer than {max_line_chars} characters; the file has far more (or longer) columns than the task needs. Submit only the columns asked for.")
            yield line

    reader = csv.reader(lines(), skipinitialspace=True)
    try:
        for row in reader:
            if row and any(f.strip() for f in row):  # blank lines are skipped, as pandas does
                yield reader.line_num, row
    except UnicodeDecodeError:
        try:  # the streaming decoder's position is per chunk; decoding once more names the byte
            data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _Unreadable(f"file is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as a UTF-8 CSV.") from None
        raise _Unreadable("file is not UTF-8 text. Save it as a UTF-8 CSV.") from None
    except csv.Error as exc:
        raise _Unreadable(f"file could not be parsed as CSV (line {reader.line_num}: {exc}). Check the delimiter (',') and quoting.") from None


def _open_untrusted_csv(path: Path, max_bytes: int, problems: list[str], *, max_columns: int, max_line_chars: int) -> _Csv | None:
    """Size-check, read and open a CSV; problems are appended, None when it cannot be read.

    Every check is linear in the file size and the header is bounded before any row is read.
    """
    if not path.exists():
        problems.append(f"file {path} does not exist.")
        return None
    if not path.is_file():
        problems.append(f"{path} is not a regular file.")
        return None
    size = path.stat().st_size
    if size > max_bytes:
        problems.append(f"file is {size / 2**20:.1f} MiB; at most {max_bytes / 2**20:.0f} MiB is accepted. Submit only the columns asked for.")
        return None
    if size == 0:
        problems.append("file is empty. Write a CSV with a header line and one row per test lesion.")
        return None
    # Read the size seen plus one byte: a file that changes after the size check is refused, not read
    # unbounded, and the digest is of the bytes that were validated, not of whatever the path holds later.
    with path.open("rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        problems.append(f"file changed while it was read ({size} bytes, then {len(data)}{'+' if len(data) > size else ''}). Submit a file that is not being written to.")
        return None
    rows = _csv_rows(data, max_line_chars)
    try:
        first = next(rows, None)
    except _Unreadable as exc:
        problems.append(str(exc))
        return None
    if first is None:
        problems.append("file has no header line. Write a CSV with a header line and one row per test lesion.")
        return None
    header = [c.strip() for c in first[1]]
    if len(header) > max_columns:
        problems.append(f"file has {len(header)} columns; at most {max_columns} are accepted. Submit only the columns asked for.")
        return None
    counts = Counter(c for c in header if c)
    dup = sorted(c for c, k in counts.items() if k > 1)
    if dup:
        problems.append(f"duplicate column names {dup[:MAX_LISTED]}; each column must appear once.")
    return _Csv(header, rows, hashlib.sha256(data).hexdigest())


def _read_columns(table: _Csv, keep: list[str], problems: list[str], *, max_rows: int, what: str) -> pd.DataFrame | None:
    """The ``keep`` columns of every row as text, indexed by file line number; other columns are never stored."""
    pos = {c: i for i, c in reversed(list(enumerate(table.header)))}  # first occurrence of each name
    idx = [pos[c] for c in keep]
    width = len(table.header)
    lines: list[int] = []
    values: list[list[str]] = []
    ragged: list[int] = []  # the first MAX_LISTED + 1 only; every row, ragged or not, counts against max_rows
    n_ragged = 0
    try:
        for line, row in table.rows:
            if len(values) + n_ragged == max_rows:
                problems.append(f"file has more than {max_rows} rows; {what}. Submit one row per lesion.")
                return None
            if len(row) != width:
                n_ragged += 1
                if len(ragged) <= MAX_LISTED:
                    ragged.append(line)
                continue
            lines.append(line)
            values.append([row[i] for i in idx])
    except _Unreadable as exc:
        problems.append(str(exc))
        return None
    if ragged:
        shown = _lines(ragged[:MAX_LISTED]) + (f" and {n_ragged - MAX_LISTED} more" if n_ragged > MAX_LISTED else "")
        problems.append(
            f"file could not be parsed as CSV: {shown} {'has' if n_ragged == 1 else 'have'} a different number of fields "
            f"than the header ({width}). Check the delimiter (',') and quoting."
        )
    columns = list(zip(*values)) if values else [()] * len(keep)
    return pd.DataFrame({c: list(col) for c, col in zip(keep, columns)}, index=pd.Index(lines, dtype=np.int64), dtype=object)


def _registered_tasks_of(kind: TaskKind, n_classes: int | None = None) -> list[str]:
    from lesionbench.benchmark.encoders.plugins import TASKS

    out = []
    for name in TASKS.names():
        meta = getattr(TASKS.get(name), "meta", None)
        if isinstance(meta, TaskMeta) and meta.kind is kind and (n_classes is None or meta.n_classes == n_classes):
            out.append(name)
    return out


def _score_layout(meta: TaskMeta, columns: list[str], problems: list[str]) -> list[str] | None:
    """The score columns in class order, or None with problems (including wrong-task hints)."""
    cols = set(columns)
    try:
        return _stats.score_columns(meta, columns)
    except KeyError:
        pass
    if meta.kind is TaskKind.SURVIVAL:
        need = "a 'risk' column (higher = worse prognosis)"
    elif meta.kind is TaskKind.BINARY:
        need = "a 'score' column (probability of the positive class)"
    else:
        named = ", ".join(f"score_{c}" for c in meta.class_names)
        need = f"{meta.n_classes} columns {named} (or score_0 .. score_{meta.n_classes - 1}), one probability per class"
    msg = f"missing score columns: task {meta.name!r} ({meta.kind}) needs {need}; the file has {sorted(cols)[:20]}."
    # What the file looks like instead: a likely mix-up of tasks.
    multi = sorted(c for c in cols if c.startswith("score_"))
    looks: tuple[TaskKind, int | None] | None = None
    if "risk" in cols and meta.kind is not TaskKind.SURVIVAL:
        looks = (TaskKind.SURVIVAL, None)
    elif "score" in cols and meta.kind is not TaskKind.BINARY:
        looks = (TaskKind.BINARY, None)
    elif multi and (meta.kind is not TaskKind.MULTICLASS or len(multi) != meta.n_classes):
        looks = (TaskKind.MULTICLASS, len(multi))
    if looks is not None:
        kind, k = looks
        what = f"a {kind} task" + (f" with {k} classes" if k else "")
        others = [t for t in _registered_tasks_of(kind, k) if t != meta.name]
        msg += f" This looks like a submission for {what}" + (f" (e.g. {', '.join(others[:4])})" if others else "") + f", not for {meta.name!r}: wrong task?"
    else:
        msg += _rename_hint(meta, columns)
    problems.append(msg)
    return None


def _rename_hint(meta: TaskMeta, columns: list[str]) -> str:
    """" Rename ..." when the scores seem to be there under other names: the one extra column of a binary or
    survival file, or one prefix followed by every class name (``prob_<class>``) in a multiclass one."""
    others = [c for c in columns if c not in ("lesion_id", "patient_id", "split")]
    if meta.kind is not TaskKind.MULTICLASS:
        want = "risk" if meta.kind is TaskKind.SURVIVAL else "score"
        return f" Rename the column {others[0]!r} to {want!r}." if len(others) == 1 else ""
    for names in ([str(c) for c in meta.class_names], [str(i) for i in range(meta.n_classes)]):
        if not names:
            continue
        for c in others:
            if c.endswith(names[0]):
                prefix = c[: len(c) - len(names[0])]
                if all(f"{prefix}{n}" in columns for n in names):
                    return f" Rename the columns {prefix}<class> to score_<class> (e.g. {c!r} -> 'score_{names[0]}')."
    return ""


_DECIMAL = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NAN_WORDS = ["nan", "-nan", "+nan", "na", "n/a", "null", "none"]


def _parse_numbers(df: pd.DataFrame, cols: list[str], problems: list[str], *, lo: float | None, hi: float | None) -> np.ndarray:
    """The ``cols`` as floats (rows x cols); every bad cell is reported by column and file line.

    Vectorised over all cells at once: a features file has thousands of columns.
    """
    n, k = len(df), len(cols)
    if k == 0:
        return np.empty((n, 0))
    raw = pd.Series(df[cols].to_numpy(dtype=object).ravel(order="F"), dtype=object).astype(str).str.strip()
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    # pandas gives up on decimals beyond the float range ('1e400'): they are infinite, not text.
    overflow = np.isnan(vals) & raw.str.fullmatch(_DECIMAL).to_numpy()
    vals[overflow] = [float(x) for x in raw[overflow]]
    empty = (raw == "").to_numpy()
    literal_nan = raw.str.lower().isin(_NAN_WORDS).to_numpy()
    text = np.isnan(vals) & ~empty & ~literal_nan
    nonfinite = (np.isnan(vals) & literal_nan) | np.isinf(vals)
    out_of_range = np.zeros(n * k, dtype=bool)
    if lo is not None and hi is not None:
        finite = np.isfinite(vals)
        out_of_range[finite] = (vals[finite] < lo) | (vals[finite] > hi)
    lines = df.index.to_numpy()
    for mask, say in (
        (empty, lambda c, m, cells: f"column {c!r}: empty value at {_lines(lines[m])}. Every test lesion needs a score."),
        (text, lambda c, m, cells: f"column {c!r}: not a number at {_lines(lines[m])} (got {', '.join(repr(v[:20]) for v in cells.head(3))}). Scores must be plain decimal numbers."),
        (nonfinite, lambda c, m, cells: f"column {c!r}: NaN or infinite value at {_lines(lines[m])}. Scores must be finite numbers."),
        (out_of_range, lambda c, m, cells: f"column {c!r}: {_lines(lines[m])} outside [{lo:g}, {hi:g}] (got {', '.join(f'{float(v):g}' for v in cells.head(3))}). Give probabilities, not logits or percentages."),
    ):
        by_col = mask.reshape(k, n)
        bad = np.flatnonzero(by_col.any(axis=1))
        for j in bad[:MAX_LISTED]:
            m = by_col[j]
            cells = raw[j * n : (j + 1) * n][m] if mask is not out_of_range else pd.Series(vals[j * n : (j + 1) * n][m])
            problems.append(say(cols[j], m, cells))
        if len(bad) > MAX_LISTED:
            problems.append(f"... and the same problem in {len(bad) - MAX_LISTED} more column(s).")
    return vals.reshape(k, n).T.copy()


def _check_ids(df: pd.DataFrame, manifest: pd.DataFrame, splits: tuple[str, ...], problems: list[str], *, task_name: str) -> None:
    ids = df["lesion_id"].astype(str).str.strip()
    lines = df.index.to_numpy()
    empty = (ids == "").to_numpy()
    if empty.any():
        problems.append(f"empty lesion_id at {_lines(lines[empty])}.")
    dup = ids.duplicated(keep=False).to_numpy() & ~empty
    if dup.any():
        problems.append(f"duplicate lesion_id(s) {_ids(sorted(set(ids[dup])))} at {_lines(lines[dup])}. Each lesion must appear exactly once.")
    all_ids = set(manifest["lesion_id"].astype(str))
    wanted = manifest.loc[manifest["split"].isin(splits), "lesion_id"].astype(str)
    wanted_set = set(wanted)
    given = set(ids[~empty])
    unknown = sorted(given - all_ids)
    other_split = sorted((given & all_ids) - wanted_set)
    missing = [i for i in wanted if i not in given]
    which = "test" if splits == ("test",) else "/".join(splits)
    if unknown:
        msg = f"{len(unknown)} unknown lesion_id(s) not in task {task_name!r}: {_ids(unknown)}."
        if len(unknown) > 0.5 * max(len(given), 1):
            msg += f" Most ids are not lesions of {task_name!r}: was this file made for another task or task version?"
        problems.append(msg)
    if other_split:
        problems.append(f"{len(other_split)} lesion_id(s) are not {which} lesions of {task_name!r}: {_ids(other_split)}. Submit {which} lesions only.")
    if missing:
        problems.append(f"{len(missing)} of {len(wanted)} {which} lesion(s) missing: {_ids(missing)}. Every {which} lesion needs exactly one row.")


def _n_score_columns(meta: TaskMeta) -> int:
    """How many score columns the task's predictions have at most (survival: risk and score)."""
    return {TaskKind.SURVIVAL: 2, TaskKind.BINARY: 1}.get(meta.kind, meta.n_classes)


def validate_predictions(path: str | Path, meta: TaskMeta, manifest: pd.DataFrame, *, max_bytes: int = MAX_SUBMISSION_BYTES, problems: list[str] | None = None) -> pd.DataFrame:
    """Check an untrusted predictions file against a task; return ``lesion_id`` + scores in manifest test order.

    Raises :class:`SubmissionError` listing every problem found (``problems`` seeds the list, e.g.
    with name problems, so one message reports everything).
    """
    return _validate_predictions(Path(path), meta, manifest, max_bytes=max_bytes, problems=list(problems or []))[0]


def _validate_predictions(path: Path, meta: TaskMeta, manifest: pd.DataFrame, *, max_bytes: int, problems: list[str]) -> tuple[pd.DataFrame, str]:
    """:func:`validate_predictions` plus the sha256 of the bytes that were validated."""
    n_test = int((manifest["split"] == "test").sum())
    table = _open_untrusted_csv(path, max_bytes, problems, max_columns=1 + _n_score_columns(meta) + MAX_EXTRA_COLUMNS, max_line_chars=MAX_LINE_CHARS)
    if table is None:
        raise SubmissionError(str(path), problems)
    if "lesion_id" not in table.header:
        problems.append(f"missing column 'lesion_id'; the file has {table.header[:20]}.")
    cols = _score_layout(meta, table.header, problems)
    keep = [c for c in ("lesion_id", *(cols or [])) if c in table.header]
    # Room for every test lesion and as many repeats, so duplicates are still named; more is refused unread.
    df = _read_columns(table, keep, problems, max_rows=2 * n_test + 1000, what=f"task {meta.name!r} has {n_test} test lesions")
    if df is None:
        raise SubmissionError(str(path), problems)
    if len(df) == 0:
        problems.append("file has a header but no rows.")
    if "lesion_id" in df.columns:
        _check_ids(df, manifest, ("test",), problems, task_name=meta.name)
    if cols is not None:
        # A risk is any real number (higher = worse); everything else is a probability.
        parts = [_parse_numbers(df, [c], problems, lo=None if c == "risk" else 0.0, hi=None if c == "risk" else 1.0) for c in cols]
        values = np.hstack(parts)
        if meta.kind is TaskKind.MULTICLASS and np.isfinite(values).all():
            sums = values.sum(axis=1)
            off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
            if off.any():
                ex = ", ".join(f"{s:.3g}" for s in sums[off][:3])
                problems.append(f"class probabilities do not sum to 1 at {_lines(df.index.to_numpy()[off])} (sums {ex}); allowed deviation {ROW_SUM_TOLERANCE}. Apply softmax to logits.")
            else:
                values = values / sums[:, None]
    if problems:
        raise SubmissionError(str(path), problems)
    out = pd.DataFrame(values, columns=cols)
    out.insert(0, "lesion_id", df["lesion_id"].astype(str).str.strip().to_numpy())
    order = manifest.loc[manifest["split"] == "test", "lesion_id"].astype(str)
    return out.set_index("lesion_id").loc[order.to_numpy()].reset_index(), table.sha256


def validate_features(path: str | Path, manifest: pd.DataFrame, *, max_bytes: int = MAX_FEATURES_BYTES, problems: list[str] | None = None) -> pd.DataFrame:
    """Check an untrusted features file: ``lesion_id`` + numeric feature columns for every lesion of the task.

    Returns the features in manifest row order (``lesion_id`` first). Raises :class:`SubmissionError`.
    """
    return _validate_features(Path(path), manifest, max_bytes=max_bytes, problems=list(problems or []))[0]


def _validate_features(path: Path, manifest: pd.DataFrame, *, max_bytes: int, problems: list[str]) -> tuple[pd.DataFrame, str]:
    max_columns = MAX_FEATURE_COLUMNS + 3  # lesion_id, and patient_id and split, which are ignored
    # A feature value needs at most ~25 characters ('-1.2345678901234567e-308,').
    table = _open_untrusted_csv(path, max_bytes, problems, max_columns=max_columns, max_line_chars=32 * max_columns)
    if table is None:
        raise SubmissionError(str(path), problems)
    feats = [c for c in dict.fromkeys(table.header) if c != "lesion_id" and c not in ("patient_id", "split")]
    if "lesion_id" not in table.header:
        problems.append(f"missing column 'lesion_id'; the file has {table.header[:20]}.")
    # values are kept as float32 while they are read (never a string per cell: 5.4 GB for a 416 MiB file)
    df, values = _read_feature_rows(table, feats, problems, max_rows=2 * len(manifest) + 1000, what=f"the task has {len(manifest)} lesions")
    if df is None:
        raise SubmissionError(str(path), problems)
    if "lesion_id" in df.columns:
        present = set(manifest["split"].astype(str))
        splits = tuple(x for x in ("train", "val", "test") if x in present)
        _check_ids(df, manifest, splits, problems, task_name="this task")
    if not feats:
        problems.append("no feature columns: give lesion_id plus one numeric column per feature.")
    if feats and np.isfinite(values).all() and len(df) > 1 and np.all(values.std(axis=0) == 0):
        problems.append("every feature is constant across lesions; this cannot be probed.")
    if problems:
        raise SubmissionError(str(path), problems)
    out = pd.DataFrame(values.astype(np.float32), columns=feats)
    out.insert(0, "lesion_id", df["lesion_id"].astype(str).str.strip().to_numpy())
    return out.set_index("lesion_id").loc[manifest["lesion_id"].astype(str).to_numpy()].reset_index(), table.sha256


def _read_feature_rows(table: _Csv, feats: list[str], problems: list[str], *, max_rows: int, what: str) -> tuple[pd.DataFrame | None, np.ndarray]:
    """``lesion_id`` by file line (a frame, None when the file cannot be read on) and the feature values (rows x
    features, float32); the rows that are not clean numbers are checked cell by cell (:func:`_parse_numbers`)."""
    pos = {c: i for i, c in reversed(list(enumerate(table.header)))}  # first occurrence of each name
    try:
        got = numeric_rows(table.rows, width=len(table.header), id_index=pos.get("lesion_id"), value_index=[pos[c] for c in feats],
                           max_rows=max_rows, listed=MAX_LISTED)  # fmt: skip
    except _Unreadable as exc:
        problems.append(str(exc))
        return None, np.empty((0, 0))
    if got.too_many:
        problems.append(f"file has more than {max_rows} rows; {what}. Submit one row per lesion.")
        return None, np.empty((0, 0))
    if got.ragged:
        shown = _lines(got.ragged[:MAX_LISTED]) + (f" and {got.n_ragged - MAX_LISTED} more" if got.n_ragged > MAX_LISTED else "")
        problems.append(f"file could not be parsed as CSV: {shown} {'has' if got.n_ragged == 1 else 'have'} a different number of fields "
                        f"than the header ({len(table.header)}). Check the delimiter (',') and quoting.")  # fmt: skip
    index = pd.Index(got.lines, dtype=np.int64)
    df = pd.DataFrame({"lesion_id": got.ids} if "lesion_id" in pos else {}, index=index, dtype=object)
    values = got.values
    if got.text and feats:  # only these rows' cells are looked at one by one, for the problem lines
        at = sorted(got.text)
        slow = pd.DataFrame([got.text[r] for r in at], columns=feats, index=index[at], dtype=object)
        values[at] = _parse_numbers(slow, feats, problems, lo=None, hi=None).astype(np.float32)
    return df, values
