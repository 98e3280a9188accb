"""Issue 20, private data reaching public places (items 1-5) and the public entry equal to the ledger's best (15).

Each test attacks the way the issue's review did and fails on the code before the fix."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from _lb_fixtures import BINARY, make_manifest, write_result
from _submit_fixtures import FakeTask, predictions, tree, write_csv
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.leaderboard import submit
from lesionbench.leaderboard.submissions.organiser import private_scores
from lesionbench.leaderboard.submissions.submit import public_private_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `toy` task and encoder of test_cli_run
from test_cli_run import toy  # noqa: E402,F401 - a fixture

LABEL_COLUMNS = {"label", "time", "event", "label_2y", "part"}


@pytest.fixture
def task() -> FakeTask:
    return FakeTask(BINARY)


def _submit(task: FakeTask, tmp: Path, name: str, quality: float = 1.2, *, seed: int = 5, **kw):
    path = write_csv(predictions(task, quality, seed=seed), tmp / f"{name.replace(' ', '_')}-{quality}-{seed}.csv")
    kw.setdefault("results_dir", tmp / "results")
    kw.setdefault("organiser_dir", tmp / "organiser")
    return submit(task, path, name=name, n_boot=0, **kw)


# ------------------------------------------------------------------ item 2: no test label in public
def _public_files(root: Path) -> list[Path]:
    private = {"lesionbench-organiser", "data"}
    return [p for p in root.rglob("*") if p.is_file() and not (set(p.relative_to(root).parts) & private)]


def test_run_and_submit_with_default_paths_publish_no_test_label(toy, tmp_path: Path, capsys, empty_mlflow_db: Path) -> None:  # noqa: F811
    """`lesionbench run` then `submit`, every path the default: no public file or MLflow artifact holds a test label."""
    import shutil

    from lesionbench.cli import main

    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")  # the default stores, initialised (MLflow's migrations take seconds)
    (tmp_path / "lesionbench-organiser").mkdir(mode=0o700)
    shutil.copy(empty_mlflow_db, tmp_path / "lesionbench-organiser" / "mlflow.db")

    assert main(["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--encoder", "toy_stats", "--fractions", "1.0", "--seeds", "0", "--n-boot", "20"]) == 0
    public = pd.read_csv(tmp_path / "lesionbench-results/toy_blobs/1/toy_stats/linear/predictions/frac1_seed0.csv", dtype={"lesion_id": str})
    test = public[public["split"] == "test"]
    write_csv(test[["lesion_id", "score"]], tmp_path / "copied.csv")  # what the review built its AUC-1.0 submission from
    assert main(["-q", "submit", "--task", "toy_blobs", "--data-dir", str(toy), "copied.csv", "--name", "Team A"]) == 0
    capsys.readouterr()

    manifest = pd.read_csv(toy / "manifest.csv", dtype={"lesion_id": str})
    truth = manifest[manifest["split"] == "test"].set_index("lesion_id")["label"]
    files = _public_files(tmp_path)
    assert any(p.name == "mlflow.db" for p in files) and any("mlartifacts" in p.parts for p in files)
    csvs = [p for p in files if p.suffix == ".csv" and p.name != "copied.csv"]
    assert csvs, "run and submit wrote public predictions"
    for path in csvs:
        table = pd.read_csv(path, dtype={"lesion_id": str})
        assert not LABEL_COLUMNS & set(table.columns), f"{path} has label columns {LABEL_COLUMNS & set(table.columns)}"
        if "lesion_id" in table.columns:  # nor a column that equals the labels under another name
            rows = table[table["lesion_id"].isin(truth.index)]
            for col in rows.columns.drop("lesion_id"):
                same = rows[col].astype(str).to_numpy() == truth.loc[rows["lesion_id"]].astype(str).to_numpy()
                assert len(rows) == 0 or not same.all(), f"{path}: column {col} is the test labels"
    # a ROC/PR curve through the lesions' own scores is their labels (every step up a positive)
    assert not [p for p in files if p.name in ("roc.png", "pr.png", "km.png")]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        text = json.dumps({**run.data.params, **run.data.tags})
        assert '"label"' not in text and "label_2y" not in text


# ------------------------------------------------------ item 1: private-part scores, copied files
def test_public_predictions_of_a_submission_hold_the_public_part_only(task: FakeTask, tmp_path: Path, fresh_tracking_uri: str) -> None:
    out = _submit(task, tmp_path, "Team A", tracking_uri=fresh_tracking_uri)
    public_ids = set(public_private_split(task.meta, task.manifest()).pipe(lambda s: s.index[s.to_numpy()]))
    local = pd.read_csv(out.result_path.parent / "predictions.csv", dtype={"lesion_id": str})
    assert set(local["lesion_id"]) == public_ids and list(local.columns) == ["lesion_id", "score"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(fresh_tracking_uri)
    dst = tmp_path / "dl"
    dst.mkdir()
    logged = pd.read_csv(client.download_artifacts(out.run_id, "predictions.csv", str(dst)), dtype={"lesion_id": str})
    assert set(logged["lesion_id"]) == public_ids


def test_identical_predictions_of_two_teams_are_flagged_to_the_organiser(task: FakeTask, tmp_path: Path) -> None:
    a = _submit(task, tmp_path, "Team A")
    copied = predictions(task, 1.2, seed=5).sample(frac=1.0, random_state=1)  # the same numbers, rows shuffled: other bytes
    path = write_csv(copied, tmp_path / "b.csv")
    b = submit(task, path, name="Team B", results_dir=tmp_path / "results", organiser_dir=tmp_path / "organiser", n_boot=0)
    c = _submit(task, tmp_path, "Team C", seed=9)  # its own predictions: not flagged
    record_b = json.loads((b.organiser_path / "record.json").read_text())
    assert record_b["same_file_as"] == [f"Team A {a.submission_id}"]
    assert "same_file_as" not in json.loads((c.organiser_path / "record.json").read_text())
    scores = private_scores(tmp_path / "organiser")
    assert scores[(task.meta.name, task.meta.version, "Team B")]["same_file_as"] == [f"Team A {a.submission_id}"]
    assert scores[(task.meta.name, task.meta.version, "Team C")]["same_file_as"] == []
    from lesionbench.leaderboard import build_leaderboard

    build_leaderboard(tmp_path / "org", results_dir=tmp_path / "results", reveal=True, organiser_dir=tmp_path / "organiser", n_boot=0, n_perm=0)
    revealed = {e["name"]: e["same_file_as"] for e in json.loads((tmp_path / "org" / "leaderboard.json").read_text())["tasks"][0]["submissions"]}
    assert revealed == {"Team A": [], "Team B": [f"Team A {a.submission_id}"], "Team C": []}
    build_leaderboard(tmp_path / "pub", results_dir=tmp_path / "results", n_boot=0, n_perm=0)
    assert "Team A sub" not in (tmp_path / "pub" / "leaderboard.json").read_text()  # the public page says nothing


# ------------------------------------------------------------- item 3: paths resolve in their store
def test_a_result_path_leaving_its_store_is_never_read(tmp_path: Path, fresh_tracking_uri: str, caplog) -> None:
    from lesionbench.leaderboard import build_leaderboard
    from lesionbench.leaderboard.truth import Truth

    from _lb_fixtures import log_to_mlflow
    from mlflow.tracking import MlflowClient

    manifest = make_manifest(BINARY)
    client = MlflowClient(fresh_tracking_uri)
    exp = client.create_experiment("lesionbench")
    good = write_result(BINARY, manifest, "honest", 1.0, tmp_path / "r", fractions=(1.0,))
    log_to_mlflow(good, fresh_tracking_uri, exp)
    forged = write_result(BINARY, manifest, "forged", 1.0, tmp_path / "r", fractions=(1.0,))
    pid = log_to_mlflow(forged, fresh_tracking_uri, exp, predictions_on_parent=False)
    doc = json.loads((forged / "result.json").read_text())
    for run in doc["runs"]:  # the parent's result.json replaced by one pointing out of its artifacts
        run["predictions_path"] = "../../../../../organiser-secret.csv"
    (forged / "result.json").write_text(json.dumps(doc))
    client.log_artifact(pid, str(forged / "result.json"))
    with caplog.at_level("WARNING"):
        build_leaderboard(tmp_path / "lb", tracking_uri=fresh_tracking_uri, n_boot=10, n_perm=10, include_published=False, truth=Truth(None, None))
    built = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    names = [e["encoder"] for t in built["tasks"] for e in t["entries"] + t["unranked"]]
    assert names == ["honest"]
    assert "predictions_path" in caplog.text and "relative path inside the result's folder" in caplog.text


# ------------------------------------------------------------------ item 4: the organiser folder
def test_an_organiser_folder_others_can_read_is_refused(task: FakeTask, tmp_path: Path) -> None:
    organiser = tmp_path / "organiser"
    organiser.mkdir(mode=0o755)
    os.chmod(organiser, 0o755)  # what a plain `mkdir` makes
    with pytest.raises(ConfigurationError, match=r"mode 0755.*chmod -R go-rwx"):
        _submit(task, tmp_path, "Team A")
    assert tree(organiser) == [] and tree(tmp_path / "results") == []
    os.chmod(organiser, 0o700)
    out = _submit(task, tmp_path, "Team A")
    for p in [organiser, *organiser.rglob("*")]:
        if p.is_file():
            assert p.stat().st_mode & 0o777 == 0o600, p
        elif p.is_dir():
            assert p.stat().st_mode & 0o077 == 0, p
    assert out.on_leaderboard


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_an_organiser_folder_of_another_user_is_refused(task: FakeTask, tmp_path: Path) -> None:
    organiser = tmp_path / "organiser"
    organiser.mkdir(mode=0o700)
    (organiser / "challenge.toml").write_text("per_day = 1000\n")
    os.chown(organiser, 65534, 65534)  # nobody: a folder another user planted in a shared parent
    with pytest.raises(ConfigurationError, match=r"belongs to .*65534.*not you"):
        _submit(task, tmp_path, "Team A")
    os.chown(organiser, os.getuid(), os.getgid())
    os.chown(organiser / "challenge.toml", 65534, 65534)
    with pytest.raises(ConfigurationError, match=r"challenge.toml belongs to"):
        _submit(task, tmp_path, "Team A")
    assert tree(tmp_path / "results") == []


# ------------------------------------------------------ item 5: organiser and public stores apart
def test_an_organiser_store_inside_the_results_or_sharing_the_tracking_uri_is_refused(task: FakeTask, tmp_path: Path, fresh_tracking_uri: str) -> None:
    with pytest.raises(ConfigurationError, match="overlap"):
        _submit(task, tmp_path, "Team A", organiser_dir=tmp_path / "results" / "organiser")
    with pytest.raises(ConfigurationError, match="is the public one"):
        _submit(task, tmp_path, "Team A", tracking_uri=fresh_tracking_uri, organiser_tracking_uri=fresh_tracking_uri)
    assert tree(tmp_path / "results") == [] and tree(tmp_path / "organiser") == []
    from lesionbench.leaderboard import build_leaderboard

    write_result(BINARY, make_manifest(BINARY), "enc", 1.0, tmp_path / "results", fractions=(1.0,))
    with pytest.raises(ConfigurationError, match="overlap"):
        build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "results", reveal=True, organiser_dir=tmp_path / "results" / "org", n_boot=0, n_perm=0)
    assert not (tmp_path / "lb").exists()


# ------------------------------------------------------- item 15: the public entry is the best
def test_a_bad_results_path_or_a_down_tracking_server_charges_nothing(task: FakeTask, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="nothing was recorded"):
        _submit(task, tmp_path, "Team A", results_dir=blocker / "results", organiser_dir=tmp_path / "organiser")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with pytest.raises(ConfigurationError, match="cannot be reached.*nothing was recorded"):
        _submit(task, tmp_path, "Team A", tracking_uri="http://127.0.0.1:18199")
    assert not list((tmp_path / "organiser").rglob("record.json"))  # no submission charged
    assert tree(tmp_path / "results") == []  # and nothing public written


def test_the_public_entry_is_always_the_ledgers_best(task: FakeTask, tmp_path: Path) -> None:
    first = _submit(task, tmp_path, "Team A", 0.3)
    folder = first.result_path.parent
    stale = {p.name: p.read_bytes() for p in folder.iterdir()}
    best = _submit(task, tmp_path, "Team A", 2.0)
    assert best.on_leaderboard
    for name, data in stale.items():  # a crash right after the ledger's record: the public entry is the old one
        (folder / name).write_bytes(data)
    later = _submit(task, tmp_path, "Team A", 0.5)
    assert not later.on_leaderboard
    entry = json.loads((folder / "result.json").read_text())["extra"]["submission"]
    assert entry["submission_id"] == best.submission_id
