"""Render the leaderboard document as one self-contained HTML page and as Markdown.

The page carries everything inline (CSS, PNG figures as data URIs, small SVG interval bars), loads
nothing from the network and runs no script, so it can be opened from disk, attached to a review or
archived with a paper. Every string from a result or a submission is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from lesionbench.leaderboard.build import ALPHA, metric_label
from lesionbench.leaderboard.plots import REFERENCE_COLOUR, colours, curve_plot, entry_label, forest_plot

_CSS = """
:root{--ink:#1f2430;--muted:#667085;--faint:#98a2b3;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;
--accent:#0b5cad;--ref:#8a8f98;--refbg:#f7f7f5;--good:#067647;--bad:#b42318}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 "Inter","Helvetica Neue","Segoe UI",Roboto,"Liberation Sans",Arial,sans-serif;
font-feature-settings:"tnum" 1,"lnum" 1}
main{max-width:1180px;margin:0 auto;padding:32px 28px 56px}
header.page{margin-bottom:22px}
header.page h1{font-size:28px;letter-spacing:-.01em;margin:0 0 4px;font-weight:700}
header.page .sub{color:var(--muted);font-size:14px}
nav.tasks{display:flex;flex-wrap:wrap;gap:8px;margin:16px 0 6px}
nav.tasks a{font-size:13px;color:var(--accent);text-decoration:none;background:#eaf2fb;border-radius:999px;padding:3px 12px}
.method{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;color:var(--muted);font-size:13px;margin:14px 0 26px}
.method b{color:var(--ink);font-weight:600}
section.task{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:22px 24px 18px;margin:0 0 28px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
section.task h2{font-size:21px;margin:0;font-weight:700;letter-spacing:-.005em}
.badges{display:inline-flex;gap:6px;margin-left:10px;vertical-align:3px}
.badge{font-size:11.5px;font-weight:600;border-radius:6px;padding:2px 7px;background:#f2f4f7;color:#475467}
.badge.kind{background:#eef4ff;color:#3538cd}
.desc{color:var(--muted);margin:6px 0 14px;font-size:14px}
h3{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:22px 0 8px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:14px}
.scroll{overflow-x:auto}
th{font-size:12px;font-weight:600;color:var(--muted);text-align:right;padding:7px 10px;border-bottom:1.5px solid #d0d5dd;white-space:nowrap}
th.l,td.l{text-align:left}
td{padding:8px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap;vertical-align:middle}
tbody tr:last-child td{border-bottom:none}
tr.top td{background:#f8fbff}
td.rank{font-weight:700;font-size:15px;width:44px}
.enc{font-weight:600}
.swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:8px;vertical-align:0}
.probe{color:var(--faint);font-size:12px;margin-left:6px;font-weight:400}
.v{font-weight:600}
.ci{color:var(--muted);font-size:12.5px;margin-left:4px}
.sd{color:var(--faint);font-size:12px}
.sig{color:var(--good);font-weight:600}
.ns{color:var(--muted)}
.na{color:var(--faint)}
svg.bar{vertical-align:middle;margin-left:8px}
.figs{display:grid;grid-template-columns:1fr 1fr;gap:18px;margin-top:8px;align-items:start}
figure{margin:0;border:1px solid var(--line);border-radius:10px;padding:10px 12px 6px;background:#fff}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:12.5px;color:var(--muted);margin-top:4px}
table.ref{background:var(--refbg);border:1px dashed #c8c9c5;border-radius:8px;border-collapse:separate;border-spacing:0}
table.ref td,table.ref th{color:#5f636b;border-bottom-color:#e7e7e3}
table.ref td.l{font-style:italic}
.refpill{display:inline-block;font-size:10.5px;font-weight:700;letter-spacing:.05em;color:#fff;background:var(--ref);border-radius:4px;padding:1px 6px;margin-right:8px;font-style:normal;vertical-align:1px}
.note{font-size:12.5px;color:var(--muted);margin:6px 2px 0}
details{margin-top:16px}
summary{cursor:pointer;font-size:13px;color:var(--muted);font-weight:600}
table.prov{font-size:12.5px;margin-top:6px}
table.prov td{padding:5px 8px}
code{font-family:"JetBrains Mono","SFMono-Regular",Menlo,Consolas,"Liberation Mono",monospace;font-size:12px;color:#344054}
.private{color:#6941c6}
footer{color:var(--muted);font-size:12.5px;margin-top:30px;border-top:1px solid var(--line);padding-top:14px}
@media (max-width:900px){.figs{grid-template-columns:1fr}}
@media print{body{background:#fff}section.task{box-shadow:none;break-inside:avoid}}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _signed(x: float | None) -> str:
    """+0.012 / −0.012 with a typographic minus (tables people paste into papers)."""
    return "–" if x is None else f"{x:+.3f}".replace("-", "\u2212")


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def _sd(m: dict[str, Any]) -> str:
    """'±sd' over seeds, shown only when there are several seeds and the spread is visible at 3 decimals."""
    sd = m.get("sd")
    return f' <span class="sd">±{sd:.3f}</span>' if sd is not None and sd >= 0.0005 and m.get("n_seeds", 0) > 1 else ""


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("ci_low") is None or m.get("ci_high") is None:
        return ""
    return f'<span class="ci">({_f(m["ci_low"])}–{_f(m["ci_high"])})</span>'


def _ci_md(m: dict[str, Any] | None) -> str:
    if not m or m.get("ci_low") is None or m.get("ci_high") is None:
        return ""
    return f" ({_f(m['ci_low'])}–{_f(m['ci_high'])})"


def _bar(v: float | None, lo: float | None, hi: float | None, scale: tuple[float, float], colour: str, dashed: bool = False) -> str:
    """A tiny inline SVG: the interval on a common scale, with the point estimate."""
    if v is None:
        return ""
    w, h, pad = 96, 12, 4
    a, b = scale
    span = (b - a) or 1.0

    def x(t: float) -> float:
        return pad + (w - 2 * pad) * (t - a) / span

    line = ""
    if lo is not None and hi is not None:
        dash = ' stroke-dasharray="3 2"' if dashed else ""
        line = f'<line x1="{x(lo):.1f}" y1="6" x2="{x(hi):.1f}" y2="6" stroke="{colour}" stroke-width="2"{dash}/>'
    dot = (
        f'<rect x="{x(v) - 3:.1f}" y="3" width="6" height="6" fill="#fff" stroke="{colour}" stroke-width="1.4" transform="rotate(45 {x(v):.1f} 6)"/>'
        if dashed
        else f'<circle cx="{x(v):.1f}" cy="6" r="3.4" fill="{colour}"/>'
    )
    return f'<svg class="bar" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="95% interval">' f'<line x1="{pad}" y1="6" x2="{w - pad}" y2="6" stroke="#eef0f3" stroke-width="6" stroke-linecap="round"/>{line}{dot}</svg>'


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


def _ranking_table(task: dict[str, Any]) -> str:
    main = task["main_metric"]
    others = [m for m in task["metrics"] if m != main]
    cols = colours(task)
    scale = _scale(task)
    head = (
        '<tr><th class="l">Rank</th><th class="l">Encoder</th>'
        f"<th>{_e(metric_label(main))} (95% CI)</th>"
        + "".join(f"<th>{_e(metric_label(m))}</th>" for m in others)
        + '<th>Rank 95% interval</th><th>Δ vs top (95% CI)</th><th>p (Holm)</th></tr>'
    )
    rows = []
    for e in task["entries"]:
        lab = entry_label(e, task)
        m = e["metrics"].get(main) or {}
        comp = e.get("comparison") or {}
        if comp.get("is_reference"):
            delta, p = '<span class="na">top</span>', '<span class="na">–</span>'
        elif comp.get("p_holm") is not None:
            delta = f'{_signed(comp["difference"])} <span class="ci">({_signed(comp["ci_low"])}, {_signed(comp["ci_high"])})</span>'
            cls = "sig" if comp["significant"] else "ns"
            mark = " ✱" if comp["significant"] else ""
            p = f'<span class="{cls}">{_p(comp["p_holm"])}{mark}</span>'
        else:
            delta, p = '<span class="na">–</span>', '<span class="na">–</span>'
        ri = e.get("rank_interval")
        ri_s = (f"{ri[0]}" if ri[0] == ri[1] else f"{ri[0]}–{ri[1]}") if ri else '<span class="na">–</span>'
        other_cells = []
        for om in others:
            mv = e["metrics"].get(om) or {}
            sd = _sd(mv)
            other_cells.append(f'<td><span title="seed {e["seed"]} value; ± is the SD over seeds">{_f(mv.get("value"))}</span>{sd}</td>')
        sd_main = _sd(m)
        rows.append(
            f'<tr class="{"top" if e["rank"] == 1 else ""}"><td class="l rank">{e["rank"]}</td>'
            f'<td class="l"><span class="swatch" style="background:{cols[lab]}"></span><span class="enc">{_e(e["encoder"])}</span>'
            f'<span class="probe">{_e(e["probe"])} · v{_e(e["provenance"]["encoder_version"])}</span></td>'
            f'<td><span class="v">{_f(m.get("value"))}</span>{_ci(m)}{sd_main}{_bar(m.get("value"), m.get("ci_low"), m.get("ci_high"), scale, cols[lab])}</td>'
            + "".join(other_cells)
            + f"<td>{ri_s}</td><td>{delta}</td><td>{p}</td></tr>"
        )
    return f'<div class="scroll"><table class="rank"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'


def _reference_table(task_name: str, refs: list[dict[str, Any]], metrics: list[str], main: str | None, scale: tuple[float, float] | None) -> str:
    if not refs:
        return ""
    ms = list(dict.fromkeys(metrics + [m for r in refs for m in r["metrics"]]))
    head = '<tr><th class="l">Approach (published)</th><th>Labels</th>' + "".join(f"<th>{_e(metric_label(m))}</th>" for m in ms) + "</tr>"
    rows = []
    for r in sorted(refs, key=lambda r: (-r["fraction"],)):
        cells = []
        for m in ms:
            mv = r["metrics"].get(m)
            bar = _bar(mv["value"], mv.get("ci_low"), mv.get("ci_high"), scale, REFERENCE_COLOUR, dashed=True) if (mv and m == main and scale and r["fraction"] == 1.0) else ""
            cells.append(f"<td>{_f(mv['value']) if mv else '<span class=na>–</span>'}{_ci(mv)}{bar}</td>")
        rows.append(f'<tr><td class="l"><span class="refpill">REF</span>{_e(r["approach"])}</td><td>{r["fraction"]:.0%}</td>{"".join(cells)}</tr>')
    notes = list(dict.fromkeys(r["note"] for r in refs if r.get("note") and r["fraction"] == 1.0))
    extra = "".join(f" Note: {_e(n)}." for n in notes)
    return (
        f'<h3>Published reference — {_e(refs[0]["source"])} (not ranked)</h3>'
        f'<table class="ref"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Numbers as published, on the paper\'s own splits and labels; not measured by lesionbench, '
        f"so they are not comparable one-to-one with lesionbench measurements.{extra}</p>"
    )


def _submissions_table(task: dict[str, Any], reveal: bool) -> str:
    subs = task["submissions"]
    if not subs:
        return ""
    main = task["main_metric"]
    others = [m for m in task["metrics"] if m != main]
    head = (
        '<tr><th class="l">Rank</th><th class="l">Submission</th><th class="l">Kind</th>'
        f"<th>Public {_e(metric_label(main))} (95% CI)</th>"
        + "".join(f"<th>{_e(metric_label(m))}</th>" for m in others)
        + "<th>Public lesions</th>"
        + (f'<th class="private">Private {_e(metric_label(main))} (95% CI)</th><th class="private">Private rank</th>' if reveal else "")
        + '<th class="l">Submitted</th></tr>'
    )
    rows = []
    for s in subs:
        pm = s["public"].get(main)
        cells = "".join(f"<td>{_f((s['public'].get(m) or {}).get('value'))}</td>" for m in others)
        priv = ""
        if reveal:
            qm = (s.get("private") or {}).get(main)
            priv = f'<td class="private"><span class="v">{_f(qm.get("value") if qm else None)}</span>{_ci(qm)}</td><td class="private">{s.get("private_rank") or "–"}</td>'
        rows.append(
            f'<tr><td class="l rank">{s["rank"]}</td><td class="l enc">{_e(s["name"])}</td><td class="l">{_e(s["kind"])}</td>'
            f'<td><span class="v">{_f(pm.get("value") if pm else None)}</span>{_ci(pm)}</td>{cells}<td>{s["n_public"]}</td>{priv}'
            f'<td class="l"><code title="{_e(s["submitted"])}">{_e(s["submitted"][:10])}</code></td></tr>'
        )
    note = (
        "Private scores are shown because this page was built with <code>--reveal</code>; every other column is on the public part."
        if reveal
        else "All scores are on the public part of the test set; the private part's scores stay hidden until the organiser reveals them."
    )
    return f'<h3>Submissions</h3><div class="scroll"><table class="subs"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div><p class="note">{note}</p>'


def _provenance_table(task: dict[str, Any]) -> str:
    items = [(entry_label(e, task), e["provenance"]) for e in task["entries"]] + [(f"submission: {s['name']}", s["provenance"]) for s in task["submissions"]]
    if not items:
        return ""
    head = '<tr><th class="l">Entry</th><th class="l">Encoder version</th><th class="l">Weights SHA-256</th><th class="l">Task version</th><th class="l">Split</th><th class="l">lesionbench</th><th class="l">Date</th><th class="l">Source</th></tr>'
    rows = []
    for lab, p in items:
        w = p.get("weights_sha256")
        wcell = f'<code title="{_e(w)}">{_e(w[:12])}…</code>' if w else '<span class="na">none (no weights)</span>'
        split = _e(p["split_variant"]) + (f' <code title="split hash">{_e(p["split_hash"][:10])}</code>' if p.get("split_hash") else "")
        if p.get("leaked_patients"):
            split += f' <span class="ns">({p["leaked_patients"]} leaked patients)</span>'
        src = "MLflow run " + f'<code>{_e(p["location"].rsplit("#", 1)[-1][:12])}</code>' if p["source"] == "mlflow" else "local file"
        card = p.get("model_card") or {}  # zoo encoders: parameters, embedding, recipe, data, licences
        about = " · ".join(f"{k.replace('_', ' ')}: {card[k]}" for k in ("parameters", "embedding", "recipe", "pretraining_data", "code_licence", "weights_licence") if card.get(k))
        rows.append(
            f'<tr><td class="l enc">{_e(lab)}' + (f'<div class="ns">{_e(about)}</div>' if about else "") + f'</td><td class="l"><code>{_e(p["encoder_version"])}</code></td><td class="l">{wcell}</td>'
            f'<td class="l"><code>{_e(p["task_version"])}</code></td><td class="l">{split}</td><td class="l"><code>{_e(p["lesionbench_version"])}</code></td>'
            f'<td class="l"><code>{_e(p["created"][:19])}</code></td><td class="l">{src}</td></tr>'
        )
    return f'<details><summary>Provenance of {len(items)} result(s)</summary><div class="scroll"><table class="prov"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div></details>'


def _sentence(text: str) -> str:
    """A description as a sentence followed by a space (empty stays empty)."""
    text = (text or "").strip()
    if not text:
        return ""
    return text + ("" if text[-1] in ".!?" else ".") + " "


def _slug(task: dict[str, Any]) -> str:
    return "task-" + "".join(c if c.isalnum() else "-" for c in f"{task['name']}-{task['version']}")


def _task_html(task: dict[str, Any], reveal: bool) -> str:
    main = task["main_metric"]
    parts = [
        f'<section class="task" id="{_slug(task)}"><h2>{_e(task["name"])}<span class="badges">'
        f'<span class="badge" title="task version">{_e(task["version"])}</span><span class="badge kind">{_e(task["kind"])}</span></span></h2>',
        f'<p class="desc">{_e(_sentence(task["description"]))}Main metric: <b>{_e(metric_label(main))}</b>.</p>',
    ]
    if task["entries"]:
        parts.append("<h3>Ranking at 100% of the training labels</h3>")
        parts.append(_ranking_table(task))
        st = task["statistics"]
        note = (
            f"Values: the 100%-label run (seed {task['entries'][0]['seed']}) with its 95% percentile-bootstrap CI over test lesions; "
            f"± is the SD over seeds. Rank interval: 95% interval of the rank over {st['n_boot']} bootstrap resamples of the test lesions. "
            f"Δ and p: each entry against the top one on the same lesions (one-sided permutation test, {st['n_perm']} swaps), "
            f"Holm-corrected; ✱ marks p &lt; {ALPHA}."
        )
        if st.get("note"):
            note += f" <b>Note:</b> {_e(st['note'])}."
        parts.append(f'<p class="note">{note}</p>')
        figs = []
        fp = forest_plot(task)
        if fp:
            figs.append(f'<figure><img alt="{_e(metric_label(main))} with 95% CI per encoder" src="data:image/png;base64,{fp}"><figcaption>{_e(metric_label(main))} at 100% labels with 95% CIs{"; published reference rows hollow and grey" if any(main in r["metrics"] and r["fraction"] == 1.0 for r in task["reference"]) else ""}.</figcaption></figure>')
        cp = curve_plot(task)
        if cp:
            figs.append(f'<figure><img alt="low-data curves of {_e(metric_label(main))}" src="data:image/png;base64,{cp}"><figcaption>Low-data curves: mean over seeds, bars ±1 SD, band min–max.</figcaption></figure>')
        if figs:
            parts.append(f'<h3>Figures</h3><div class="figs">{"".join(figs)}</div>')
    else:
        parts.append('<p class="note">No measured results for this task yet.</p>')
    parts.append(_submissions_table(task, reveal))
    parts.append(_reference_table(task["name"], task["reference"], task["metrics"], main, _scale(task)))
    parts.append(_provenance_table(task))
    parts.append("</section>")
    return "".join(parts)


def render_html(doc: dict[str, Any]) -> str:
    """The self-contained leaderboard page."""
    reveal = doc["reveal"]
    tasks = doc["tasks"]
    nav = "".join(f'<a href="#{_slug(t)}">{_e(t["name"])}</a>' for t in tasks)
    n_entries = sum(len(t["entries"]) for t in tasks)
    n_subs = sum(len(t["submissions"]) for t in tasks)
    body = "".join(_task_html(t, reveal) for t in tasks)
    ref_only = ""
    if doc["reference_only"]:
        blocks = "".join(
            f'<section class="task" id="ref-{_e(r["name"])}"><h2>{_e(r["name"])}<span class="badges"><span class="badge">no measured results</span></span></h2>'
            + _reference_table(r["name"], r["reference"], [], None, None)
            + "</section>"
            for r in doc["reference_only"]
        )
        ref_only = f'<h3 style="margin-top:34px">Published reference only (tasks without lesionbench results yet)</h3>{blocks}'
    src = doc["published_source"]
    title = "lesionbench leaderboard" + (" — organiser view (private scores revealed)" if reveal else "")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="lesionbench {_e(doc["lesionbench_version"])}"><title>{_e(title)}</title><style>{_CSS}</style></head>'
        f'<body><main><header class="page"><h1>{_e(title)}</h1>'
        f'<div class="sub">{len(tasks)} task(s) · {n_entries} measured entr{"y" if n_entries == 1 else "ies"} · {n_subs} submission(s) · '
        f'generated {_e(doc["generated"])} · lesionbench {_e(doc["lesionbench_version"])}</div>'
        f'<nav class="tasks">{nav}</nav></header>'
        '<div class="method"><b>How to read this page.</b> Encoders are ranked per task by the main metric of a linear probe trained on 100% of the '
        "training labels. Intervals are 95% percentile-bootstrap CIs over the test lesions. Differences from the top entry are tested "
        "with paired one-sided permutation tests and Holm-corrected for the number of comparisons. "
        '<span class="refpill">REF</span>rows are numbers published by '
        f"{_e(src['source'])} and are never ranked with measured results.</div>"
        f"{body}{ref_only}"
        f'<footer>Reference numbers: {_e(src["citation"])}. Built by <code>lesionbench leaderboard build</code>; '
        "the same data is in <code>leaderboard.json</code> (schema: <code>leaderboard.schema.json</code>) and <code>leaderboard.md</code>.</footer>"
        "</main></body></html>\n"
    )


# --------------------------------------------------------------------------------- markdown
def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict[str, Any]) -> str:
    """The leaderboard as GitHub-flavoured Markdown tables (for READMEs and papers)."""
    out = ["# lesionbench leaderboard\n", f"Generated {doc['generated']} by lesionbench {doc['lesionbench_version']}."]
    out.append(
        "Ranked by the main metric at 100% training labels (95% percentile-bootstrap CI over test lesions). "
        "Rank interval: 95% bootstrap interval of the rank. p: one-sided paired permutation test against the top entry, "
        f"Holm-corrected (* = p < {ALPHA}). Rows marked **[published]** are from {doc['published_source']['source']} and are not ranked.\n"
    )
    for t in doc["tasks"]:
        main = t["main_metric"]
        others = [m for m in t["metrics"] if m != main]
        out.append(f"## {t['name']} (version {t['version']}, {t['kind']})\n")
        if t["entries"]:
            out.append("| Rank | Encoder | Probe | " + f"{metric_label(main)} (95% CI) | " + "".join(f"{metric_label(m)} | " for m in others) + "Rank interval | Δ vs top | p (Holm) |")
            out.append("|" + "---|" * (6 + len(others) + 1))
            for e in t["entries"]:
                m = e["metrics"].get(main) or {}
                c = e.get("comparison") or {}
                if c.get("p_holm") is not None:
                    delta = f"{c['difference']:+.3f}"
                    p = f"{'<0.001' if c['p_holm'] < 0.001 else format(c['p_holm'], '.3f')}{' *' if c['significant'] else ''}"
                else:
                    delta, p = ("top", "–") if c.get("is_reference") else ("–", "–")
                ri = e.get("rank_interval")
                ri_s = (f"{ri[0]}–{ri[1]}" if ri[0] != ri[1] else str(ri[0])) if ri else "–"
                out.append(
                    f"| {e['rank']} | {_md(e['encoder'])} | {_md(e['probe'])} | {_f(m.get('value'))}{_ci_md(m)} | "
                    + "".join(f"{_f((e['metrics'].get(om) or {}).get('value'))} | " for om in others)
                    + f"{ri_s} | {delta} | {p} |"
                )
            out.append("")
        if t["submissions"]:
            reveal = doc["reveal"]
            out.append(f"**Submissions** (ranked by the public part of the test set{'; private scores revealed' if reveal else ''})\n")
            out.append(f"| Rank | Name | Kind | Public {metric_label(main)} (95% CI) |" + (f" Private {metric_label(main)} (95% CI) | Private rank |" if reveal else ""))
            out.append("|---|---|---|---|" + ("---|---|" if reveal else ""))
            for s in t["submissions"]:
                pm = s["public"].get(main)
                row = f"| {s['rank']} | {_md(s['name'])} | {s['kind']} | {_f(pm.get('value') if pm else None)}{_ci_md(pm)} |"
                if reveal:
                    qm = (s.get("private") or {}).get(main)
                    row += f" {_f(qm.get('value') if qm else None)}{_ci_md(qm)} | {s.get('private_rank') or '–'} |"
                out.append(row)
            out.append("")
        out.append(_reference_md(t["reference"], t["metrics"]))
    for r in doc["reference_only"]:
        out.append(f"## {r['name']} (no lesionbench results yet)\n")
        out.append(_reference_md(r["reference"], []))
    out.append(f"Reference: {doc['published_source']['citation']}\n")
    return "\n".join(x for x in out if x is not None)


def _reference_md(refs: list[dict[str, Any]], metrics: list[str]) -> str:
    if not refs:
        return ""
    ms = list(dict.fromkeys(metrics + [m for r in refs for m in r["metrics"]]))
    lines = [f"**Published reference** ({refs[0]['source']}; not measured by lesionbench, not ranked)", "", "| Approach **[published]** | Labels | " + "".join(f"{metric_label(m)} | " for m in ms), "|---|---|" + "---|" * len(ms)]
    for r in sorted(refs, key=lambda r: -r["fraction"]):
        lines.append(
            f"| *{_md(r['approach'])}* [published] | {r['fraction']:.0%} | "
            + "".join(f"{_f(r['metrics'][m]['value']) + _ci_md(r['metrics'][m]) if m in r['metrics'] else '–'} | " for m in ms)
        )
    return "\n".join(lines) + "\n"
