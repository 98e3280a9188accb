"""The leaderboard's figures, drawn from the leaderboard document as inline PNG (base64) data.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, so the global
pyplot state and backend are never touched.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from lesionbench.leaderboard.labels import PALETTE, REFERENCE_COLOUR, colours, entry_label, headline_text, metric_label  # noqa: F401 - PALETTE kept importable from here

_TEXT = "#1f2430"
_GRID = "#e6e8ec"


def _plain(text: str) -> str:
    """``text`` shown as typed: matplotlib reads a pair of ``$`` as mathtext (``$\\frac{`` fails to parse)."""
    text = str(text).replace("$", r"\$")
    # a legend leaves out labels that start with "_"; a leading space keeps them
    return " " + text if text.startswith("_") else text


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#b8bcc4")
    ax.tick_params(colors=_TEXT, labelsize=9)
    ax.grid(True, color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=160, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curve_plot(task: dict[str, Any]) -> str | None:
    """Main metric vs training-label fraction for every entry (mean over seeds, band = min..max, bars = sd);
    k-shot sections (``task["shots"]`` set) against the number of shots instead."""
    from matplotlib.figure import Figure

    main = task["main_metric"]
    entries = [e for e in task["entries"] if e["curves"].get(main)]
    if not entries:
        return None
    cols = colours(task)
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    shots = task.get("shots") is not None
    axis = "shots" if shots else "fraction"
    fractions: set[float] = set()
    for e in entries:
        pts = [p for p in e["curves"][main] if p.get(axis) is not None]
        if not pts:
            continue
        x = [p[axis] for p in pts]
        fractions.update(x)
        c = cols[entry_label(e, task)]
        ax.fill_between(x, [p["min"] for p in pts], [p["max"] for p in pts], color=c, alpha=0.12, linewidth=0)
        ax.errorbar(x, [p["mean"] for p in pts], yerr=[p["sd"] for p in pts], color=c, marker="o", markersize=4.5, linewidth=1.8, capsize=2.5, label=_plain(entry_label(e, task)))
    for r in task.get("reference", []) if not shots else []:  # published rows are at fractions, not shots
        m = r["metrics"].get(main)
        if m and r["approach"].startswith("FMCIB features"):
            ax.scatter([r["fraction"]], [m["value"]], marker="D", s=34, facecolor="white", edgecolor=REFERENCE_COLOUR, linewidth=1.4, zorder=5, label=_plain(f"{r['approach']} (published)") if r["fraction"] == 1.0 else None)
            fractions.add(r["fraction"])
    ax.set_xscale("log")
    ticks = sorted(fractions)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" if shots else f"{t:.0%}" for t in ticks])
    ax.minorticks_off()
    per = "in total" if task.get("shots_per") == "total" else "per class"
    ax.set_xlabel(f"labelled lesions {per} (shots)" if shots else "training labels used", color=_TEXT, fontsize=10)
    ax.set_ylabel(_plain(metric_label(main)), color=_TEXT, fontsize=10)
    _style(ax)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    return _png(fig)


def forest_plot(task: dict[str, Any]) -> str | None:
    """Main metric at the task's headline fraction with 95% CIs; published reference rows below a divider, hollow and grey."""
    from matplotlib.figure import Figure

    main = task["main_metric"]
    cols = colours(task)
    rows: list[tuple[str, float, float | None, float | None, str, bool]] = []
    for e in task["entries"]:
        m = e["metrics"].get(main) or {}
        if m.get("value") is not None:
            lab = entry_label(e, task)
            rows.append((lab, m["value"], m.get("ci_low"), m.get("ci_high"), cols[lab], False))
    n_measured = len(rows)
    for r in task.get("reference", []):
        m = r["metrics"].get(main)
        if m and r["fraction"] == 1.0:
            rows.append((f"{r['approach']}  [published]", m["value"], m.get("ci_low"), m.get("ci_high"), REFERENCE_COLOUR, True))
    if not rows:
        return None
    fig = Figure(figsize=(4.4, 0.36 * len(rows) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    for i, (lab, v, lo, hi, c, ref) in enumerate(rows):
        y = len(rows) - 1 - i
        if lo is not None and hi is not None:
            ax.hlines(y, lo, hi, color=c, linewidth=2.2 if not ref else 1.6, linestyles="solid" if not ref else (0, (3, 2)))
        if ref:
            ax.scatter([v], [y], marker="D", s=36, facecolor="white", edgecolor=c, linewidth=1.4, zorder=3)
        else:
            ax.scatter([v], [y], marker="o", s=42, color=c, zorder=3)
    if 0 < n_measured < len(rows):
        ax.axhline(len(rows) - n_measured - 0.5, color="#c9ccd2", linewidth=0.8, linestyle=(0, (2, 2)))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_plain(r[0]) for r in reversed(rows)], fontsize=9.5)
    for tick, r in zip(ax.get_yticklabels(), list(reversed(rows))):
        tick.set_color(REFERENCE_COLOUR if r[5] else _TEXT)
        if r[5]:
            tick.set_fontstyle("italic")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(_plain(f"{metric_label(main)} at {headline_text(task)} (95% CI)"), color=_TEXT, fontsize=10)
    _style(ax)
    ax.grid(False, axis="y")
    return _png(fig)


def robustness_plot(section: dict[str, Any]) -> str | None:
    """Per-feature ICC(2,1) (absolute agreement) under each perturbation, one box per encoder (undefined ICCs left out; whiskers 1.5 IQR, no outliers)."""
    from matplotlib.figure import Figure

    rows = [r for r in section["rows"] if r.get("box")]
    if not rows:
        return None
    perts = list(dict.fromkeys(r["perturbation"] for r in rows))
    encs = list(dict.fromkeys(r["encoder"] for r in section["rows"]))
    cols = {e: PALETTE[i % len(PALETTE)] for i, e in enumerate(encs)}
    width = 0.8 / len(encs)
    fig = Figure(figsize=(max(4.4, 1.0 + 0.9 * len(perts) * max(1, len(encs) / 2)), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for r in rows:
        i, j = perts.index(r["perturbation"]), encs.index(r["encoder"])
        b = r["box"]
        stats = {"whislo": b["whislo"], "q1": b["q1"], "med": b["med"], "q3": b["q3"], "whishi": b["whishi"], "fliers": []}
        c = cols[r["encoder"]]
        ax.bxp([stats], positions=[i - 0.4 + width * (j + 0.5)], widths=[width * 0.8], showfliers=False, patch_artist=True,
               boxprops={"facecolor": c, "alpha": 0.55, "edgecolor": c}, medianprops={"color": _TEXT, "linewidth": 1.4},
               whiskerprops={"color": c}, capprops={"color": c})  # fmt: skip
    ax.axhline(0.75, color="#98a2b3", linewidth=0.9, linestyle=(0, (3, 2)))
    ax.set_xticks(range(len(perts)))
    ax.set_xticklabels([_plain(p) for p in perts])
    ax.set_xlim(-0.6, len(perts) - 0.4)
    ax.set_ylabel("per-feature ICC(2,1), absolute agreement", color=_TEXT, fontsize=10)
    _style(ax)
    ax.grid(False, axis="x")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=cols[e], alpha=0.55, edgecolor=cols[e], label=_plain(e)) for e in encs]
    fig.legend(handles=handles, frameon=False, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(encs)))
    return _png(fig)
