"""Issue 20, forged results (items 6, 7, 8, 12) and a leaderboard folder replaced as a whole (item 20).

Each test forges a result the way the issue's review did and fails on the code before the fix."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from _lb_fixtures import BINARY, make_manifest, write_result
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.leaderboard import build_leaderboard
from lesionbench.leaderboard.collect import collect_results
from lesionbench.leaderboard.truth import Truth
from lesionbench.leaderboard.validate import ResultFileError, parse_result

TRUST_RESULTS = Truth(None, None)  # no registered task at hand: the results must agree among themselves


def _build(results: Path, out: Path, **kw) -> dict:
    kw.setdefault("truth", TRUST_RESULTS)
    build_leaderboard(out, results_dir=results, n_boot=10, n_perm=10, include_published=False, **kw)
    return json.loads((out / "leaderboard.json").read_text())


def _edit(folder: Path, change) -> None:
    doc = json.loads((folder / "result.json").read_text())
    change(doc)
    (folder / "result.json").write_text(json.dumps(doc))


# ------------------------------------------------------------- item 6: the section's task meta
def test_the_result_sorting_first_does_not_define_its_section(tmp_path: Path, caplog) -> None:
    manifest = make_manifest(BINARY)
    for enc in ("mmm", "zzz"):
        write_result(BINARY, manifest, enc, 1.0, tmp_path / "r", fractions=(1.0,))
    forged = write_result(BINARY, manifest, "aaa", 1.0, tmp_path / "r", fractions=(1.0,))  # sorts first
    _edit(forged, lambda d: d["task"].update(main_metric="balanced_accuracy", description="<b>forged</b>"))
    with caplog.at_level(logging.WARNING):
        doc = _build(tmp_path / "r", tmp_path / "lb")
    (t,) = doc["tasks"]
    assert t["main_metric"] == "auc" and t["description"] == BINARY.description
    assert sorted(e["encoder"] for e in t["entries"] + t["unranked"]) == ["mmm", "zzz"]
    assert "aaa" in caplog.text and "differs from the section's" in caplog.text


def test_a_registered_task_section_uses_the_registrys_meta(tmp_path: Path) -> None:
    import dataclasses

    from lesionbench.benchmark.encoders.plugins import get_task

    real = get_task("synthetic_site").meta  # registered; its meta needs no data
    forged = dataclasses.replace(real, description="<b>forged</b> description", citation="forged")
    write_result(forged, make_manifest(forged), "enc", 1.0, tmp_path / "r", fractions=(1.0,))
    wrong_kind = write_result(forged, make_manifest(forged), "other", 1.0, tmp_path / "r", fractions=(1.0,))
    _edit(wrong_kind, lambda d: d["task"].update(main_metric="auc"))  # scored another way: skipped
    doc = _build(tmp_path / "r", tmp_path / "lb", truth=Truth(labels=None))  # the registry's meta, no labels
    (t,) = doc["tasks"]
    assert (t["description"], t["citation"], t["main_metric"]) == (real.description, real.citation, real.main_metric)
    assert [e["encoder"] for e in t["entries"] + t["unranked"]] == ["enc"]


# ------------------------------------------------------------------ item 7: dates and values
def test_created_dates_compare_as_instants_and_future_ones_are_refused(tmp_path: Path) -> None:
    manifest = make_manifest(BINARY)
    genuine = write_result(BINARY, manifest, "enc", 0.8, tmp_path / "a", fractions=(1.0,), created="2026-11-30T10:00:00+00:00")
    forged = write_result(BINARY, manifest, "enc", 3.0, tmp_path / "b", fractions=(1.0,), created="20260101T000000")  # basic ISO: "newest" as a string
    items = collect_results(results_dir=tmp_path)
    assert len(items) == 1 and items[0].location == str(genuine / "result.json")
    soon = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat(timespec="seconds")
    _edit(forged, lambda d: d.update(created=soon))
    with pytest.raises(ResultFileError, match="future"):
        parse_result((forged / "result.json").read_bytes(), "forged")


def test_a_headline_value_its_own_predictions_contradict_is_recomputed_and_unranked(tmp_path: Path) -> None:
    manifest = make_manifest(BINARY)
    honest = write_result(BINARY, manifest, "honest", 1.0, tmp_path / "r", fractions=(1.0,))
    forged = write_result(BINARY, manifest, "forged", 0.3, tmp_path / "r", fractions=(1.0,))
    claimed = json.loads((forged / "result.json").read_text())["runs"][0]["metrics"]["auc"]["value"]

    def boast(d: dict) -> None:
        for run in d["runs"]:
            run["metrics"]["auc"] = {"value": 0.99, "ci_low": 0.98, "ci_high": 1.0}

    _edit(forged, boast)
    doc = _build(tmp_path / "r", tmp_path / "lb")
    (t,) = doc["tasks"]
    assert [e["encoder"] for e in t["entries"]] == ["honest"]
    (u,) = t["unranked"]
    assert u["encoder"] == "forged" and "disagrees with its own predictions" in u["unranked_reason"]
    assert u["metrics"]["auc"]["value"] == pytest.approx(claimed) and u["metrics"]["auc"]["ci_low"] is None
    assert honest.exists()


# --------------------------------------------------------------------------- item 8: names
@pytest.mark.parametrize("field", ["encoder.name", "task.name", "probe"])
@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\u2066"])
def test_invisible_and_bidirectional_characters_in_result_names_are_refused(tmp_path: Path, field: str, char: str) -> None:
    folder = write_result(BINARY, make_manifest(BINARY), "alpha", 1.0, tmp_path / "r", fractions=(1.0,))
    doc = json.loads((folder / "result.json").read_text())
    where, _, key = field.rpartition(".")
    target = doc[where] if where else doc
    target[key] = target[key][:2] + char + target[key][2:]
    with pytest.raises(ResultFileError, match="bidirectional or invisible"):
        parse_result(json.dumps(doc), "forged")


# ------------------------------------------------------------------- item 12: scratch runs
def test_a_scratch_run_never_replaces_the_full_entry(tmp_path: Path) -> None:
    manifest = make_manifest(BINARY)
    full = write_result(BINARY, manifest, "enc", 1.0, tmp_path / "full", fractions=(1.0,), created="2026-11-01T10:00:00+00:00")
    scratch = write_result(BINARY, manifest, "enc", 1.3, tmp_path / "scratch", fractions=(1.0,), created="2026-11-30T10:00:00+00:00")

    def fewer(d: dict) -> None:
        d["runs"] = [r for r in d["runs"] if r["seed"] == 0]
        d["extra"].update(n_boot=5, seeds=[0])

    _edit(scratch, fewer)
    items = collect_results(results_dir=tmp_path)
    assert len(items) == 1 and items[0].location == str(full / "result.json")
    _edit(full, lambda d: d["extra"].update(n_boot=5))  # now the newer one has as much: it replaces the older
    _edit(scratch, lambda d: d.update(runs=json.loads((full / "result.json").read_text())["runs"]))
    assert collect_results(results_dir=tmp_path)[0].location == str(scratch / "result.json")


def test_a_scratch_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
    from lesionbench.benchmark.scoring.scorer import evaluate_features

    task, X = fabricate("binary", n_lesions=120, feature_dim=6, seed=2)
    fast = {"fractions": (1.0,), "c_grid": (1.0,), "refine": False, "progress": False}
    evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(6), out_dir=tmp_path, seeds=(0, 1), n_boot=20, **fast)
    path = next(tmp_path.rglob("result.json"))
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="fewer bootstrap resamples and seeds"):
        evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(6), out_dir=tmp_path, seeds=(0,), n_boot=5, **fast)
    assert path.read_bytes() == before


# ----------------------------------------------------------- item 20: the folder as a whole
def test_a_build_killed_while_writing_leaves_the_old_set_whole(tmp_path: Path, monkeypatch) -> None:
    manifest = make_manifest(BINARY)
    write_result(BINARY, manifest, "one", 1.0, tmp_path / "r", fractions=(1.0,))
    _build(tmp_path / "r", tmp_path / "lb")
    old = {p.name: p.read_bytes() for p in (tmp_path / "lb").iterdir()}
    write_result(BINARY, manifest, "two", 1.4, tmp_path / "r", fractions=(1.0,))
    real = Path.write_text

    def killed_at_the_page(self: Path, *a, **k):
        if self.name.endswith("index.html") or ".index." in self.name:
            raise KeyboardInterrupt  # stands for a kill while the page is written
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", killed_at_the_page)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "r", tmp_path / "lb")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "lb").iterdir()} == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lb")] == []  # no half-built sibling left
    doc = _build(tmp_path / "r", tmp_path / "lb")
    assert sorted(e["encoder"] for e in doc["tasks"][0]["entries"]) == ["one", "two"]


def test_a_leaderboard_folder_holding_other_files_is_refused(tmp_path: Path) -> None:
    write_result(BINARY, make_manifest(BINARY), "one", 1.0, tmp_path / "r", fractions=(1.0,))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="holds files the leaderboard did not write"):
        _build(tmp_path / "r", tmp_path / "site")
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["notes.txt"]
