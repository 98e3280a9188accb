"""The leaderboard shows each evaluation protocol as its own section: its heading, id and nav say the
protocol in words, published rows appear only in the section of their protocol, k-shot sections are
ranked and plotted against shots, fine-tuned sections show the network's own head."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from _lb_fixtures import BINARY, _chromium, _page_requests, make_manifest, needs_chromium, write_result
from lesionbench.leaderboard import build_leaderboard
from lesionbench.leaderboard import published as published_mod
from lesionbench.leaderboard.build import build_document
from lesionbench.leaderboard.collect import collect_results
from lesionbench.leaderboard.render import render_html, render_markdown
from lesionbench.leaderboard.validate import ResultFileError, check_result
from lesionbench.leaderboard.published import TIB_PROTOCOL

#: k of the fabricated k-shot runs, and their share of the 60 training lesions (2 classes).
SHOTS = {10: 20 / 60, 5: 10 / 60, 1: 2 / 60}
LABELS = {
    "linear": "linear probe",
    "knn": "k-NN probe",
    "k-shot-linear": "k-shot, linear probe (k labelled lesions per class)",
    "finetune-linear": "fine-tuned, linear probe",
}


def _rewrite(folder: Path, edit) -> None:
    path = folder / "result.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _k_shot(folder: Path, *, max_k: int = 10) -> None:
    def edit(doc: dict) -> None:
        by_fraction = {round(f, 9): k for k, f in SHOTS.items()}
        for run in doc["runs"]:
            run["shots"] = by_fraction[round(run["fraction"], 9)]
            run["n_train"] = 2 * run["shots"]
        doc["extra"].update(protocol="k-shot", shots=[k for k in SHOTS if k <= max_k], shots_per="class")

    _rewrite(folder, edit)


def _store(root: Path) -> Path:
    """Results of one task under four protocols: linear, k-NN, k-shot (linear) and fine-tuning (linear)."""
    man = make_manifest(BINARY, seed=3)
    task_dir = root / BINARY.name / BINARY.version
    for j, (enc, q) in enumerate({"fmcib": 1.5, "radiomics": 1.0}.items()):
        write_result(BINARY, man, enc, q, root, seed=j)
        knn = write_result(BINARY, man, enc, q * 0.9, root, seed=10 + j, folder=task_dir / enc / "knn")
        _rewrite(knn, lambda d: (d.update(probe="knn"), d["extra"].update(protocol="knn")))
        k_fracs = tuple(SHOTS.values()) if enc == "fmcib" else (SHOTS[5], SHOTS[1])
        ks = write_result(BINARY, man, enc, q * 0.8, root, seed=20 + j, fractions=k_fracs, folder=task_dir / enc / "k-shot-linear")
        _k_shot(ks, max_k=10 if enc == "fmcib" else 5)
    ft = write_result(BINARY, man, "fmcib", 1.7, root, seed=30, folder=task_dir / "fmcib" / "finetune-linear")

    def head(doc: dict) -> None:
        doc["extra"]["protocol"] = "finetune"
        for run in doc["runs"]:
            run["params"]["head_metrics"] = {"auc": {"value": 0.912, "ci_low": 0.85, "ci_high": 0.95}, "bogus": "<b>x</b>"}

    _rewrite(ft, head)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("protocols") / "results")


@pytest.fixture(scope="module")
def doc(store: Path) -> dict:
    return build_document(collect_results(results_dir=store), n_boot=20, n_perm=20)


def _sections(doc: dict) -> dict[str, dict]:
    return {t["protocol"]: t for t in doc["tasks"] if t["name"] == BINARY.name}


def test_every_protocol_is_a_section_with_its_label_and_own_id(doc: dict) -> None:
    secs = _sections(doc)
    assert set(secs) == set(LABELS)
    html = render_html(doc)
    ids = re.findall(r'<section class="task" id="(task-[^"]+)"', html)
    assert len(ids) == len(set(ids)), ids  # two sections of one task never share an id
    nav = re.search(r'<nav class="tasks">(.*?)</nav>', html, re.S).group(1)
    hrefs = re.findall(r'href="#([^"]+)"', nav)
    assert sorted(hrefs) == sorted(ids)
    for key, words in LABELS.items():
        assert f'id="task-luna16-malignancy-test-1-{key}"' in html
        assert re.search(rf'id="task-luna16-malignancy-test-1-{key}"><h2>luna16_malignancy <span class="protocol">· {re.escape(words)}</span>', html), key
        assert f">luna16_malignancy · {words}</a>" in nav
    md = render_markdown(doc)
    heads = re.findall(r"^### (.+)$", md, re.M)  # a task block (##) holds one section (###) per protocol
    assert len(heads) == len(set(heads))  # GitHub's heading anchors differ too
    for words in LABELS.values():
        assert f"luna16\\_malignancy — {words} (version test-1, binary)" in heads


def test_published_rows_only_in_the_linear_section(doc: dict) -> None:
    secs = _sections(doc)
    assert secs["linear"]["reference"] and all(r["protocol"] == "linear" for r in secs["linear"]["reference"])
    for key in ("knn", "k-shot-linear", "finetune-linear"):
        assert secs[key]["reference"] == [] and secs[key]["reference_elsewhere"] == ["linear", TIB_PROTOCOL]
    html = render_html(doc)
    assert html.count('<table class="ref">') == 1 + len(doc["reference_only"])
    knn = html.split('id="task-luna16-malignancy-test-1-knn"', 1)[1].split("</section>", 1)[0]
    assert "REF</span>" not in knn and '<a href="#task-luna16-malignancy-test-1-linear">the linear probe section</a>' in knn
    md = render_markdown(doc)
    knn_md = md.split("### luna16\\_malignancy — k-NN probe", 1)[1].split("\n### ", 1)[0]
    assert "[published]" not in knn_md and "shown only with the linear probe protocol" in knn_md


def test_reference_rows_follow_their_protocol_and_are_never_ranked(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = published_mod.PublishedResult(task=BINARY.name, approach="FMCIB features + k-NN, pooled re-splits", metrics={"auc": (0.871, 0.83, 0.91)}, protocol="knn")
    monkeypatch.setattr(published_mod, "PUBLISHED", published_mod.PUBLISHED + (row,))
    d = build_document(collect_results(results_dir=store), n_boot=20, n_perm=20)
    secs = _sections(d)
    assert [r["approach"] for r in secs["knn"]["reference"]] == [row.approach]
    assert row.approach not in {r["approach"] for r in secs["linear"]["reference"]}
    assert secs["linear"]["reference_elsewhere"] == ["knn", TIB_PROTOCOL] and secs["knn"]["reference_elsewhere"] == ["linear", TIB_PROTOCOL]
    assert all(e["encoder"] != row.approach for t in d["tasks"] for e in t["entries"] + t["unranked"])
    html = render_html(d)
    knn = html.split('id="task-luna16-malignancy-test-1-knn"', 1)[1].split("</section>", 1)[0]
    assert '<table class="rank">' in knn and "REF</span>" not in knn
    # the task's published reference, folded at the end of its block: one table per protocol, the k-NN row under k-NN
    refs = html.split('<section class="task refs" id="references-luna16-malignancy-test-1"><details class="refs">', 1)[1].split("</section>", 1)[0]
    linear, knn_refs = refs.split("<h3>With the linear probe — ", 1)[1].split("<h3>With the k-NN probe — ", 1)
    assert "FMCIB features + k-NN, pooled re-splits</td>" in knn_refs and "FMCIB features + k-NN" not in linear


def test_published_rows_without_their_section_are_listed_apart(store: Path) -> None:
    items = [it for it in collect_results(results_dir=store) if it.result.probe == "knn"]
    d = build_document(items, n_boot=20, n_perm=20)
    assert [t["protocol"] for t in d["tasks"]] == ["knn"] and d["tasks"][0]["reference"] == []
    apart = {r["name"]: r["reference"] for r in d["reference_only"]}
    assert apart[BINARY.name] and {r["protocol"] for r in apart[BINARY.name]} == {"linear", TIB_PROTOCOL}
    assert "the published-reference-only list below (linear probe)" in render_html(d)


def test_k_shot_section_ranks_at_the_largest_k_and_shows_shots(doc: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    sec = _sections(doc)["k-shot-linear"]
    assert sec["shots"] == 10 and sec["shots_per"] == "class" and sec["fraction"] == pytest.approx(SHOTS[10])
    assert [e["encoder"] for e in sec["entries"]] == ["fmcib"] and sec["entries"][0]["shots"] == 10
    (u,) = sec["unranked"]
    assert u["encoder"] == "radiomics" and u["shots"] == 5 and u["unranked_reason"] == "trained on at most 5 shots; the ranking is at 10 shots"
    assert [p["shots"] for p in sec["entries"][0]["curves"]["auc"]] == [1, 5, 10]
    # ranked on the seeds' mean, with an interval that holds the between-draw spread (issue 21)
    auc, point = sec["entries"][0]["metrics"]["auc"], sec["entries"][0]["curves"]["auc"][-1]
    assert auc["interval"] == "seed mean" and auc["value"] == pytest.approx(point["mean"])
    if auc["ci_low"] is not None:
        assert auc["ci_low"] < auc["value"] < auc["ci_high"]
    html = render_html(doc)
    part = html.split('id="task-luna16-malignancy-test-1-k-shot-linear"', 1)[1].split("</section>", 1)[0]
    assert "<h3>Ranking at k = 10 labelled lesions per class</h3>" in part
    assert "<td>10 shots per class</td>" in part and "<td>5 shots per class</td>" in part and "33%" not in part
    md = render_markdown(doc)
    assert "Ranking at k = 10 labelled lesions per class;" in md and "| 10 shots per class |" in md

    # the low-data curve is drawn against the shots
    from lesionbench.leaderboard import plots

    figs = []
    monkeypatch.setattr(plots, "_png", lambda fig: figs.append(fig) or "png")
    assert plots.curve_plot(sec) == "png"
    ax = figs[0].axes[0]
    assert ax.get_xlabel() == "labelled lesions per class (shots)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "10"]
    plots.curve_plot(_sections(doc)["linear"])
    assert [t.get_text() for t in figs[1].axes[0].get_xticklabels()] == ["10%", "20%", "50%", "100%"]  # with the published 10% point


def test_fine_tuned_section_shows_the_head_metrics(doc: dict) -> None:
    sec = _sections(doc)["finetune-linear"]
    (e,) = sec["entries"]
    assert e["head_metrics"] == {"auc": {"value": 0.912, "ci_low": 0.85, "ci_high": 0.95}}  # only the task's metrics, numbers only
    assert all(x["head_metrics"] is None for t in doc["tasks"] if t["protocol"] != "finetune-linear" for x in t["entries"])
    html = render_html(doc)
    part = html.split('id="task-luna16-malignancy-test-1-finetune-linear"', 1)[1].split("</section>", 1)[0]
    assert "Fine-tuned network's own head" in part and "0.912" in part and "<b>x</b>" not in html
    assert "0.912 (0.850–0.950)" in render_markdown(doc)


def test_document_matches_its_schema(doc: dict) -> None:
    import jsonschema

    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA

    jsonschema.validate(json.loads(json.dumps(doc, allow_nan=False)), LEADERBOARD_SCHEMA)


def test_result_validator_checks_shots(store: Path) -> None:
    from lesionbench.leaderboard.schema import RESULT_SCHEMA

    assert RESULT_SCHEMA["properties"]["runs"]["items"]["properties"]["shots"]["minimum"] == 1
    good = json.loads((store / BINARY.name / BINARY.version / "fmcib" / "k-shot-linear" / "result.json").read_text())
    check_result(good, "ok.json")
    for bad in (0, -1, "5", True, 2.5):
        doc = copy.deepcopy(good)
        doc["runs"][0]["shots"] = bad
        with pytest.raises(ResultFileError, match=r"runs\[0\]\.shots: expected an integer >= 1"):
            check_result(doc, "bad.json")


@needs_chromium
def test_protocol_sections_render_in_chromium(store: Path, tmp_path: Path) -> None:
    page = build_leaderboard(tmp_path / "site", results_dir=store, n_boot=20, n_perm=20)
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower() and not re.search(r'(src|href)="(https?:)?//', text)
    dom = _chromium("--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<script" not in html.lower()
    for key, words in LABELS.items():
        assert re.search(rf'<section class="task" id="task-luna16-malignancy-test-1-{key}"><h2>luna16_malignancy <span class="protocol">· {re.escape(words)}</span>', html), key
    assert html.count('<table class="rank">') == len(LABELS)
    assert html.count("data:image/png;base64,") == 2 * len(LABELS)
    assert _page_requests(page.resolve().as_uri(), tmp_path) == set()  # nothing loaded from the network


def test_untrusted_protocol_fields_stay_inert(tmp_path: Path) -> None:
    import jsonschema

    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA

    man = make_manifest(BINARY, seed=4)
    root = tmp_path / "results"
    ks = write_result(BINARY, man, "fmcib", 1.2, root, fractions=tuple(SHOTS.values()), folder=root / "a" / "k-shot-linear")
    _k_shot(ks)
    _rewrite(ks, lambda d: d["extra"].update(shots_per="<i>x</i>"))  # not a shot mode: counted per class
    odd = write_result(BINARY, man, "radiomics", 1.0, root, seed=1, folder=root / "b" / "odd")
    _rewrite(odd, lambda d: d["extra"].update(protocol='<img src="https://evil.example/x.png">'))
    # a k-shot result whose runs lost their k is placed by fraction instead of a k of 0
    nok = write_result(BINARY, man, "fmcib", 1.2, root, seed=2, fractions=(0.5, 0.2), folder=root / "c" / "k-shot-knn")
    _rewrite(nok, lambda d: (d.update(probe="knn"), d["extra"].update(protocol="k-shot")))
    d = build_document(collect_results(results_dir=root), n_boot=20, n_perm=20)
    jsonschema.validate(json.loads(json.dumps(d, allow_nan=False)), LEADERBOARD_SCHEMA)
    secs = _sections(d)
    assert secs["k-shot-linear"]["shots_per"] == "class" and secs["k-shot-linear"]["shots"] == 10
    assert secs["k-shot-knn"]["shots"] is None and secs["k-shot-knn"]["fraction"] == 0.5
    html, md = render_html(d), render_markdown(d)
    assert "<img src=\"https://evil" not in html and "&lt;img src=&#34;https://evil.example/x.png&#34;&gt;" in html
    assert "<img" not in md and "<i>x</i>" not in html + md


def test_sections_in_protocol_order_and_the_pointer_reads(doc: dict) -> None:
    assert [t["protocol"] for t in doc["tasks"]] == ["linear", "knn", "k-shot-linear", "finetune-linear"]
    assert 'shown only in <a href="#task-luna16-malignancy-test-1-linear">' in render_html(doc)
