"""Kaggle-style integrity of submissions: private scores stay in the organiser store, quotas per team
and day, final selection, one team per folder name, atomic outputs."""

from __future__ import annotations

import json
import re
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from _lb_fixtures import BINARY
from _submit_fixtures import FakeTask, predictions, tree, write_csv
from lesionbench.benchmark.errors import ConfigurationError, SubmissionError
from lesionbench.leaderboard import build_leaderboard, submit
from lesionbench.leaderboard.submissions.challenge import ChallengeConfig, Limits, load_challenge, parse_challenge
from lesionbench.leaderboard.submissions.organiser import final_ranking, private_scores, select, team_submissions

DAY1 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def task() -> FakeTask:
    return FakeTask(BINARY)


def _submit(task: FakeTask, tmp: Path, name: str, quality: float = 1.2, *, seed: int = 5, now: datetime = DAY1, **kw):
    path = write_csv(predictions(task, quality, seed=seed), tmp / f"{name.replace(' ', '_')}-{quality}-{seed}.csv")
    kw.setdefault("results_dir", tmp / "results")
    kw.setdefault("organiser_dir", tmp / "organiser")
    return submit(task, path, name=name, n_boot=0, now=now, **kw)


# ------------------------------------------------------------------------- 12.10 private scores
def _texts(root: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


def test_public_store_holds_no_private_score_and_no_test_label(task: FakeTask, tmp_path: Path, fresh_tracking_uri: str, empty_mlflow_db: Path) -> None:
    organiser = tmp_path / "organiser"
    organiser.mkdir(mode=0o700)  # the organiser's own: no group or other access
    shutil.copy(empty_mlflow_db, organiser / "mlflow.db")
    out = _submit(task, tmp_path, "Team A", tracking_uri=fresh_tracking_uri, organiser_dir=organiser, organiser_tracking_uri=f"sqlite:///{organiser / 'mlflow.db'}")
    assert out.on_leaderboard and out.result_path is not None and out.run_id is not None

    test = task.manifest().query("split == 'test'")
    private_values = {f"{mv.value!r}" for mv in out.score.private.values()} | {f"{mv.value!r}" for mv in out.score.overall.values()}
    labelled = [re.compile(rf"\b{i}\b[^\n]*,{y}(,|\r?\n|$)") for i, y in zip(test["lesion_id"], test["label"])]  # a lesion's row ending in its label

    def assert_public(name: str, text: str) -> None:
        low = text.lower()
        assert "private" not in low and "overall" not in low, name
        assert not any(v in text for v in private_values), f"{name} holds a private metric value"
        assert not any(p.search(text) for p in labelled), f"{name} pairs a lesion with its label"

    files = _texts(tmp_path / "results")
    assert files, "the public entry was written"
    for name, text in files.items():
        assert_public(name, text)
    table = pd.read_csv(out.result_path.parent / "predictions.csv")
    assert list(table.columns) == ["lesion_id", "score"]  # no labels, no public/private membership

    # The public MLflow experiment: params, metrics, tags and every artifact.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(fresh_tracking_uri)
    run = client.get_run(out.run_id)
    assert_public("params/tags", json.dumps({**run.data.params, **run.data.tags}))
    assert all(k.startswith("public_") for k in run.data.metrics)
    dst = tmp_path / "downloaded"
    dst.mkdir()
    for art in client.list_artifacts(out.run_id):
        assert_public(art.path, Path(client.download_artifacts(out.run_id, art.path, str(dst))).read_text())
    assert {e.name for e in client.search_experiments()} == {"lesionbench", "Default"}

    # Everything private is in the organiser store, which only its owner can enter.
    record = json.loads((out.organiser_path / "record.json").read_text())
    assert record["private"]["auc"]["value"] == out.score.private["auc"].value
    labelled_table = pd.read_csv(out.organiser_path / "predictions.csv")
    assert {"label", "part"} <= set(labelled_table.columns)
    org_run = MlflowClient(f"sqlite:///{organiser / 'mlflow.db'}").get_run(out.organiser_run_id)
    assert org_run.data.metrics["private_auc"] == pytest.approx(out.score.private["auc"].value)


def test_organiser_folder_is_private_to_its_owner(task: FakeTask, tmp_path: Path) -> None:
    out = _submit(task, tmp_path, "t")
    assert (tmp_path / "organiser").stat().st_mode & 0o777 == 0o700
    assert out.organiser_path.is_relative_to(tmp_path / "organiser")


def test_reveal_reads_the_organiser_store_not_the_public_file(task: FakeTask, tmp_path: Path) -> None:
    out = _submit(task, tmp_path, "honest", 1.5)
    # A public file that claims a private score (an old layout, or a forgery) is not believed.
    doc = json.loads(out.result_path.read_text())
    doc["extra"]["submission"]["private"] = {"auc": {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}}
    out.result_path.write_text(json.dumps(doc))
    build_leaderboard(tmp_path / "pub", results_dir=tmp_path / "results", n_boot=0, n_perm=0)
    build_leaderboard(tmp_path / "org", results_dir=tmp_path / "results", reveal=True, organiser_dir=tmp_path / "organiser", n_boot=0, n_perm=0)
    public = json.loads((tmp_path / "pub" / "leaderboard.json").read_text())["tasks"][0]["submissions"][0]
    revealed = json.loads((tmp_path / "org" / "leaderboard.json").read_text())["tasks"][0]["submissions"][0]
    assert public["private"] is None
    assert revealed["private"]["auc"]["value"] == pytest.approx(out.score.private["auc"].value) != 1.0
    with pytest.raises(ConfigurationError, match="No organiser store"):
        build_leaderboard(tmp_path / "x", results_dir=tmp_path / "results", reveal=True, organiser_dir=tmp_path / "nowhere", n_boot=0, n_perm=0)


# --------------------------------------------------------------------------------- 12.11 quotas
def test_daily_quota_rolls_over_at_utc_midnight_and_total_quota_holds(task: FakeTask, tmp_path: Path) -> None:
    (tmp_path / "organiser").mkdir(mode=0o700)
    (tmp_path / "organiser" / "challenge.toml").write_text("per_day = 2\ntotal = 3\n")
    assert _submit(task, tmp_path, "team", seed=1).submission_id == "sub-0001"
    assert _submit(task, tmp_path, "team", seed=2, now=DAY1.replace(hour=23, minute=59)).submission_id == "sub-0002"
    before = tree(tmp_path / "results") + tree(tmp_path / "organiser")
    with pytest.raises(SubmissionError, match=r"used its 2 submissions of 2026-03-01 \(UTC\).*accepted from 2026-03-02 00:00 UTC"):
        _submit(task, tmp_path, "team", seed=3, now=DAY1.replace(hour=23, minute=59, second=59))
    assert tree(tmp_path / "results") + tree(tmp_path / "organiser") == before
    # Another team has its own quota; the next UTC day (given in another time zone) resets this one's.
    assert _submit(task, tmp_path, "other", seed=3).submission_id == "sub-0001"
    from datetime import timedelta

    next_day = datetime(2026, 3, 1, 19, 0, tzinfo=timezone(timedelta(hours=-5)))  # 2026-03-02 00:00 UTC
    assert _submit(task, tmp_path, "team", seed=4, now=next_day).submission_id == "sub-0003"
    with pytest.raises(SubmissionError, match="has used all 3 submissions allowed"):
        _submit(task, tmp_path, "team", seed=5, now=DAY1.replace(day=9))


def test_quota_is_counted_from_the_organiser_store_not_from_public_files(task: FakeTask, tmp_path: Path) -> None:
    config = ChallengeConfig(Limits(per_day=1))
    _submit(task, tmp_path, "team", challenge=config)
    shutil.rmtree(tmp_path / "results")  # the public folder is the submitter's to delete
    with pytest.raises(SubmissionError, match="used its 1 submissions"):
        _submit(task, tmp_path, "team", seed=9, challenge=config)
    assert not (tmp_path / "results").exists()


def test_default_quota_is_five_a_day(task: FakeTask, tmp_path: Path) -> None:
    assert ChallengeConfig().for_task("x") == Limits(per_day=5, total=100, max_selected=2)
    for i in range(5):
        _submit(task, tmp_path, "team", seed=i)
    with pytest.raises(SubmissionError, match="used its 5 submissions"):
        _submit(task, tmp_path, "team", seed=6)


def test_concurrent_submissions_cannot_both_pass_the_quota(task: FakeTask, tmp_path: Path) -> None:
    config = ChallengeConfig(Limits(per_day=1))
    outcomes: list[object] = []

    def one(seed: int) -> None:
        try:
            outcomes.append(_submit(task, tmp_path, "team", seed=seed, challenge=config))
        except SubmissionError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["SubmissionError", "SubmissionOutcome"]
    assert len(list((tmp_path / "organiser").rglob("record.json"))) == 1


def test_no_submission_and_no_new_selection_after_the_deadline(task: FakeTask, tmp_path: Path) -> None:
    (tmp_path / "organiser").mkdir(mode=0o700)
    (tmp_path / "organiser" / "challenge.toml").write_text("deadline = 2026-03-01T12:00:00+01:00\n")  # 11:00 UTC
    first = _submit(task, tmp_path, "team", now=DAY1.replace(hour=10, minute=59))
    before = tree(tmp_path / "results") + tree(tmp_path / "organiser")
    with pytest.raises(SubmissionError, match=r"closed for submissions at 2026-03-01 11:00 UTC"):
        _submit(task, tmp_path, "team", seed=2, now=DAY1.replace(hour=11))
    assert tree(tmp_path / "results") + tree(tmp_path / "organiser") == before
    where = {"task": BINARY.name, "version": BINARY.version, "team": "team", "slug": "team"}
    select(tmp_path / "organiser", ids=[first.submission_id], now=DAY1.replace(hour=10, minute=59), **where)
    with pytest.raises(ConfigurationError, match="closed for changes of the selection"):
        select(tmp_path / "organiser", ids=[], now=DAY1.replace(hour=11), **where)


def test_challenge_configuration_files_are_validated(tmp_path: Path) -> None:
    good = tmp_path / "c.json"
    good.write_text(json.dumps({"per_day": 3, "tasks": {"luna16_malignancy": {"per_day": 1, "max_selected": 1}}}))
    config = load_challenge(good)
    assert config.for_task("luna16_malignancy") == Limits(per_day=1, total=100, max_selected=1)
    assert config.for_task("other") == Limits(per_day=3)
    toml = tmp_path / "c.toml"
    toml.write_text("total = 10\ndeadline = 2026-12-31T23:59:00Z\n[tasks.x]\nper_day = 2\n")
    end = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert load_challenge(toml).for_task("x") == Limits(per_day=2, total=10, deadline=end)
    good.write_text('{"deadline": "2027-01-01T00:59:00+01:00"}')
    assert load_challenge(good).limits.deadline == end
    for text, fragment in (
        ('{"per_dya": 3}', "unknown key 'per_dya'. Did you mean 'per_day'?"),
        ('{"per_day": 0}', "per_day must be a whole number of at least 1, got 0"),
        ('{"total": true}', "total must be a whole number"),
        ('{"per_day": "5"}', "got '5'"),
        ('{"tasks": {"x": {"max_selected": -1}}}', "tasks.x.max_selected must be"),
        ('{"tasks": [1]}', "'tasks' must be a table"),
        ("[1, 2]", "expected a table of keys"),
        ('{"deadline": "2026-12-31"}', "deadline must be a date and time with a time zone"),
        ('{"deadline": "soon"}', "got 'soon'"),
        ('{"per_day": 3', "could not be parsed as JSON"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ConfigurationError, match="bad.json") as ei:
            load_challenge(bad)
        assert fragment in str(ei.value), str(ei.value)
    (tmp_path / "bad.toml").write_text("per_day = = 1")
    with pytest.raises(ConfigurationError, match="could not be parsed as TOML"):
        load_challenge(tmp_path / "bad.toml")
    (tmp_path / "c.yaml").write_text("per_day: 1")
    with pytest.raises(ConfigurationError, match=r"name it \*.toml or \*.json"):
        load_challenge(tmp_path / "c.yaml")
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_challenge(tmp_path / "missing.toml")
    assert parse_challenge({}).limits == Limits()


def test_bad_challenge_file_rejects_the_submission_before_anything_is_written(task: FakeTask, tmp_path: Path) -> None:
    bad = tmp_path / "challenge.json"
    bad.write_text('{"per_day": -1}')
    with pytest.raises(ConfigurationError, match="per_day must be"):
        _submit(task, tmp_path, "team", challenge=bad)
    assert not (tmp_path / "results").exists() and not (tmp_path / "organiser").exists()


# ---------------------------------------------------------------------- 12.11 final selection
def test_public_entry_is_the_best_public_score_and_final_ranking_uses_the_selection(task: FakeTask, tmp_path: Path) -> None:
    outs = [_submit(task, tmp_path, "A", q, seed=s) for q, s in ((0.2, 1), (2.5, 2), (1.0, 3))]
    assert [o.on_leaderboard for o in outs] == [True, True, False]
    public = json.loads(outs[1].result_path.read_text())
    assert public["extra"]["submission"]["submission_id"] == "sub-0002"
    assert public["runs"][0]["metrics"]["auc"]["value"] == outs[1].score.public["auc"].value

    def final(team: str = "A") -> dict:
        return private_scores(tmp_path / "organiser")[(BINARY.name, BINARY.version, team)]

    # No selection: the 2 best public scores count (sub-0002 and sub-0003), the better private one is final.
    by_public = sorted(outs, key=lambda o: -o.score.public["auc"].value)[:2]
    best = max(by_public, key=lambda o: o.score.private["auc"].value)
    assert final()["submission_id"] == best.submission_id and "none selected" in final()["selection"]
    rows, how = team_submissions(tmp_path / "organiser", task=BINARY.name, version=BINARY.version, team="A", slug="a")
    assert [r["counts"] for r in rows] == [False, True, True] and all("private" not in r for r in rows)

    # The team selects its weakest public submission: only it counts now.
    where = {"task": BINARY.name, "version": BINARY.version, "team": "A", "slug": "a"}
    assert select(tmp_path / "organiser", ids=["sub-0001"], **where) == ["sub-0001"]
    assert final()["submission_id"] == "sub-0001" and final()["selection"] == "selected by the team"
    assert final()["private"]["auc"]["value"] == pytest.approx(outs[0].score.private["auc"].value)
    with pytest.raises(ConfigurationError, match="at most 2 may count"):
        select(tmp_path / "organiser", ids=["sub-0001", "sub-0002", "sub-0003"], **where)
    with pytest.raises(ConfigurationError, match=r"Unknown submission id\(s\) \['sub-0009'\]"):
        select(tmp_path / "organiser", ids=["sub-0009"], **where)
    with pytest.raises(ConfigurationError, match="does not match the team 'A'"):
        select(tmp_path / "organiser", ids=["sub-0001"], **{**where, "team": "a"})
    assert final()["submission_id"] == "sub-0001"  # refused selections changed nothing
    select(tmp_path / "organiser", ids=[], **where)
    assert final()["submission_id"] == best.submission_id

    # Final ranking across teams is on the private part.
    weak = _submit(task, tmp_path, "B", 0.0, seed=7)
    ranking = final_ranking(tmp_path / "organiser", BINARY.name, BINARY.version)
    assert [(r["team"], r["rank"]) for r in ranking] == [("A", 1), ("B", 2)]
    assert ranking[1]["score"] == pytest.approx(weak.score.private["auc"].value)
    assert ranking[1]["score"] < ranking[0]["score"]


def test_cli_select(task: FakeTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import lesionbench.benchmark.encoders.plugins as plugins
    from lesionbench.cli import main

    monkeypatch.setattr(plugins, "get_task", lambda name, **kw: task)
    base = ["--task", BINARY.name, "--name", "cli team", "--results", str(tmp_path / "results")]
    for seed in (1, 2, 3):
        assert main(["-q", "submit", *base, "--no-mlflow", str(write_csv(predictions(task, seed=seed), tmp_path / f"p{seed}.csv"))]) == 0
    assert "submission sub-0003 of 'cli team' accepted" in capsys.readouterr().out
    assert main(["-q", "select", *base, "sub-0001", "sub-0003"]) == 0
    out = capsys.readouterr().out
    assert "selected sub-0001, sub-0003" in out and "* sub-0001" in out and "  sub-0002" in out and "selected by the team" in out
    assert main(["-q", "select", *base, "--list"]) == 0 and "* sub-0003" in capsys.readouterr().out
    assert main(["-q", "select", *base, "--clear"]) == 0 and "best 2 public score(s)" in capsys.readouterr().out
    assert main(["select", *base, "sub-0001", "sub-0002", "sub-0003"]) == 2 and "at most 2" in capsys.readouterr().err
    assert main(["select", *base]) == 2
    # The organiser's final page reads the organiser folder (here the default one, beside --results).
    lb = ["-q", "leaderboard", "build", "--results", str(tmp_path / "results"), "--n-boot", "0", "--n-perm", "0", "--no-published"]
    assert main([*lb, "--out", str(tmp_path / "final"), "--reveal"]) == 0
    final = json.loads((tmp_path / "final" / "leaderboard.json").read_text())["tasks"][0]["submissions"][0]
    assert final["private"]["auc"]["value"] is not None and final["private_rank"] == 1
    assert main([*lb, "--out", str(tmp_path / "x"), "--reveal", "--organiser-dir", str(tmp_path / "nowhere")]) == 2
    assert "No organiser store" in capsys.readouterr().err


# ------------------------------------------------------------------------ 13.5 name collisions
@pytest.mark.parametrize("other", ["my-team", "MY TEAM", "My (Team)", "my team"])
def test_a_second_name_for_the_same_folder_is_refused(other: str, task: FakeTask, tmp_path: Path) -> None:
    first = _submit(task, tmp_path, "My Team", 2.0)
    before = tree(tmp_path / "results") + tree(tmp_path / "organiser")
    with pytest.raises(SubmissionError) as ei:
        _submit(task, tmp_path, other, 0.1, seed=8)
    msg = str(ei.value)
    assert f"team name {other!r} maps to the folder 'submission-my-team' of the existing team 'My Team'" in msg, msg
    assert tree(tmp_path / "results") + tree(tmp_path / "organiser") == before
    assert json.loads(first.result_path.read_text())["extra"]["submission"]["name"] == "My Team"
    assert _submit(task, tmp_path, "My Team", 0.1, seed=8).submission_id == "sub-0002"  # the same team resubmits


def test_a_public_entry_without_organiser_record_still_owns_its_folder(task: FakeTask, tmp_path: Path) -> None:
    first = _submit(task, tmp_path, "My Team")
    shutil.rmtree(tmp_path / "organiser")  # e.g. results made before the organiser store existed
    with pytest.raises(SubmissionError, match="existing team 'My Team'"):
        _submit(task, tmp_path, "my-team", seed=3)
    assert first.result_path.is_file()


# ---------------------------------------------------------------------------- atomic outputs
def test_every_output_is_written_atomically(task: FakeTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    organiser_mod = sys.modules["lesionbench.leaderboard.submissions.organiser"]
    publish_mod = sys.modules["lesionbench.leaderboard.submissions.publish"]  # writes the public entry
    from lesionbench.benchmark.host import atomic_write

    written: list[Path] = []

    def recording(path: Path, write, **kw):  # noqa: ANN001
        written.append(Path(path))
        return atomic_write(path, write, **kw)

    monkeypatch.setattr(publish_mod, "atomic_write", recording)
    monkeypatch.setattr(organiser_mod, "atomic_write", recording)
    _submit(task, tmp_path, "team")
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()] + [p for p in (tmp_path / "organiser").rglob("*") if p.is_file() and p.name != ".lock"]
    assert files and sorted(files) == sorted(set(written))
    assert not [p for p in files if p.name.startswith(".") and p.name != ".lock"]  # no temporary left behind
