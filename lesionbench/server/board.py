"""A phase's board, built by the leaderboard's own statistics and templates.

Each team's entry becomes a :class:`~lesionbench.leaderboard.collect.LoadedResult` whose per-lesion
predictions are the labelled table the worker stored, restricted to one part of the test set; the
leaderboard's :func:`~lesionbench.leaderboard.build.build_document` then ranks them with CIs, bootstrap
rank intervals and paired tests against the top entry ("tied with the top" = not significantly worse,
adjusted over all pairs: max-T from three entries, else Holm; see ``p_adjusted``), and :func:`~lesionbench.leaderboard.render.render_html` draws the page.

Which part: the **public** board shows each team's best public score (equal scores: the earlier
submission) on the public lesions only. The **private** board shows each team's final submissions
(the team's selection, else its best ``final_selection_n`` public ones; the best private score among
them counts) on the private lesions, and exists for organisers before the reveal and for everyone
after it. Nothing private enters a public document: the items are built from the public part alone.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from lesionbench._version import __version__
from lesionbench.benchmark.types import EncoderMeta, MetricValue, SubsetResult, TaskResult
from lesionbench.server.blobs import BlobStore
from lesionbench.server.db import Challenge, Database, Phase, Submission, Team
from lesionbench.server.service import Forbidden, NotFound

PARTS = ("public", "private")
#: A public board is at most this many seconds behind the database (the private one is checked every time:
#: it is access-controlled by the phase's state).
FRESH_S = 1.0


def _metrics(text: str | None) -> dict[str, MetricValue]:
    d = json.loads(text or "{}")
    return {k: MetricValue(float("nan") if v.get("value") is None else v["value"], float("nan") if v.get("ci_low") is None else v["ci_low"], float("nan") if v.get("ci_high") is None else v["ci_high"]) for k, v in d.items()}


def _entries(s: Any, phase: Phase, part: str) -> list[tuple[Submission, str]]:
    """(submission, team name) per team for ``part``."""
    rows = s.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id).where(Submission.phase_id == phase.id, Submission.status == "scored").order_by(Submission.id)).all()
    by_team: dict[int, list[tuple[Submission, str]]] = {}
    for sub, name in rows:
        by_team.setdefault(sub.team_id, []).append((sub, name))

    def pub(x: tuple[Submission, str]) -> tuple[float, int]:
        v = x[0].main_public
        return (-(v if v is not None else float("-inf")), x[0].id)

    out = []
    for subs in by_team.values():
        if part == "public":
            out.append(min(subs, key=pub))
            continue
        chosen = [x for x in subs if x[0].selected] or sorted(subs, key=pub)[: phase.final_selection_n]
        main = next(iter(json.loads(chosen[0][0].private_json or "{}")), None)

        def priv(x: tuple[Submission, str], main: Any = main) -> tuple[float, int]:
            v = (json.loads(x[0].private_json or "{}").get(main) or {}).get("value")
            return (-(v if v is not None else float("-inf")), x[0].id)

        out.append(min(chosen, key=priv))
    return out


def _item(meta: Any, sub: Submission, team: str, part: str, blobs: BlobStore) -> Any:
    from lesionbench.leaderboard.collect import LoadedResult

    metrics = _metrics(sub.public_json if part == "public" else sub.private_json)
    run = SubsetResult(fraction=1.0, seed=0, n_train=0, metrics=metrics, params={"part": part}, predictions_path="predictions.csv")
    probe = "submitted" if sub.kind == "predictions" else "linear"
    result = TaskResult(
        task=meta, encoder=EncoderMeta(name=team, version=str(sub.id), feature_dim=0, description=f"{sub.kind} submission {sub.id}: {sub.description}"[:300]),
        probe=probe, runs=(run,), lesionbench_version=__version__, created=sub.created_at.isoformat(timespec="seconds"), extra={"bootstrap_unit": "patient"},
    )  # fmt: skip
    digest = sub.predictions_sha256

    def fetch(_run: SubsetResult) -> pd.DataFrame | None:
        if digest is None:
            return None
        table = pd.read_csv(io.BytesIO(blobs.read_bytes(digest)), dtype={"lesion_id": str, "patient_id": str})
        return table[table["part"] == part].reset_index(drop=True)

    return LoadedResult(result, "server", f"submission {sub.id}", run_id=str(sub.id), _fetch=fetch)


class Boards:
    """Builds boards and keeps the latest of each (phase, part) until a submission is scored or the phase changes."""

    def __init__(self, db: Database, blobs: BlobStore, task_meta: Callable[[str], Any], *, n_perm: int = 1000):
        self.db, self.blobs, self.task_meta, self.n_perm = db, blobs, task_meta, n_perm
        self._cache: dict[tuple[int, str], tuple[tuple[Any, ...], dict[str, Any], dict[str, bytes]]] = {}
        self._lock = threading.Lock()
        self._building: dict[tuple[int, str], threading.Lock] = {}
        self._checked: dict[tuple[int, str], float] = {}

    def document(self, phase_id: int, part: str, *, organiser: bool) -> dict[str, Any]:
        """The board document of a phase's ``part`` (the private one: organisers, or anyone after the reveal)."""
        return self._entry(phase_id, part, organiser)[1]

    def fresh(self, phase_id: int, part: str, *, fmt: str) -> bytes | None:
        """The public board's ``fmt`` bytes when they are in memory and were checked against the database less
        than :data:`FRESH_S` ago (what :meth:`rendered` would serve without asking it); None otherwise."""
        hit = self._fresh_hit((phase_id, part))
        return None if hit is None else hit[2].get(fmt)

    def _fresh_hit(self, key: tuple[int, str]) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, bytes]] | None:
        """The cached public board of ``key`` when it was checked against the database less than FRESH_S ago."""
        hit = self._cache.get(key)
        if hit is not None and key[1] == "public" and hit[0][3] != "draft" and time.monotonic() - self._checked.get(key, -1e9) < FRESH_S:
            return hit
        return None

    def rendered(self, phase_id: int, part: str, *, organiser: bool, fmt: str) -> bytes:
        """The board as ``json``, ``csv`` or ``html`` bytes, made once per board state and served from memory."""
        entry = self._entry(phase_id, part, organiser)
        out = entry[2].get(fmt)
        if out is None:
            doc = entry[1]
            if fmt == "json":
                out = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
            elif fmt == "csv":
                out = board_csv(doc).encode()
            else:
                from lesionbench.leaderboard.render import render_html

                out = render_html(doc).encode()
            entry[2][fmt] = out
        return out

    def _entry(self, phase_id: int, part: str, organiser: bool) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, bytes]]:
        if part not in PARTS:
            raise NotFound(f"no board part {part!r}: public or private")
        key = (phase_id, part)
        # a public board checked less than FRESH_S ago is served without asking the database
        if (fresh := self._fresh_hit(key)) is not None:
            return fresh
        hit = self._cache.get(key)
        with self.db.session() as s:
            phase = s.get(Phase, phase_id)
            if phase is None or (phase.state == "draft" and not organiser):
                raise NotFound(f"no phase {phase_id}")
            if part == "private" and not (phase.revealed or organiser):
                raise Forbidden(f"the private board of phase {phase_id} is revealed by the organisers after the phase closes")
            n_scored, last, n_sel = s.execute(
                select(func.count(Submission.id), func.max(Submission.finished_at), func.count(Submission.id).filter(Submission.selected.is_(True)))
                .where(Submission.phase_id == phase_id, Submission.status == "scored")
            ).one()  # fmt: skip
            stamp = (n_scored, last, n_sel, phase.state, phase.revealed)
        self._checked[key] = time.monotonic()
        if hit is not None and hit[0] == stamp:
            return hit
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per board at a time; the others wait and take it from the cache
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit
            entry = (stamp, self._build(phase_id, part), {})
            self._cache[key] = entry
            return entry

    def _build(self, phase_id: int, part: str) -> dict[str, Any]:
        from lesionbench.leaderboard.build import build_document

        with self.db.session() as s:
            phase = s.get(Phase, phase_id)
            challenge = s.get(Challenge, phase.challenge_id)
            meta = self.task_meta(phase.task)
            chosen = _entries(s, phase, part)
            items = [_item(meta, sub, team, part, self.blobs) for sub, team in chosen]
            doc = build_document(items, reveal=False, n_boot=challenge.n_boot, n_perm=self.n_perm, seed=0, include_published=False)
            ids = {f"submission {sub.id}": (sub, team) for sub, team in chosen}
        doc["challenge"] = {"slug": challenge.slug, "title": challenge.title}
        doc["phase"] = {"id": phase.id, "name": phase.name, "kind": phase.kind, "state": phase.state, "revealed": phase.revealed, "part": part, "task": phase.task}
        for t in doc["tasks"]:
            for e in t["entries"] + t["unranked"]:
                sub, team = ids[e["provenance"]["location"]]
                e["team"], e["submission_id"] = team, sub.id
                e["n_lesions"] = sub.n_public if part == "public" else sub.n_private
        return doc


