"""Every protocol end to end through `lesionbench run` on tiny CT volumes, two encoders each: result.json,
MLflow parent and child runs, and leaderboard sections that never rank two protocols together."""

from __future__ import annotations

import json

import pytest
from test_cli_run import _ToyEncoder, _ToyTask, _write_cohort
from test_protocols import _TorchToy

from lesionbench.benchmark.encoders.plugins import ENCODERS, TASKS
from lesionbench.cli import main


@pytest.fixture
def toy(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _write_cohort(data)
    TASKS.names()
    ENCODERS.names()
    monkeypatch.setitem(TASKS._factories, "toy_blobs", _ToyTask)
    monkeypatch.setitem(ENCODERS._factories, "toy_stats", _ToyEncoder)
    monkeypatch.setitem(ENCODERS._factories, "toy_torch", lambda weights=None: _TorchToy(0, 4, "toy_torch"))
    monkeypatch.setitem(ENCODERS._factories, "toy_torch_wide", lambda weights=None: _TorchToy(1, 6, "toy_torch_wide"))
    monkeypatch.chdir(tmp_path)
    return data


def test_each_protocol_runs_end_to_end_with_two_encoders(toy, tmp_path, capsys) -> None:
    common = ["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--seeds", "0", "--n-boot", "20", "--results", "res"]
    cases = {
        "knn": (["--probe", "knn", "--fractions", "1.0"], ("toy_stats", "toy_torch")),
        "k-shot-knn": (["--probe", "knn", "--shots", "1", "3"], ("toy_stats", "toy_torch")),
        "k-shot-linear": (["--shots", "3"], ("toy_stats", "toy_torch")),
        "finetune-linear": (["--adapt", "finetune", "--fractions", "1.0", "--ft-epochs", "1", "--ft-batch-size", "24"], ("toy_torch", "toy_torch_wide")),
    }
    for folder, (args, encoders) in cases.items():
        for enc in encoders:
            assert main([*common, "--encoder", enc, *args]) == 0, (folder, enc)
            out = capsys.readouterr().out
            assert f"toy_blobs / {enc} / {folder}" in out
            result = json.loads((tmp_path / f"res/toy_blobs/1/{enc}/{folder}/result.json").read_text())
            assert result["extra"]["protocol"] == folder.split("-linear")[0].replace("k-shot-knn", "k-shot")
            if folder.startswith("k-shot"):
                assert {r["shots"] for r in result["runs"]} == {int(a) for a in args[args.index("--shots") + 1 :] if a.isdigit()}
                assert "   shots  seeds" in out  # the summary table is per k

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # absolute: MLflow caches stores by URI string
    runs = client.search_runs([client.get_experiment_by_name("lesionbench").experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags["lesionbench.level"] == "parent"]
    assert sorted(r.data.tags["lesionbench.protocol"] for r in parents) == sorted(["knn"] * 2 + ["k-shot"] * 4 + ["finetune"] * 2)
    kshot_children = [r for r in runs if r.data.tags["lesionbench.level"] == "child" and r.data.params.get("protocol") == "k-shot"]
    assert kshot_children and all("shots" in r.data.params for r in kshot_children)

    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import collect_results

    doc = build_document(collect_results(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", results_dir="res"), n_boot=20, n_perm=20, include_published=False)
    sections = {(t["name"], t["protocol"]): t for t in doc["tasks"]}
    assert set(sections) == {("toy_blobs", p) for p in cases}  # one section per protocol and probe: nothing ranked across them
    for folder, (_, encoders) in cases.items():
        assert sorted(e["encoder"] for e in sections[("toy_blobs", folder)]["entries"]) == sorted(encoders)


def test_conflicting_protocol_options_fail_before_any_work(toy, tmp_path, capsys) -> None:
    common = ["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--encoder", "toy_stats", "--results", "res", "--no-mlflow"]
    assert main([*common, "--fractions", "1.0", "--shots", "1"]) == 2
    assert "give one" in capsys.readouterr().err
    assert main([*common, "--ft-epochs", "3"]) == 2
    assert "--adapt finetune" in capsys.readouterr().err
    assert main([*common, "--adapt", "finetune"]) == 2  # toy_stats has no torch network
    assert "torch_module" in capsys.readouterr().err
    assert main([*common, "--probe", "knm"]) == 2
    assert "Did you mean 'knn'" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()
