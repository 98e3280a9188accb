"""Render the leaderboard document as one self-contained HTML page and as Markdown, from Jinja2 templates.

Every string in the document may come from a stranger (an encoder, task, probe or team name, a metric
key), so escaping is the templates' default rather than a call to remember: the page's environment
autoescapes HTML, and the Markdown environment passes every value it prints through :func:`md_cell`
(the one place Markdown is escaped). Only the number formatters below, which build their text from
numbers alone, are marked safe.

The page carries everything inline (CSS, PNG figures as data URIs, small SVG interval bars), loads
nothing from the network and runs no script; its Content-Security-Policy says so to the browser too,
so it can be opened from disk, attached to a review or archived with a paper.

Beside the page: ``leaderboard.csv`` (:func:`leaderboard_csv`), tidy, one line per (section row, metric), with
the section (task, version, protocol), what the row is (``ranked``, ``unranked`` with the reason,
``submission`` on the public part, or ``reference``: a published number, never ranked), its rank, name, labels
and the value with its 95% CI; and the page's cite block (:func:`citations`).
"""

from __future__ import annotations

import csv
import io

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from lesionbench.leaderboard.labels import ALPHA, REFERENCE_COLOUR, UNIT_WORDS, colours, entry_label, headline_text, labels_text, metric_label, protocol_label
from lesionbench.leaderboard.plots import curve_plot, forest_plot
from lesionbench.leaderboard.plots import robustness_plot

TEMPLATES = Path(__file__).with_name("templates")
#: What the page may load: nothing but its own inline styles and data: images; no script at all.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ------------------------------------------------------------------------------- formatting
def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _signed(x: float | None) -> str:
    """+0.012 / −0.012 with a typographic minus (tables people paste into papers)."""
    return "–" if x is None else f"{x:+.3f}".replace("-", "\u2212")


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _sd(m: dict[str, Any] | None, fraction: float) -> str:
    """The SD over seeds; "–" at 100% of the labels, where every seed draws the same subset."""
    if not m or fraction >= 1.0 or m.get("sd") is None or m.get("n_seeds", 0) < 2:
        return "–"
    return f"±{m['sd']:.3f}"


def _ci_text(m: dict[str, Any] | None) -> str:
    if not m or m.get("ci_low") is None or m.get("ci_high") is None:
        return ""
    return f"({_f(m['ci_low'])}–{_f(m['ci_high'])})"


def _ci_suffix(m: dict[str, Any] | None) -> str:
    text = _ci_text(m)
    return f" {text}" if text else ""


_NUMBER_FILTERS: dict[str, Callable[..., str]] = {"f3": _f, "signed": _signed, "pval": _p, "pct": _pct, "sd": _sd, "ci": _ci_text, "cis": _ci_suffix}
_NUMBER_FILTERS["pct1"] = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # robustness: shares of predictions and features


