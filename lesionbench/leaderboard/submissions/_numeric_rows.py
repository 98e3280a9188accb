"""Rows of an untrusted numeric CSV kept as numbers while they are read, not as text.

A features file has thousands of columns: kept as Python strings until every row is read, a 416 MiB file
took 5.4 GB and a minute before a single check ran. :func:`numeric_rows` converts each row to float32 as it
is read (8 bytes per value while a row is converted, 4 kept), so memory stays below the file's own size. Only
the rows that do not convert cleanly (text, empty cells, NaN or infinite values) keep their fields as text,
for the caller to report cell by cell; those are bounded by the number of rows the caller allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class NumericRows:
    """What :func:`numeric_rows` read: per kept row its file line, its id field and its values (float32; NaN
    in a row listed in ``text``, whose fields are kept as text), plus the ragged rows and whether the row
    limit was reached."""

    lines: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    text: dict[int, list[str]] = field(default_factory=dict)  # position in ``lines`` -> the row's value fields
    ragged: list[int] = field(default_factory=list)  # the first ``listed`` + 1 ragged lines
    n_ragged: int = 0
    too_many: bool = False


def numeric_rows(rows: Iterator[tuple[int, list[str]]], *, width: int, id_index: int | None, value_index: list[int],
                 max_rows: int, listed: int = 10) -> NumericRows:  # fmt: skip
    """Read ``(line, fields)`` rows of ``width`` fields: the id field (``id_index``, None: no id column) and the
    ``value_index`` fields as float32. At most ``max_rows`` rows, ragged ones included (``too_many`` then, and
    reading stops); rows of another width are counted and their first lines kept, not stored."""
    out = NumericRows()
    k = len(value_index)
    capacity = 64
    values = np.empty((capacity, k), dtype=np.float32)
    n = 0
    for line, row in rows:
        if n + out.n_ragged == max_rows:
            out.too_many = True
            break
        if len(row) != width:
            out.n_ragged += 1
            if len(out.ragged) <= listed:
                out.ragged.append(line)
            continue
        if n == capacity:  # grow by doubling: amortised, and never beyond what was read
            capacity *= 2
            values = np.resize(values, (capacity, k))
        fields = [row[i] for i in value_index]
        try:
            # Python's float() also takes '1_000' and ' 0x' forms pandas refuses: those go the slow way
            parsed = np.asarray(fields, dtype=np.float64) if not any("_" in f for f in fields) else None
        except ValueError:
            parsed = None
        if parsed is None or not np.isfinite(parsed).all():
            out.text[n] = fields
            values[n] = np.nan
        else:
            values[n] = parsed
        out.lines.append(line)
        out.ids.append(row[id_index] if id_index is not None else "")
        n += 1
    out.values = values[:n].copy() if n < capacity else values
    return out
