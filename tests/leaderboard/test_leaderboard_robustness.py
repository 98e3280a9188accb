"""The leaderboard's robustness table and plot, from real ``robustness.json`` files of ``evaluate_robustness``.

Two tiny encoders are run through the robustness protocol on the tiny image cohort of
``tests/test_robustness.py``; the page must show one row per (encoder, perturbation) apart from the
ranking, a box plot, hostile names as text, and skip a malformed file with one warning.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest

from _lb_fixtures import BINARY, _chromium, _page_requests, make_manifest, needs_chromium, write_result
from lesionbench.leaderboard import build_leaderboard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tiny cohort and encoders of tests/test_robustness.py
from test_robustness import NoiseAmplifier, SmoothEncoder, tiny_cohort  # noqa: E402

HOSTILE = '<img src=x onerror="document.body.setAttribute(\'data-pwned\',1)"><img src="http://evil.invalid/r.png"> $\\frac{ | `x`'


@pytest.fixture(scope="module")
def robust_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with the robustness of two encoders on the tiny task, and a ranked result of another task."""
    from lesionbench.benchmark.robustness.perturb import PerturbationSettings
    from lesionbench.benchmark.robustness import evaluate_robustness

    root = tmp_path_factory.mktemp("robust")
    task = tiny_cohort(root / "img")
    for enc in (SmoothEncoder(), NoiseAmplifier()):
        evaluate_robustness(task, enc, perturbations=["shift", "noise"], settings=PerturbationSettings(repeats=1), out_dir=root / "results",
                            cache_dir=root / "cache", n_boot=30, progress=False)  # fmt: skip
    write_result(BINARY, make_manifest(BINARY), "fmcib", 1.5, root / "results")
    return root / "results"


def _saved(results: Path, encoder: str) -> dict:
    return json.loads((results / "tiny_malignancy" / "1" / encoder / "robustness.json").read_text())


def _copy_with(results: Path, dst: Path, edit) -> Path:
    """The results folder copied to ``dst`` plus a third robustness file: the smooth encoder's, edited."""
    shutil.copytree(results, dst)
    doc = copy.deepcopy(_saved(results, "smooth"))
    edit(doc)
    folder = dst / "tiny_malignancy" / "1" / "edited"
    folder.mkdir(parents=True)
    (folder / "robustness.json").write_text(json.dumps(doc))
    return folder / "robustness.json"


def _robustness_part(html: str) -> str:
    """The robustness section of the tiny task's block (the only task with robustness here)."""
    start = html.index('<section class="task robust" id="robustness-')
    return html[start:html.index("</section>", start)]


def test_table_and_plot_for_two_encoders(robust_results: Path, tmp_path: Path) -> None:
    index = build_leaderboard(tmp_path / "site", results_dir=robust_results, n_boot=20, n_perm=20)
    html = index.read_text(encoding="utf-8")
    part = _robustness_part(html)
    smooth, noisy = _saved(robust_results, "smooth"), _saved(robust_results, "noisy")
    rows = re.findall(r'<tr><td class="l enc">([^<]+)</td><td class="l">([^<]+)</td>', part)
    assert rows == [("noisy", "shift"), ("noisy", "noise"), ("smooth", "shift"), ("smooth", "noise")]
    for d in (smooth, noisy):
        b = d["perturbations"]["noise"]
        assert f"{b['icc']['median']:.3f}" in part and f"{b['cosine']['value']:.3f}" in part
        assert f"{b['icc_consistency']['median']:.3f}" in part  # ICC(3,1) beside the headline ICC(2,1)
        assert f"{100 * b['prediction_change']['value']:.1f}%" in part
    assert f"{smooth['reference']['value']:.3f} on the unperturbed crops" in part
    assert "6 test lesions of 6 patients" in part and "30 resamples of patients" in part
    figures = re.findall(r'<img alt="per-feature ICC\(2,1\)[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', part)
    assert len(figures) == 1
    # never mixed with the ranking: the ranked task holds only its own entry, and no robustness row is ranked
    doc = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert [t["name"] for t in doc["tasks"]] == [BINARY.name] and [e["encoder"] for e in doc["tasks"][0]["entries"]] == ["fmcib"]
    assert [(s["name"], len(s["rows"])) for s in doc["robustness"]] == [("tiny_malignancy", 4)]
    # the same numbers as the protocol's own summary table (NaN there, null here)
    from lesionbench.benchmark.robustness import summary_table

    table = summary_table([smooth, noisy]).set_index(["encoder", "perturbation"])
    for r in doc["robustness"][0]["rows"]:
        t = table.loc[(r["encoder"], r["perturbation"])]
        got = [r["icc_median"], r["icc_q25"], r["icc_q75"], r["icc_share_good"], r["cosine"]["value"], r["prediction_change"]["value"], r["metric_drop"]["value"]]
        want = [t[k] for k in ("icc_median", "icc_q25", "icc_q75", "icc_share_good", "cosine", "prediction_change", "metric_drop")]
        assert got == pytest.approx(want) and r["icc_undefined"] == t["icc_undefined"]
    # in its task's block (after the ranked task's block, in name order), never in a ranking
    tiny = html.index('<article class="taskgroup" id="group-tiny-malignancy-1">')
    assert html.index('class="rank"') < tiny < html.index('id="robustness-') < html.index("</article>", tiny)
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "### tiny\\_malignancy (version 1, binary): robustness" in md and "| smooth | noise |" in md and "1 draw(s) per perturbation, shift 1.0–5.0 mm" in md
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(json.loads((tmp_path / "site" / "leaderboard.schema.json").read_text())).validate(doc)


