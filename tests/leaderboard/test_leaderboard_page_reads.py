"""The page reads top-down (issue 22): nav links to every section, downloads (JSON, Markdown, a CSV of every
row), a cite block per source, the published-reference-only tasks folded away."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from _lb_fixtures import BINARY, MULTI, make_manifest, write_result
from lesionbench.leaderboard import build_leaderboard
from lesionbench.leaderboard.render import CSV_COLUMNS


def test_downloads_cite_nav_and_folded_reference_tasks(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "fmcib", 2.0, tmp_path / "res", seed=0)
    write_result(BINARY, man, "radiomics", 0.5, tmp_path / "res" / "r", seed=0)
    write_result(MULTI, make_manifest(MULTI), "fmcib", 1.0, tmp_path / "res" / "m", seed=0)
    index = build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "res", n_boot=20, n_perm=20)
    html = index.read_text(encoding="utf-8")

    nav = re.search(r'<nav class="sections">(.*?)</nav>', html, re.S).group(1)
    for target in ("reference-only", "downloads", "cite"):
        assert f'href="#{target}"' in nav and f'id="{target}"' in html
    for name in ("leaderboard.json", "leaderboard.md", "leaderboard.csv"):
        assert f'href="{name}" download' in nav and (tmp_path / "lb" / name).is_file()
    # the published-only tasks (DeepLesion, LUNG1, ... without results here) are folded, below the measured sections
    folded = re.search(r'<details id="reference-only" class="folded">(.*?)</details>', html, re.S).group(1)
    assert 'id="ref-deeplesion_site"' in folded and html.index('id="reference-only"') > html.index('<section class="task" id="task-')
    # cite: lesionbench, then each source under its own heading
    cite = html[html.index('id="cite"'):]
    assert "@software{lesionbench" in cite and "<h3>Pai et al. 2024 (FMCIB)</h3>" in cite and "<h3>TumorImagingBench</h3>" in cite
    assert "doi     = {10.1038/s42256-024-00807-9}" in cite

    rows = list(csv.DictReader(io.StringIO((tmp_path / "lb" / "leaderboard.csv").read_text(encoding="utf-8"))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    ranked = [r for r in rows if r["row"] == "ranked" and r["task"] == BINARY.name and r["metric"] == BINARY.main_metric]
    assert sorted(r["name"] for r in ranked) == ["fmcib", "radiomics"] and {r["rank"] for r in ranked} == {"1", "2"}
    assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in ranked)
    assert any(r["row"] == "reference" and r["task"] == "deeplesion_site" for r in rows)  # the published rows too
    metrics = {r["metric"] for r in rows if r["task"] == MULTI.name and r["row"] == "ranked"}
    assert metrics >= set(MULTI.metrics) - {"map"} and len(metrics) >= 2


def test_the_ranking_tables_fit_a_1024_px_screen(tmp_path: Path) -> None:
    """No sideways scrolling at 1024 px (and 1280 px): Δ vs top and p stay visible."""
    import shutil

    import pytest

    from _lb_fixtures import CHROMIUM, SURV

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright) to measure the layout")
    if not CHROMIUM or not shutil.which(CHROMIUM):
        pytest.skip("no Chromium to measure the page in")
    for meta in (BINARY, MULTI, SURV):
        man = make_manifest(meta)
        for i, enc in enumerate(["fmcib", "ct-fm-random-init:tib", "radiomics"]):
            write_result(meta, man, enc, 2.0 - i * 0.5, tmp_path / "res" / meta.name / enc.replace(":", "_"), seed=0)
    index = build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "res", n_boot=20, n_perm=20)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which(CHROMIUM), args=["--no-sandbox"])
        try:
            for width in (1024, 1280):
                page = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True).new_page()
                page.goto(index.as_uri())
                widths = page.evaluate("() => [...document.querySelectorAll('table.rank')].map(t => [t.parentElement.scrollWidth, t.parentElement.clientWidth])")
                assert len(widths) >= 3 and all(scroll <= client for scroll, client in widths), (width, widths)
        finally:
            browser.close()
