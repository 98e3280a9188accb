"""The page reads top-down (issue 22): one block per task (its ranking, robustness, submissions, then its
published reference, folded), nav links to every part, downloads (JSON, Markdown, a CSV of every row), a cite
block per source, the published-reference-only tasks folded into an appendix, and ranking tables that fit a
1024 px screen."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import shutil
import sys
from pathlib import Path

import pytest

from _lb_fixtures import BINARY, CHROMIUM, MULTI, make_manifest, write_result
from _submit_fixtures import FakeTask, predictions, write_csv
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


def _ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_each_task_is_one_block_ranking_robustness_submissions_then_folded_reference(tmp_path: Path) -> None:
    """The ranked task's ranking, robustness, submission board and published reference sit in one block, in that
    order, the reference folded; nothing says 'No ranked results'; every link of the navs lands on the page."""
    from lesionbench.benchmark.robustness import evaluate_robustness
    from lesionbench.benchmark.robustness.perturb import PerturbationSettings
    from lesionbench.leaderboard import submit

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tiny cohort and encoder of tests/test_robustness.py
    from test_robustness import SmoothEncoder, tiny_cohort

    res = tmp_path / "res"
    man = make_manifest(BINARY)
    for i, enc in enumerate(["fmcib", "radiomics"]):
        write_result(BINARY, man, enc, 2.0 - i, res, seed=i)
        write_result(MULTI, make_manifest(MULTI), enc, 1.5 - i * 0.5, res, seed=i)
    task = FakeTask(BINARY)
    for name, q in (("team strong", 2.0), ("team weak", 0.4)):
        submit(task, write_csv(predictions(task, q), tmp_path / f"{name}.csv"), name=name, results_dir=res, n_boot=20)
    tiny = tiny_cohort(tmp_path / "img")  # its images, under the ranked task's name and version
    tiny = dataclasses.replace(tiny, meta=dataclasses.replace(tiny.meta, name=BINARY.name, version=BINARY.version))
    evaluate_robustness(tiny, SmoothEncoder(), perturbations=["noise"], settings=PerturbationSettings(repeats=1), out_dir=res,
                        cache_dir=tmp_path / "cache", n_boot=20, progress=False)  # fmt: skip
    html = build_leaderboard(tmp_path / "lb", results_dir=res, n_boot=20, n_perm=20).read_text(encoding="utf-8")

    start = html.index('<article class="taskgroup" id="group-luna16-malignancy-test-1">')
    block = html[start:html.index("</article>", start)]
    parts = ['<section class="task" id="task-luna16-malignancy-test-1-linear">', '<section class="task robust" id="robustness-task-luna16-malignancy-test-1-linear">',
             '<section class="task subs" id="submissions-luna16-malignancy-test-1">', '<section class="task refs" id="references-luna16-malignancy-test-1"><details class="refs">']  # fmt: skip
    at = [block.find(p) for p in parts]
    assert all(i >= 0 for i in at) and at == sorted(at), at
    assert block.count('<table class="rank">') == 1 and block.count('<table class="subs">') == 1 and "team strong" in block and "team weak" in block
    refs = block[at[3]:]
    assert '<table class="ref">' in refs and "<details class=\"refs\" open" not in html
    # every published table is folded: in the task's block or the appendix, never open on the page
    assert '<table class="ref">' not in re.sub(r"<details\b.*?</details>", "", html, flags=re.S)
    assert "No ranked results" not in html and "No ranked" not in html
    # the navs: each task part, the ranking across tasks, the appendix, downloads and cite; every link lands
    nav = re.search(r'<nav class="tasks">(.*?)</nav>', html, re.S).group(1) + re.search(r'<nav class="sections">(.*?)</nav>', html, re.S).group(1)
    targets = set(re.findall(r'href="#([^"]+)"', nav))
    assert {"task-luna16-malignancy-test-1-linear", "robustness-task-luna16-malignancy-test-1-linear", "submissions-luna16-malignancy-test-1",
            "task-synthetic-site-test-1-linear", "aggregate", "reference-only", "downloads", "cite"} <= targets  # fmt: skip
    assert targets <= _ids(html)
    in_block = set(re.findall(r'href="#([^"]+)"', re.search(r'<nav class="parts">(.*?)</nav>', block, re.S).group(1)))
    assert in_block == {"task-luna16-malignancy-test-1-linear", "robustness-task-luna16-malignancy-test-1-linear", "submissions-luna16-malignancy-test-1",
                        "references-luna16-malignancy-test-1"}  # fmt: skip
    # leaderboard.md reads the same way: the task's heading, then its ranking, robustness, submissions and reference
    md = (tmp_path / "lb" / "leaderboard.md").read_text(encoding="utf-8")
    start = md.index("## luna16\\_malignancy (version test-1, binary)")  # Markdown escapes the underscore
    block = md[start:md.index("\n## ", start + 1)]
    at = [block.find(p) for p in ("— linear probe (version test-1", "): robustness", "): submissions", "**Published reference**")]
    assert all(i >= 0 for i in at) and at == sorted(at), at
    assert "team strong" in block and md.count("): robustness") == 1


#: A binary task with every binary metric (the widest ranking table) and names as long as the zoo's.
WIDE = dataclasses.replace(BINARY, name="synthetic_abdominal_malignancy", metrics=("auc", "average_precision", "balanced_accuracy", "map"))
LONG_NAMES = ("fmcib", "medicalnet-resnet50-random-init:official", "ct-fm-segresnet-random-init:tib", "voco-h-swin-unetr-large-pretrained:official",
              "averyveryverylongencodernamewithoutanyhyphenatallfromsomebodyslab")  # fmt: skip


def test_the_ranking_tables_fit_a_1024_px_screen(tmp_path: Path) -> None:
    """No sideways scrolling at 1024 px (and 1440 px) with long encoder names and many columns: the document does
    not scroll, no ranking table overflows its box, and the last columns (Δ vs top, p) are on screen."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright) to measure the layout")
    if not CHROMIUM or not shutil.which(CHROMIUM):
        pytest.skip("no Chromium to measure the page in")
    for meta in (WIDE, MULTI):
        man = make_manifest(meta)
        for i, enc in enumerate(LONG_NAMES):
            write_result(meta, man, enc, 2.0 - i * 0.3, tmp_path / "res" / meta.name / enc.replace(":", "_"), seed=0)
    index = build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "res", n_boot=20, n_perm=20)
    measure = """() => ({
        page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
        tables: [...document.querySelectorAll('table.rank')].map(t => [t.parentElement.scrollWidth, t.parentElement.clientWidth]),
        last: [...document.querySelectorAll('section.task > .scroll > table[class="rank"]')].map(t => {
            const box = t.parentElement.getBoundingClientRect(), th = [...t.querySelectorAll('thead th')];
            return [th.at(-2).textContent, th.at(-1).textContent, th.at(-1).getBoundingClientRect().right, box.right];
        }),
    })"""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which(CHROMIUM), args=["--no-sandbox"])
        try:
            for width in (1024, 1440):
                page = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True).new_page()
                page.goto(index.as_uri())
                got = page.evaluate(measure)
                assert got["page"][0] <= got["page"][1], (width, got["page"])
                assert len(got["tables"]) >= 4 and all(scroll <= client for scroll, client in got["tables"]), (width, got["tables"])
                assert len(got["last"]) == 2
                for delta, pval, right, box in got["last"]:
                    assert delta.startswith("Δ vs top") and pval in ("p (max-T)", "p (Holm)") and right <= box + 0.5 <= width, (width, got["last"])
        finally:
            browser.close()