def test_hostile_names_are_text(robust_results: Path, tmp_path: Path) -> None:
    from test_leaderboard_hostile import _assert_inert_html

    def edit(d: dict) -> None:
        d["encoder"]["name"] = HOSTILE
        d["notes"] = ["an error message\nover two lines </p><script>document.body.setAttribute('data-pwned',2)</script>"]  # free text: shown
        d["perturbations"]["$\\frac{"] = d["perturbations"].pop("noise")  # mathtext in the plot's tick labels

    _copy_with(robust_results, tmp_path / "results", edit)
    index = build_leaderboard(tmp_path / "site", results_dir=tmp_path / "results", n_boot=20, n_perm=20)
    html = index.read_text(encoding="utf-8")
    _assert_inert_html(html)
    part = _robustness_part(html)
    assert "&lt;img src=x onerror=&#34;document.body" in part and "&lt;/p&gt;&lt;script&gt;" in part and "$\\frac{" in part
    assert len(re.findall(r'<tr><td class="l enc">', part)) == 6
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "&lt;img src=x onerror=" in md and "\\| \\`x\\`" in md and "<script>" not in md
    assert "Note: an error message over two lines &lt;/p&gt;&lt;script&gt;" in md


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["perturbations"]["noise"]["icc"].update(median=7.0), "perturbations.noise.icc.median"),
        (lambda d: d["perturbations"]["shift"]["prediction_change"].update(value="12%"), "perturbations.shift.prediction_change.value"),
        (lambda d: d["perturbations"]["shift"]["cosine"].update(ci_low=0.9, ci_high=0.1), "perturbations.shift.cosine"),
        (lambda d: d["encoder"].update(name=["x"]), "encoder.name"),
        (lambda d: d["perturbations"]["noise"].update(per_feature_icc=[0.5]), "perturbations.noise.per_feature_icc"),
        (lambda d: d.update(bootstrap_unit="voxel"), "bootstrap_unit"),
        (lambda d: d.update(protocol="linear"), "protocol"),
    ],
)
def test_malformed_file_is_skipped_with_one_warning(robust_results: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, edit, field: str) -> None:
    bad = _copy_with(robust_results, tmp_path / "results", edit)
    with caplog.at_level(logging.WARNING, logger="lesionbench"):
        index = build_leaderboard(tmp_path / "site", results_dir=tmp_path / "results", n_boot=20, n_perm=20)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "robustness" in r.getMessage()]
    assert len(warnings) == 1 and str(bad) in warnings[0] and f": {field}:" in warnings[0], warnings
    assert len(re.findall(r'<tr><td class="l enc">', _robustness_part(index.read_text(encoding="utf-8")))) == 4  # the two good files


def test_not_json_is_skipped_with_one_warning(robust_results: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = _copy_with(robust_results, tmp_path / "results", lambda d: None)
    bad.write_bytes(b"\xff{not json")
    with caplog.at_level(logging.WARNING, logger="lesionbench"):
        build_leaderboard(tmp_path / "site", results_dir=tmp_path / "results", n_boot=20, n_perm=20)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and str(bad) in r.getMessage()]
    assert len(warnings) == 1 and ": file: not UTF-8 JSON" in warnings[0]


def test_robustness_runs_are_read_from_mlflow(robust_results: Path, tmp_path: Path, fresh_tracking_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from lesionbench.benchmark.robustness import RobustnessResult, log_robustness

    MlflowClient(tracking_uri=fresh_tracking_uri).create_experiment("lesionbench", artifact_location=(tmp_path / "artifacts").as_uri())
    for enc in ("smooth", "noisy"):
        d = _saved(robust_results, enc)
        res = RobustnessResult(**{k: (tuple(v) if k == "notes" else v) for k, v in d.items() if k not in ("schema_version", "protocol")})
        assert log_robustness(res, robust_results / "tiny_malignancy" / "1" / enc / "robustness.json", tracking_uri=fresh_tracking_uri)
    index = build_leaderboard(tmp_path / "site", tracking_uri=fresh_tracking_uri, n_boot=20, n_perm=20)
    part = _robustness_part(index.read_text(encoding="utf-8"))
    assert len(re.findall(r'<tr><td class="l enc">', part)) == 4 and part.count("(MLflow run)") == 2


@needs_chromium
def test_page_with_robustness_runs_no_script_and_loads_nothing(robust_results: Path, tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["encoder"]["name"] = HOSTILE

    # the detectors work: the name pasted raw into a page runs its script and fetches
    control = tmp_path / "control.html"
    control.write_text(f"<html><body>{HOSTILE}</body></html>")
    assert 'data-pwned="' in _chromium("--dump-dom", control.as_uri()).stdout
    assert "http://evil.invalid/r.png" in _page_requests(control.as_uri(), tmp_path)

    _copy_with(robust_results, tmp_path / "results", edit)
    index = build_leaderboard(tmp_path / "site", results_dir=tmp_path / "results", n_boot=20, n_perm=20)
    assert _page_requests(index.resolve().as_uri(), tmp_path) == set()
    dom = _chromium("--dump-dom", index.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-pwned="' not in dom.stdout and "<script" not in dom.stdout and "Robustness of features and predictions" in dom.stdout
    assert 'alt="per-feature ICC(2,1) per perturbation and encoder"' in dom.stdout