def board_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The board as flat rows (CSV and the client's table): rank, team, score with CI, rank interval, tier."""
    rows = []
    for t in doc["tasks"]:
        main = t["main_metric"]
        for e in t["entries"] + t["unranked"]:
            m = e["metrics"].get(main) or {}
            comp = e.get("comparison") or {}
            tied = bool(comp.get("is_reference")) or (bool(comp) and not comp.get("significant", False))
            ri = e.get("rank_interval") or [None, None]
            rows.append({
                "rank": e.get("rank"), "team": e.get("team"), "submission_id": e.get("submission_id"), "metric": main,
                "value": m.get("value"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
                "rank_low": ri[0], "rank_high": ri[1], "tied_with_top": tied if comp else None,
                "p_adjusted": comp.get("p_adjusted", comp.get("p_holm")), "p_holm": comp.get("p_holm"), "n_lesions": e.get("n_lesions"), "unranked_reason": e.get("unranked_reason"),
            })  # fmt: skip
    return rows


def board_csv(doc: dict[str, Any]) -> str:
    """:func:`board_rows` as CSV; cells that a spreadsheet would run as a formula are quoted with a leading '."""
    buf = io.StringIO()
    rows = board_rows(doc)
    fields = ["rank", "team", "submission_id", "metric", "value", "ci_low", "ci_high", "rank_low", "rank_high", "tied_with_top", "p_adjusted", "p_holm", "n_lesions", "unranked_reason"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in r.items()})
    return buf.getvalue()


def export_site(boards: Boards, out: Path) -> Path:
    """Write the server's public boards as a static site (what anonymous readers see: the public board of
    every opened phase, and the private board of revealed ones); returns ``out/index.html``."""
    from markupsafe import escape

    from lesionbench.benchmark.host import atomic_write

    out = Path(out)
    links = []
    with boards.db.session() as s:
        phases = s.execute(select(Phase, Challenge).join(Challenge, Challenge.id == Phase.challenge_id).where(Phase.state != "draft").order_by(Challenge.id, Phase.id)).all()
        todo = [(p.id, c.slug, c.title, p.name, p.revealed) for p, c in phases]
    for phase_id, slug, title, name, revealed in todo:
        for part in ("public", "private") if revealed else ("public",):
            folder = out / slug / f"{phase_id}-{part}"
            for fname, fmt in (("index.html", "html"), ("leaderboard.json", "json"), ("board.csv", "csv")):
                data = boards.rendered(phase_id, part, organiser=False, fmt=fmt)
                atomic_write(folder / fname, lambda tmp, data=data: tmp.write_bytes(data))
            links.append(f'<li><a href="{escape(slug)}/{phase_id}-{part}/index.html">{escape(title)} · {escape(name)} · {part}</a></li>')
    page = "<!doctype html><meta charset='utf-8'><title>lesionbench challenge boards</title><h1>Challenge boards</h1><ul>" + "".join(links) + "</ul>\n"
    return atomic_write(out / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
