"""Issue 20 (Integrity II), item 23 (minor): no bare URL of a submitted value becomes a link in the Markdown,
no local folder is published in leaderboard.json, and a clock set back a day grants no fresh quota."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lesionbench.leaderboard.submissions.challenge import Limits
from lesionbench.leaderboard.submissions.organiser import SubmissionRecord, quota_problem
from lesionbench.leaderboard.render import md_cell
from lesionbench.leaderboard.sections import _public_path


def test_bare_urls_and_addresses_are_not_autolinked_in_markdown():
    cell = md_cell("see http://evil.example/x, WWW.evil.example or mail bob@evil.example")
    # GitHub autolinks on "://", "www." and "@": none is left in the raw Markdown, all render as the same text
    assert "://" not in cell and "www." not in cell.lower() and "@" not in cell
    assert "http&#58;//evil.example/x" in cell and "WWW&#46;evil.example" in cell and "bob&#64;evil.example" in cell
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders the cell (it comes with rich)")
    html = markdown_it.MarkdownIt("commonmark").render(cell)
    assert "<a " not in html and "http://evil.example/x" in html and "bob@evil.example" in html


def test_a_local_result_is_published_without_the_machines_folders():
    loc = _public_path("/home/alice/projects/lesionbench-results/lidc/1.0/fmcib/linear/result.json")
    assert loc == "lidc/1.0/fmcib/linear/result.json" and "alice" not in loc and not loc.startswith("/")


def _record(day: datetime, k: int) -> SubmissionRecord:
    return SubmissionRecord(id=f"s{k}", team="t", task="task", version="1", kind="binary", submitted=day.isoformat(), main_metric="auc",
                            public={}, private={}, n_public=1, n_private=1, folder=Path(f"s{k}"))  # fmt: skip


def test_a_clock_set_back_a_day_grants_no_fresh_quota():
    now = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
    limits = Limits(per_day=2, total=100)
    used_tomorrow = [_record(now + timedelta(days=1), k) for k in range(2)]  # made before the clock went back
    assert quota_problem(used_tomorrow, limits, team="t", task="task", now=now) is not None
    assert quota_problem([_record(now - timedelta(days=1), k) for k in range(2)], limits, team="t", task="task", now=now) is None
