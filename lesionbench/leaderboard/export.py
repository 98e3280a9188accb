"""What the leaderboard page offers besides itself: a CSV of every row it shows, and how to cite.

``leaderboard.csv`` is tidy: one line per (section row, metric), with the section (task, version,
protocol), what the row is (``ranked``, ``unranked`` with the reason, ``submission`` on the public part,
or ``reference``: a published number, never ranked), its rank, name, labels and the value with its 95% CI.
"""

from __future__ import annotations

import csv
import io
from typing import Any

#: The columns of ``leaderboard.csv``, in order.
CSV_COLUMNS = ("task", "version", "protocol", "row", "rank", "name", "probe", "fraction", "shots", "seed", "metric", "value",
               "ci_low", "ci_high", "note")  # fmt: skip

#: BibTeX of lesionbench and of the sources the page cites (their own headings on the page).
BIBTEX: dict[str, str] = {
    "lesionbench": """@software{lesionbench,
  title   = {lesionbench: an open benchmark harness for 3D CT foundation models on cancer-imaging biomarker tasks},
  author  = {{lesionbench developers}},
  version = {{version}},
  license = {Apache-2.0},
  note    = {See CITATION.cff in the repository}
}""",
    "Pai et al. 2024 (FMCIB)": """@article{pai2024foundation,
  title   = {Foundation model for cancer imaging biomarkers},
  author  = {Pai, Suraj and Bontempi, Dennis and Hadzic, Ibrahim and others},
  journal = {Nature Machine Intelligence},
  volume  = {6},
  pages   = {354--367},
  year    = {2024},
  doi     = {10.1038/s42256-024-00807-9}
}""",
    "TumorImagingBench": """@software{tumorimagingbench,
  title   = {TumorImagingBench},
  author  = {{AIM-Harvard}},
  version = {0.1.4},
  note    = {k-NN results on pooled re-shuffled splits (notebooks/modelling/overall_results.csv), shown as reference rows}
}""",
}


def citations(version: str) -> list[dict[str, str]]:
    """``[{"name", "bibtex"}]``: lesionbench (at ``version``) first, then each cited source."""
    return [{"name": name, "bibtex": text.replace("{{version}}", "{" + version + "}")} for name, text in BIBTEX.items()]


def _metric_rows(base: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**base, "metric": m, "value": (v or {}).get("value"), "ci_low": (v or {}).get("ci_low"), "ci_high": (v or {}).get("ci_high")}
            for m, v in metrics.items()]  # fmt: skip


def leaderboard_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of the leaderboard document, one dict per (row, metric) with :data:`CSV_COLUMNS`."""
    rows: list[dict[str, Any]] = []
    for t in doc["tasks"]:
        section = {"task": t["name"], "version": t["version"], "protocol": t["protocol"]}
        for kind, entries in (("ranked", t["entries"]), ("unranked", t["unranked"])):
            for e in entries:
                base = {**section, "row": kind, "rank": e.get("rank"), "name": e.get("label") or e["encoder"], "probe": e.get("probe"),
                        "fraction": e.get("fraction"), "shots": e.get("shots"), "seed": e.get("seed"), "note": e.get("unranked_reason") or ""}  # fmt: skip
                rows += _metric_rows(base, e.get("metrics") or {})
        for s in t["submissions"]:
            base = {**section, "row": "submission", "rank": s.get("rank"), "name": s["name"], "note": f"public part ({s.get('n_public')} lesions)"}
            rows += _metric_rows(base, s.get("public") or {})
        for r in t.get("reference") or []:
            base = {**section, "row": "reference", "name": r.get("approach"), "fraction": r.get("fraction"), "note": r.get("source", "")}
            rows += _metric_rows(base, r.get("metrics") or {})
    for block in doc.get("reference_only") or []:
        for r in block["reference"]:
            base = {"task": block["name"], "protocol": r.get("protocol"), "row": "reference", "name": r.get("approach"),
                    "fraction": r.get("fraction"), "note": r.get("source", "")}  # fmt: skip
            rows += _metric_rows(base, r.get("metrics") or {})
    return [{c: row.get(c) for c in CSV_COLUMNS} for row in rows]


def leaderboard_csv(doc: dict[str, Any]) -> str:
    """:func:`leaderboard_rows` as CSV text (empty cells for values a row does not have)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in leaderboard_rows(doc):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