# ----------------------------------------------------------------------------- escaping
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_WWW = re.compile(r"(?i)www\.")
_MD_SPACE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def md_cell(value: Any) -> str:
    """Any value as inert Markdown text, safe in a table cell: control characters and line breaks become
    a space, ``&``, ``<`` and ``>`` become entities (no raw HTML), so do ``:``, ``@`` and the dot of ``www.``
    (no bare URL or e-mail address becomes a link), and Markdown's punctuation (pipes, backticks, emphasis,
    link brackets) is backslash-escaped."""
    text = _MD_SPACE.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # GitHub's Markdown turns a bare "http://...", "www...." or "a@b.c" into a link: their trigger characters
    # become entities, which render as the same text and are never autolinked
    text = text.replace(":", "&#58;").replace("@", "&#64;")
    text = _WWW.sub(lambda m: m.group(0)[:3] + "&#46;", text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_finalize(value: Any) -> Any:
    # every {{ ... }} of the Markdown templates passes here: only the number formatters' Markup is kept as is
    if isinstance(value, Markup):
        return str(value)
    return md_cell("" if value is None else value)


# ------------------------------------------------------------------------------ helpers
def _scale(task: dict[str, Any]) -> tuple[float, float]:
    main = task["main_metric"]
    vals: list[float] = []
    for e in task["entries"]:
        m = e["metrics"].get(main) or {}
        vals += [x for x in (m.get("value"), m.get("ci_low"), m.get("ci_high")) if x is not None]
    for r in task.get("reference", []):
        m = r["metrics"].get(main) or {}
        vals += [x for x in (m.get("value"), m.get("ci_low"), m.get("ci_high")) if x is not None]
    if not vals:
        return (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    pad = max(0.02, 0.06 * (hi - lo))
    return (lo - pad, hi + pad)


def _bar(m: dict[str, Any] | None, scale: tuple[float, float] | None) -> dict[str, float] | None:
    """Geometry of a tiny inline SVG interval bar on a common scale (numbers only; the template draws it)."""
    if not m or m.get("value") is None or scale is None:
        return None
    w, pad = 96, 4
    a, b = scale
    span = (b - a) or 1.0

    def x(t: float) -> float:
        return round(pad + (w - 2 * pad) * (t - a) / span, 1)

    has_ci = m.get("ci_low") is not None and m.get("ci_high") is not None
    return {"w": w, "pad": pad, "v": x(m["value"]), "lo": x(m["ci_low"]) if has_ci else None, "hi": x(m["ci_high"]) if has_ci else None}


def _slug(task: dict[str, Any]) -> str:
    """The section's id: task, version and protocol (two sections of one task never share it)."""
    parts = [task["name"], task["version"], task.get("protocol") or "linear"] + (["total"] if task.get("shots_per") == "total" else [])
    return "task-" + "".join(c if c.isalnum() else "-" for c in "-".join(str(p) for p in parts))


def _protocol(task: dict[str, Any]) -> str:
    """The section's protocol in words ("linear probe", "k-NN probe", "fine-tuned, linear probe" ...)."""
    return protocol_label(task.get("protocol") or "linear", task.get("shots_per") or "")


def _sentence(text: str) -> str:
    """A description as a sentence followed by a space (empty stays empty)."""
    text = (text or "").strip()
    if not text:
        return ""
    return text + ("" if text[-1] in ".!?" else ".") + " "


def _alternative(alt: str) -> str:
    return {"greater": "one-sided: H1 the top entry is better", "less": "one-sided", "two-sided": "two-sided"}.get(alt, str(alt))


def _correction(stats: dict[str, Any]) -> str:
    """The section's multiplicity correction as the page names it (documents before max-T: Holm)."""
    return {"maxt": "max-T", "holm": "Holm"}.get(str(stats.get("correction") or "holm"), str(stats.get("correction")))


def _unit(stats: dict[str, Any]) -> str:
    units = str(stats.get("bootstrap_unit") or "patient").split("/")
    return " or ".join(UNIT_WORDS.get(u, u) for u in units)


def _anchor(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() else "-" for c in str(p)) for p in parts)


def _groups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The page's task blocks, one per task name and version in the document's order: ``ranked`` (its protocol
    sections with measured results), ``robustness`` (its robustness view or None), ``submissions`` (the sections
    holding submissions) and ``references`` (the sections with published rows), shown in that order as one
    block; the anchors of each part, and ``lead``, the anchor of the part that opens the block."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def group(name: str, version: str, kind: str) -> dict[str, Any]:
        if (name, version) not in groups:
            key = _anchor(name, version)
            groups[(name, version)] = {"id": f"group-{key}", "name": name, "version": version, "kind": kind, "ranked": [], "robustness": None, "submissions": [],
                                       "references": [], "submissions_id": f"submissions-{key}", "references_id": f"references-{key}"}  # fmt: skip
        return groups[(name, version)]

    for t in doc["tasks"]:
        g = group(t["name"], t["version"], t["kind"])
        if t["entries"] or t["unranked"]:
            g["ranked"].append(t)
        for part in ("submissions", "reference"):
            if t.get(part):
                g["references" if part == "reference" else part].append(t)
    for s in doc.get("robustness") or []:
        g = group(s["name"], s["version"], s["kind"])
        g["robustness"], g["robustness_id"] = s, f"robustness-{_slug(s)}"
    for g in groups.values():
        g["lead"] = _slug(g["ranked"][0]) if g["ranked"] else g.get("robustness_id") or (g["submissions_id"] if g["submissions"] else g["references_id"])
    return [groups[k] for k in sorted(groups)]


_GLOBALS: dict[str, Any] = {
    "ALPHA": ALPHA,
    "REFERENCE_COLOUR": REFERENCE_COLOUR,
    "metric_label": metric_label,
    "entry_label": entry_label,
    "colours": colours,
    "scale": _scale,
    "bar": _bar,
    "slug": _slug,
    "protocol": _protocol,
    "protocol_label": protocol_label,
    "headline": headline_text,
    "labels": labels_text,
    "sentence": _sentence,
    "alternative": _alternative,
    "unit": _unit,
    "correction_label": _correction,
    "forest_plot": forest_plot,
    "curve_plot": curve_plot,
}
_GLOBALS["robustness_plot"] = robustness_plot



@functools.lru_cache(maxsize=2)
def _environment(markdown: bool) -> jinja2.Environment:
    common = {"loader": jinja2.FileSystemLoader(TEMPLATES), "undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
    if markdown:
        env = jinja2.Environment(autoescape=False, finalize=_md_finalize, **common)  # noqa: S701 - Markdown: md_cell escapes every value
        env.filters.update({k: (lambda f: lambda *a: Markup(f(*a)))(f) for k, f in _NUMBER_FILTERS.items()})
    else:
        env = jinja2.Environment(autoescape=True, **common)
        env.filters.update(_NUMBER_FILTERS)
    env.globals.update(_GLOBALS)
    return env


def render_html(doc: dict[str, Any]) -> str:
    """The self-contained leaderboard page."""
    return _environment(False).get_template("index.html.j2").render(doc=doc, csp=CSP, cite=citations(doc["lesionbench_version"]), groups=_groups(doc))


def render_markdown(doc: dict[str, Any]) -> str:
    """The leaderboard as GitHub-flavoured Markdown tables (for READMEs and papers)."""
    return _environment(True).get_template("leaderboard.md.j2").render(doc=doc, groups=_groups(doc))


# ------------------------------------------------------------ the CSV of every row, and how to cite
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
