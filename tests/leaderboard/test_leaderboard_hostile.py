"""Hostile strings everywhere a result or submission can carry one: the page and the Markdown show them as
text, the page runs no script and loads nothing (checked in headless Chromium too)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from _lb_fixtures import BINARY, _chromium, _page_requests, make_manifest, needs_chromium, write_result
from lesionbench.leaderboard import build_leaderboard
from lesionbench.leaderboard.render import md_cell, render_html, render_markdown

#: Each payload, if it ever ran, marks the DOM (data-pwned) or fetches from the network (evil.invalid).
PAYLOADS = [
    """<img src=x onerror="document.body.setAttribute('data-pwned','1')">""",
    """"><svg onload="document.body.setAttribute('data-pwned','2')">""",
    """<script>document.body.setAttribute('data-pwned','3')<""" + """/script>""",
    """<img src="http://evil.invalid/track.png">""",
    """' onmouseover='x' a='""",
    """| pipe | `tick` ![x](http://evil.invalid/md.png) [link](javascript:alert(1)) *em* _u_""",
]
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "h3", "div", "nav", "a", "section", "p",
    "b", "span", "table", "thead", "tbody", "tr", "th", "td", "svg", "line", "circle", "rect", "figure", "img", "figcaption",
    "details", "summary", "code", "footer", "pre", "article", "wbr",
}  # fmt: skip
#: The page's download links: the files written beside it, by fixed names (never a value from a result).
SIBLING_FILES = {"leaderboard.json", "leaderboard.md", "leaderboard.csv", "leaderboard.schema.json", "result.schema.json"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _assert_inert_html(html: str) -> None:
    p = _Tags()
    p.feed(html)
    for tag, attrs in p.tags:
        assert tag in ALLOWED_TAGS, f"unexpected <{tag}>"
        for k, v in attrs.items():
            assert not k.startswith("on"), f"<{tag} {k}=...>"
            if k in ("src", "href"):
                assert v and (v.startswith("data:image/png;base64,") or v.startswith("#") or (tag == "a" and v in SIBLING_FILES)), f"<{tag} {k}={v[:40]}>"
    assert "data-pwned" not in "".join(k for _, a in p.tags for k in a)


def _hostile_store(root: Path) -> Path:
    """Results whose task, version, encoder, probe, description and submission team are payloads (all valid results)."""
    results = root / "results"
    for i, bad in enumerate(PAYLOADS):
        meta = BINARY.__class__(**{**BINARY.__dict__, "name": f"task {bad}" if i == 0 else BINARY.name, "description": bad, "version": f"v{i % 2} {bad}"[:150]})
        man = make_manifest(meta)
        folder = write_result(meta, man, bad, 1.0 + i / 10, results, folder=results / f"m{i}")
        path = folder / "result.json"
        doc = json.loads(path.read_text())
        doc["probe"] = f"linear {bad}"
        doc["encoder"]["description"] = bad
        doc["lesionbench_version"] = bad
        path.write_text(json.dumps(doc))
        sub = write_result(meta, man, f"submission:{bad}"[:200], 1.0, results, folder=results / f"s{i}")
        doc = json.loads((sub / "result.json").read_text())
        doc["extra"] = {"submission": {"name": bad[:64], "kind": "predictions", "file_sha256": "0" * 64, "n_public": 60, "n_private": 60,
                                       "public": {"auc": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8}}, "private": {}}}  # fmt: skip
        (sub / "result.json").write_text(json.dumps(doc))
    return results


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    return build_leaderboard(root / "lb", results_dir=_hostile_store(root), n_boot=20, n_perm=20)


def test_hostile_names_are_text_on_the_page_and_in_markdown(hostile_page: Path) -> None:
    doc = json.loads((hostile_page.parent / "leaderboard.json").read_text())
    assert sum(len(t["entries"]) + len(t["unranked"]) for t in doc["tasks"]) == len(PAYLOADS)
    assert sum(len(t["submissions"]) for t in doc["tasks"]) == len(PAYLOADS)
    html = hostile_page.read_text()
    _assert_inert_html(html)
    assert "&lt;script&gt;document.body.setAttribute(&#39;data-pwned&#39;,&#39;3&#39;)&lt;/script&gt;" in html
    md = (hostile_page.parent / "leaderboard.md").read_text()
    assert "<img" not in md and "<script" not in md and "<svg" not in md and "](" not in md.replace("\\](", "")
    tables: list[list[str]] = [[]]
    for line in md.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    assert len([t for t in tables if t]) >= 3  # ranking, submissions and reference tables at least
    for table in filter(None, tables):
        # every cell boundary is a real one: each row has as many unescaped pipes as the table's header
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(counts) == 1, table


