"""The leaderboard document built from a tiny real MLflow store and from local result files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from _lb_fixtures import BINARY, MULTI, SURV, Store, make_manifest, write_result
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.types import TaskKind
from lesionbench.leaderboard import _stats, build_leaderboard
from lesionbench.leaderboard.collect import collect_results
from lesionbench.leaderboard.published import TIB_PROTOCOL


@pytest.fixture(scope="module")
def built(lb_store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lb-out")
    index = build_leaderboard(out, tracking_uri=lb_store.tracking_uri, n_boot=200, n_perm=200)
    return index, json.loads((out / "leaderboard.json").read_text())


def _task(doc: dict, name: str) -> dict:
    return next(t for t in doc["tasks"] if t["name"] == name)


def test_outputs_written_and_schema_valid(built: tuple[Path, dict]) -> None:
    index, doc = built
    out = index.parent
    for f in ("index.html", "leaderboard.md", "leaderboard.json", "leaderboard.schema.json", "result.schema.json"):
        assert (out / f).stat().st_size > 0, f
    schema = json.loads((out / "leaderboard.schema.json").read_text())
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra; install it to validate the schema")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    broken = json.loads(json.dumps(doc))
    broken["tasks"][0]["entries"][0]["rank"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_every_task_and_entry_is_read_from_mlflow(built: tuple[Path, dict], lb_store: Store) -> None:
    _, doc = built
    assert {t["name"] for t in doc["tasks"]} == {BINARY.name, MULTI.name, SURV.name}
    for t in doc["tasks"]:
        assert {e["encoder"] for e in t["entries"]} == set(lb_store.qualities[t["name"]])
        for e in t["entries"]:
            assert e["provenance"]["source"] == "mlflow"
            assert e["provenance"]["location"].endswith(lb_store.run_ids[(t["name"], e["encoder"])])


def test_ranking_follows_the_main_metric_and_the_known_quality(built: tuple[Path, dict], lb_store: Store) -> None:
    _, doc = built
    for t in doc["tasks"]:
        values = [e["metrics"][t["main_metric"]]["value"] for e in t["entries"]]
        assert values == sorted(values, reverse=True)
        assert [e["rank"] for e in t["entries"]] == list(range(1, len(values) + 1))
        best = max(lb_store.qualities[t["name"]], key=lb_store.qualities[t["name"]].get)
        assert t["entries"][0]["encoder"] == best


def test_headline_numbers_match_sklearn_on_the_saved_predictions(built: tuple[Path, dict], lb_store: Store) -> None:
    _, doc = built
    t = _task(doc, BINARY.name)
    for e in t["entries"]:
        preds = pd.read_csv(lb_store.results / BINARY.name / BINARY.version / e["encoder"] / "linear" / "predictions" / "f1_s0.csv")
        assert e["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(preds["label"], preds["score"]), abs=1e-12)
        assert e["metrics"]["average_precision"]["value"] == pytest.approx(average_precision_score(preds["label"], preds["score"]), abs=1e-12)
        lo, hi = e["metrics"]["auc"]["ci_low"], e["metrics"]["auc"]["ci_high"]
        assert lo <= e["metrics"]["auc"]["value"] <= hi
        curve = e["curves"]["auc"]
        assert [p["fraction"] for p in curve] == [0.2, 0.5, 1.0]
        assert all(p["n_seeds"] == 3 and p["min"] <= p["mean"] <= p["max"] for p in curve)


def test_rank_intervals_and_corrected_tests(built: tuple[Path, dict]) -> None:
    _, doc = built
    for t in doc["tasks"]:
        entries = t["entries"]
        # Every entry has predictions (radiomics' only on its child runs), so every entry gets statistics.
        assert all(e["rank_interval"] is not None for e in entries), t["name"]
        for e in entries:
            lo, hi = e["rank_interval"]
            assert 1 <= lo <= hi <= len(entries)
        assert entries[0]["comparison"]["is_reference"] is True
        comps = [e["comparison"] for e in entries[1:]]
        for c in comps:
            assert c["versus"] == entries[0]["encoder"]
            assert c["p_holm"] >= c["p_value"] - 1e-12
            # the section's correction (max-T from three entries, Holm below) decides; Holm is reported beside it
            assert t["statistics"]["correction"] == ("maxt" if len(entries) >= 3 else "holm")
            assert c["p_adjusted"] == (c["p_maxt"] if len(entries) >= 3 else c["p_holm"])
            assert c["significant"] == (c["p_adjusted"] < 0.05)
            assert c["ci_low"] <= c["difference"] <= c["ci_high"]
    weakest = _task(doc, BINARY.name)["entries"][-1]
    assert weakest["encoder"] == "supervised-cnn"
    assert weakest["comparison"]["significant"] and weakest["comparison"]["difference"] < 0
    assert weakest["rank_interval"] == [3, 3]
    # the section's footnote names the method, and the table's p column says which it is
    assert "p adjusted by step-down max-T over all 3 pairs of the 3 entries" in _task(doc, BINARY.name)["statistics"]["note"]
    html = built[0].read_text()
    assert "<th>p (max-T)</th>" in html and "step-down max-T over all 3 pairs" in html


def test_published_rows_are_reference_only_and_mapped_to_real_tasks(built: tuple[Path, dict]) -> None:
    _, doc = built
    luna = _task(doc, BINARY.name)
    assert luna["reference"], "luna16_malignancy must carry the published FMCIB rows"
    fm = next(r for r in luna["reference"] if r["approach"] == "FMCIB features + linear probe" and r["fraction"] == 1.0)
    assert fm["metrics"]["auc"] == {"value": 0.883, "ci_low": 0.825, "ci_high": 0.933}
    assert fm["source"] == "Pai et al. 2024"
    assert all("[published]" not in e["encoder"] and "FMCIB" not in e["encoder"] for e in luna["entries"])
    assert _task(doc, MULTI.name)["reference"] == [] and _task(doc, SURV.name)["reference"] == []
    apart = {r["name"]: r["reference"] for r in doc["reference_only"]}
    assert set(apart) == {"deeplesion_site", "lung1_survival", "radio_survival", BINARY.name}
    # the measured task's only rows listed apart are TumorImagingBench's: another protocol, never in a ranked section
    assert apart[BINARY.name] and all(r["protocol"] == TIB_PROTOCOL for r in apart[BINARY.name])
    lung1 = next(r for r in doc["reference_only"] if r["name"] == "lung1_survival")["reference"]
    assert any(r["metrics"].get("auc_2y", {}).get("value") == 0.638 for r in lung1)


def test_provenance_is_carried(built: tuple[Path, dict]) -> None:
    _, doc = built
    fm = _task(doc, BINARY.name)["entries"][0]["provenance"]
    assert fm["weights_sha256"] == "ab" * 32
    assert fm["task_version"] == "test-1" and fm["encoder_version"] == "1.0" and fm["lesionbench_version"] == "0.1.0"
    assert fm["split_hash"] == "abc123def4567890" and fm["split_variant"] == "lesionbench"
    assert fm["created"].startswith("2026-11-27")


def test_markdown_has_ranked_and_reference_tables(built: tuple[Path, dict]) -> None:
    index, doc = built
    md = (index.parent / "leaderboard.md").read_text()
    assert "## luna16\\_malignancy — linear probe (version test-1, binary)" in md  # Markdown-escaped: names are text; the protocol in words
    assert "| Rank | Encoder | Probe | Labels | AUC (95% CI) | SD over seeds |" in md
    assert "*FMCIB features + linear probe* [published] | 100% | 0.883 (0.825–0.933)" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| 1 | fmcib |")]
    assert len(rows) == 3


def test_local_results_merge_with_mlflow_without_duplicates(lb_store: Store, tmp_path: Path) -> None:
    both = collect_results(tracking_uri=lb_store.tracking_uri, results_dir=lb_store.results)
    assert len(both) == 7
    assert {i.source for i in both} == {"local"}  # same results: the local copy is preferred
    local = collect_results(results_dir=lb_store.results)
    assert sorted(i.key for i in local) == sorted(i.key for i in both)


def test_task_versions_are_never_mixed_and_newest_run_wins(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "fmcib", 1.0, tmp_path / "a", seed=0)
    write_result(BINARY, man, "fmcib", 0.2, tmp_path / "a" / "rerun", seed=1)  # newer 'created'
    v2 = BINARY.__class__(**{**BINARY.__dict__, "version": "test-2"})
    write_result(v2, man, "fmcib", 1.0, tmp_path / "a" / "v2", seed=0)
    items = collect_results(results_dir=tmp_path / "a")
    assert sorted(i.key[1] for i in items) == ["test-1", "test-2"]
    newest = next(i for i in items if i.key[1] == "test-1")
    assert newest.result.created.endswith("01+00:00")


def test_the_nav_names_the_version_where_a_task_has_several(tmp_path: Path) -> None:
    import re

    man = make_manifest(BINARY)
    write_result(BINARY, man, "fmcib", 1.0, tmp_path / "a", seed=0)
    write_result(BINARY.__class__(**{**BINARY.__dict__, "version": "test-2"}), man, "fmcib", 1.0, tmp_path / "a" / "v2", seed=0)
    write_result(MULTI, make_manifest(MULTI), "fmcib", 1.0, tmp_path / "a" / "m", seed=0)
    build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "a", n_boot=20, n_perm=20, include_published=False)
    nav = re.search(r'<nav class="tasks">(.*?)</nav>', (tmp_path / "lb" / "index.html").read_text(), re.S).group(1)
    labels = re.findall(r">([^<]*)</a>", nav)
    assert sum(f"{BINARY.name} (test-1) ·" in x for x in labels) == 1 and sum(f"{BINARY.name} (test-2) ·" in x for x in labels) == 1
    assert any(x.startswith(f"{MULTI.name} ·") for x in labels)  # one version: no version in its label


def test_broken_result_file_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_result(BINARY, make_manifest(BINARY), "fmcib", 1.0, tmp_path)
    bad = tmp_path / "x" / "y" / "z"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        items = collect_results(results_dir=tmp_path)
    assert len(items) == 1
    assert "Skipping" in caplog.text and str(bad / "result.json") in caplog.text


def test_no_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--tracking-uri"):
        collect_results()
    with pytest.raises(ConfigurationError, match="does not exist"):
        collect_results(results_dir=tmp_path / "nope")


def test_cli_leaderboard_build(lb_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lesionbench.cli import main

    rc = main(["-q", "leaderboard", "build", "--results", str(lb_store.results), "--out", str(tmp_path / "lb"), "--n-boot", "50", "--n-perm", "50", "--no-published",
               "--correction", "holm"])  # fmt: skip
    assert rc == 0
    assert "leaderboard written: open file://" in capsys.readouterr().out
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert doc["reference_only"] == [] and all(t["reference"] == [] for t in doc["tasks"])
    comps = [e["comparison"] for t in doc["tasks"] for e in t["entries"][1:]]
    assert comps and all(t["statistics"]["correction"] == "holm" for t in doc["tasks"])
    assert all(c["p_maxt"] is None and c["p_adjusted"] == c["p_holm"] and c["significant"] == (c["p_holm"] < 0.05) for c in comps)
    assert "<th>p (Holm)</th>" in (tmp_path / "lb" / "index.html").read_text()
    assert main(["leaderboard", "build", "--out", str(tmp_path / "lb2")]) == 2


# ------------------------------------------------------------------------------- statistics
def test_holm_matches_hand_computation() -> None:
    assert _stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert _stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert _stats.holm([0.9, 0.4]) == pytest.approx([0.9, 0.8])
    assert _stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_paired_comparison_detects_a_real_difference_only() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    good = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1, 200))))
    bad = rng.random(200)
    strong = _stats.paired_comparison(TaskKind.BINARY, y, good, bad, "auc", n_boot=200, n_perm=200, seed=0)
    assert strong.p_value < 0.01 and strong.ci_low > 0
    same = _stats.paired_comparison(TaskKind.BINARY, y, good, good.copy(), "auc", n_boot=50, n_perm=200, seed=0)
    assert same.difference == 0 and same.p_value == 1.0


def test_rank_intervals_are_tight_for_separated_models_and_wide_for_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    base = 2 * y - 1
    scores = {
        "strong": base * 3 + rng.normal(0, 1, 300),
        "weak": base * 0.3 + rng.normal(0, 1, 300),
        "weak2": base * 0.3 + rng.normal(0, 1, 300),
    }
    ri = _stats.bootstrap_rank_intervals(TaskKind.BINARY, y, scores, "auc", n_boot=200, seed=0)
    assert ri["strong"] == (1, 1)
    assert ri["weak"][0] == 2 and ri["weak"][1] == 3 and ri["weak2"] == (2, 3)
    assert _stats.bootstrap_rank_intervals(TaskKind.BINARY, y, scores, "auc", n_boot=200, seed=0) == ri


@pytest.mark.parametrize("trial", range(5))
def test_fast_metrics_equal_sklearn_and_lifelines_with_ties(trial: int) -> None:
    from lifelines.utils import concordance_index
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(trial)
    n = int(rng.integers(20, 150))
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 6, n) / 5.0  # many ties
    assert _stats.metric("auc", TaskKind.BINARY, y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert _stats.metric("average_precision", TaskKind.BINARY, y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert _stats.metric("balanced_accuracy", TaskKind.BINARY, y, s) == pytest.approx(balanced_accuracy_score(y, (s >= 0.5).astype(int)), abs=1e-12)
    k = 4
    yk = rng.integers(0, k, n)
    p = rng.integers(1, 5, (n, k)).astype(float)
    p /= p.sum(axis=1, keepdims=True)
    assert _stats.metric("auc", TaskKind.MULTICLASS, yk, p) == pytest.approx(roc_auc_score(yk, p, multi_class="ovr", average="macro"), abs=1e-12)
    onehot = np.eye(k)[yk]
    assert _stats.metric("map", TaskKind.MULTICLASS, yk, p) == pytest.approx(average_precision_score(onehot, p, average="macro"), abs=1e-12)
    assert _stats.metric("balanced_accuracy", TaskKind.MULTICLASS, yk, p) == pytest.approx(balanced_accuracy_score(yk, p.argmax(axis=1)), abs=1e-12)
    t = rng.integers(100, 1500, n).astype(float)
    t[: n // 4] = t[n // 4 : 2 * (n // 4)]  # tied times
    e = (rng.random(n) < 0.6).astype(float)
    risk = rng.integers(0, 5, n).astype(float)
    ys = np.c_[t, e]
    risk = np.c_[risk, risk]
    assert _stats.metric("c_index", TaskKind.SURVIVAL, ys, risk) == pytest.approx(concordance_index(t, -risk[:, 0], e), abs=1e-12)
    label = np.where((e == 1) & (t <= 730), 1.0, np.where(t >= 730, 0.0, np.nan))
    keep = ~np.isnan(label)
    assert _stats.metric("auc_2y_known", TaskKind.SURVIVAL, ys, risk) == pytest.approx(roc_auc_score(label[keep], risk[keep, 1]), abs=1e-12)
    from sksurv.metrics import cumulative_dynamic_auc
    from sksurv.util import Surv

    e_last = e.copy()
    e_last[t == t.max()] = 0.0  # scikit-survival refuses a death where the censoring survival reaches 0
    ys, surv = np.c_[t, e_last], Surv.from_arrays(e_last.astype(bool), t)
    ipcw = cumulative_dynamic_auc(surv, surv, risk[:, 1], [730.0])[0][0]
    assert _stats.metric("auc_2y", TaskKind.SURVIVAL, ys, risk) == pytest.approx(ipcw, abs=1e-12)


def test_split_variant_and_leaks_in_provenance(tmp_path: Path) -> None:
    from lesionbench.leaderboard.build import build_document

    published = BINARY.__class__(**{**BINARY.__dict__, "version": "1.0+fmcib", "published_split": True})
    write_result(published, make_manifest(published), "fmcib", 1.0, tmp_path)
    doc = build_document(collect_results(results_dir=tmp_path), n_boot=10, n_perm=10)
    prov = doc["tasks"][0]["entries"][0]["provenance"]
    assert prov["split_variant"] == "fmcib (published split)" and prov["task_version"] == "1.0+fmcib"


def test_leaderboard_from_the_scorers_own_runs(fresh_tracking_uri: str, tmp_path: Path) -> None:
    """Runs scored by scorer.evaluate_features and logged by tracking.log_result (predictions on child runs only)."""
    from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
    from lesionbench.benchmark.scoring.scorer import evaluate_features, read_predictions, result_dir
    from lesionbench.benchmark.tracking.mlflow_sink import log_result

    out = tmp_path / "results"
    for name, signal in (("strong", 1.2), ("weak", 0.2)):
        task, X = fabricate("binary", n_lesions=160, signal=signal, seed=3, name="fab_binary")
        res = evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(X.shape[1], name), fractions=(1.0, 0.5), seeds=(0, 1), out_dir=out, n_boot=50, progress=False)
        assert log_result(res, result_dir(out, "fab_binary", res.task.version, name, res.probe), tracking_uri=fresh_tracking_uri, plots=False)
    from lesionbench.leaderboard.truth import Truth

    # the saved predictions hold no labels: the task's manifest is the ground truth (a registered task's is found by name)
    build_leaderboard(tmp_path / "lb", tracking_uri=fresh_tracking_uri, n_boot=100, n_perm=100, truth=Truth(lambda meta: task.manifest(), None))
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    (t,) = doc["tasks"]
    assert [e["encoder"] for e in t["entries"]] == ["strong", "weak"]
    assert all(e["provenance"]["source"] == "mlflow" and e["rank_interval"] for e in t["entries"])
    assert t["entries"][1]["comparison"]["versus"] == "strong"
    cmp = t["entries"][1]["comparison"]
    va, vb = (e["metrics"]["auc"]["value"] for e in t["entries"])
    assert cmp["difference"] == pytest.approx(vb - va) and cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"]
    # The headline value is the scorer's, recomputed from its own saved predictions.
    _, y, s = read_predictions(result_dir(out, "fab_binary", task.meta.version, "strong", "linear") / "predictions" / "frac1_seed0.csv", "binary", task.manifest())
    assert t["entries"][0]["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_relative_sqlite_uris_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.benchmark.tracking.mlflow_sink import absolute_sqlite_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert absolute_sqlite_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_sqlite_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_missing_sqlite_store_is_an_error_not_a_new_empty_store(tmp_path: Path) -> None:
    db = tmp_path / "typo" / "mlflow.db"
    with pytest.raises(ConfigurationError, match=r"No MLflow store at .*typo/mlflow\.db"):
        collect_results(tracking_uri=f"sqlite:///{db}")
    assert not db.parent.exists()  # nothing created by a read


def test_no_results_found_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING, logger="lesionbench.leaderboard.collect"):
        assert collect_results(results_dir=tmp_path / "empty") == []
    assert "No lesionbench results found in" in caplog.text and "Run `lesionbench run` first" in caplog.text
