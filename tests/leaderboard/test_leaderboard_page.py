"""The leaderboard page rendered in headless Chromium: it loads, has its tables and plots, is self-contained.

Needs the Debian ``chromium`` package (``apt-get install -y chromium``); skipped with that reason
otherwise. The screenshot is written under the test's tmp folder, and also copied to
``$LESIONBENCH_TEST_ARTIFACTS`` when that is set (for CI to upload).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from _lb_fixtures import Store, _chromium, _page_requests, needs_chromium
from lesionbench.leaderboard import build_leaderboard


@pytest.fixture(scope="module")
def page(lb_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_leaderboard(tmp_path_factory.mktemp("lb-page"), tracking_uri=lb_store.tracking_uri, n_boot=100, n_perm=100)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@needs_chromium
def test_page_makes_no_network_requests(page: Path, tmp_path: Path) -> None:
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    assert _page_requests(control.as_uri(), tmp_path) == {"http://example.invalid/x.png"}  # the detector works
    assert _page_requests(page.resolve().as_uri(), tmp_path) == set()


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    for tag, attrs in parser.tags:
        for key in ("src", "href", "srcset", "data", "action", "poster"):
            v = (attrs.get(key) or "").strip().lower()
            assert not re.match(r"(https?:|//|ftp:|file:)", v), f"<{tag} {key}={v[:60]}> loads from outside the page"
        assert tag not in ("script", "link", "iframe", "object", "embed"), f"unexpected <{tag}>"
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?(https?:|//)", text)
    imgs = [a["src"] for t, a in parser.tags if t == "img"]
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    for src in imgs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_escapes_untrusted_strings(lb_store: Store, tmp_path: Path) -> None:
    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import collect_results
    from lesionbench.leaderboard.render import render_html, render_markdown

    doc = build_document(collect_results(results_dir=lb_store.results), n_boot=20, n_perm=20)
    doc["tasks"][0]["entries"][0]["encoder"] = doc["tasks"][0]["entries"][0]["label"] = '<img src="https://evil.example/x.png" onerror="alert(1)">'
    html = render_html(doc)
    assert "<img src=\"https://evil" not in html and "&lt;img src=&#34;https://evil" in html
    doc["tasks"][0]["entries"][0]["encoder"] = doc["tasks"][0]["entries"][0]["label"] = "a|b"
    assert "a\\|b" in render_markdown(doc)


@needs_chromium
def test_page_renders_in_chromium(page: Path, tmp_path: Path) -> None:
    dom = _chromium("--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    doc = json.loads((page.parent / "leaderboard.json").read_text())
    n_tasks = len(doc["tasks"])
    assert html.count('<section class="task"') == n_tasks + len(doc["reference_only"])
    assert html.count('<table class="rank">') == n_tasks
    assert html.count("data:image/png;base64,") == 2 * n_tasks  # forest plot + low-data curves per task
    assert html.count('<table class="ref">') == 1 + len(doc["reference_only"])
    assert "Pai et al. 2024" in html and "REF" in html and "Provenance of" in html
    for t in doc["tasks"]:
        for e in t["entries"]:
            assert f'<span class="enc">{e["label"]}</span>' in html

    shot = tmp_path / "leaderboard.png"
    res = _chromium("--window-size=1280,2200", f"--screenshot={shot}", page.resolve().as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 2200)
    assert len(png) > 50_000  # a blank page compresses to a few KB
    artifacts = os.environ.get("LESIONBENCH_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "leaderboard.png")