def test_stored_xss_through_a_seed_is_refused_and_would_be_escaped(tmp_path: Path) -> None:
    """13.1: ``seed`` was printed unescaped. The result is refused (seeds are integers) and, were it not, escaped."""
    folder = write_result(BINARY, make_manifest(BINARY), "fmcib", 1.0, tmp_path / "r")
    path = folder / "result.json"
    d = json.loads(path.read_text())
    for run in d["runs"]:
        run["seed"] = '0"><img src=x onerror=alert(1)>'
    path.write_text(json.dumps(d))
    index = build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "r", n_boot=10, n_perm=10)
    assert "onerror" not in index.read_text()
    write_result(BINARY, make_manifest(BINARY), "fmcib", 1.0, tmp_path / "ok")
    doc = json.loads((build_leaderboard(tmp_path / "lb2", results_dir=tmp_path / "ok", n_boot=10, n_perm=10).parent / "leaderboard.json").read_text())
    t = doc["tasks"][0]
    t["entries"][0]["seed"] = '0"><img src=x onerror=alert(1)>'
    t["metrics"] = t["metrics"] + ['<img src=x onerror=alert(2)>']
    t["entries"][0]["metrics"]['<img src=x onerror=alert(2)>'] = {"value": 0.5, "ci_low": None, "ci_high": None, "mean": 0.5, "sd": 0.0, "n_seeds": 1}
    html = render_html(doc)
    _assert_inert_html(html)
    assert 'seed 0&#34;&gt;&lt;img src=x onerror=alert(1)&gt;' in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<img src=x" not in render_markdown(doc)


def test_md_cell_is_the_one_markdown_escape() -> None:
    assert md_cell("a|b") == "a\\|b"
    assert md_cell("x\r\ny\nz") == "x y z"
    assert md_cell("<b>&`c`") == "&lt;b&gt;&amp;\\`c\\`"
    assert md_cell("[l](javascript:x) *e* _u_") == "\\[l\\](javascript&#58;x) \\*e\\* \\_u\\_"  # ':' too: no autolink (issue 20)


def test_page_declares_a_content_security_policy(hostile_page: Path) -> None:
    head = hostile_page.read_text().split("</head>")[0]
    assert """<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; img-src data:; style-src &#39;unsafe-inline&#39;">""" in head


@needs_chromium
def test_hostile_page_runs_no_script_and_loads_nothing_in_chromium(hostile_page: Path, tmp_path: Path) -> None:
    # The detectors work: the same payloads pasted raw into a page (no escaping, no CSP) run and fetch.
    control = tmp_path / "control.html"
    control.write_text("<html><body>" + "".join(PAYLOADS) + "</body></html>")
    dom = _chromium("--dump-dom", control.as_uri())
    assert 'data-pwned="' in dom.stdout
    assert "http://evil.invalid/track.png" in _page_requests(control.as_uri(), tmp_path)

    dom = _chromium("--dump-dom", hostile_page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-pwned="' not in dom.stdout and "<script" not in dom.stdout
    assert dom.stdout.count('<section class="task"') >= 2
    assert _page_requests(hostile_page.resolve().as_uri(), tmp_path) == set()

    # Strings the result checks refuse (a seed, a metric key), rendered anyway: still inert in the browser.
    doc = json.loads((hostile_page.parent / "leaderboard.json").read_text())
    t = next(t for t in doc["tasks"] if t["entries"])
    t["entries"][0]["seed"] = """0"><img src=x onerror="document.body.setAttribute('data-pwned','9')"><img src="http://evil.invalid/seed.png">"""
    t["metrics"] = t["metrics"] + [PAYLOADS[1]]
    forced = tmp_path / "forced.html"
    forced.write_text(render_html(doc), encoding="utf-8")
    dom = _chromium("--dump-dom", forced.as_uri())
    assert dom.returncode == 0 and "<section" in dom.stdout and 'data-pwned="' not in dom.stdout
    assert _page_requests(forced.as_uri(), tmp_path) == set()
