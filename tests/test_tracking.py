"""The MLflow sink, read back with MLflow's own client from a temporary sqlite store."""

from __future__ import annotations

import dataclasses
import os

import pandas as pd
import pytest

from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
from lesionbench.benchmark.scoring.scorer import evaluate_features, result_dir
from lesionbench.benchmark.tracking.mlflow_sink import LEVEL_TAG, log_result, resolve_tracking_uri

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
FAST = {"fractions": (1.0, 0.5), "seeds": (0, 1), "n_boot": 50, "c_grid": (1e-2, 1.0), "refine": False, "progress": False}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    logged = {}
    for kind in ("multiclass", "survival"):
        task, X = fabricate(kind, n_lesions=200, feature_dim=8, seed=2)
        meta = task.meta
        df = task.manifest()
        if kind == "survival":  # a published split with one leaked patient: reported as a tag
            counts = df[df["split"] == "train"].groupby("patient_id").size()
            pid = counts.index[counts > 1][0]
            df.loc[df.index[df["patient_id"] == pid][0], "split"] = "test"
            meta = dataclasses.replace(meta, published_split=True)
        r = evaluate_features(df, X, meta, encoder=fabricated_encoder_meta(8), out_dir=root / "out", **FAST)
        # the labels draw the per-run figures (a public store gets none: they show the labels)
        logged[kind] = (r, log_result(r, result_dir(root / "out", meta.name, meta.version, "fabricated", "linear"), tracking_uri=uri, labels=df))
        logged[f"{kind}-labels"] = df
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri), logged, root


@pytest.mark.parametrize("kind", ["multiclass", "survival"])
def test_parent_child_structure_params_metrics_artifacts(store, kind) -> None:
    client, logged, root = store
    result, pid = logged[kind]
    assert pid is not None
    parent = client.get_run(pid)
    assert parent.data.tags[LEVEL_TAG] == "parent" and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(pid)} >= {"result.json", "low_data_curve.png"}
    exp = parent.info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{pid}'")
    assert len(children) == len(result.runs) == 4
    by_key = {(float(c.data.params["fraction"]), int(c.data.params["seed"])): c for c in children}
    for run in result.runs:
        child = by_key[(run.fraction, run.seed)]
        assert child.data.tags[LEVEL_TAG] == "child"
        p = child.data.params
        assert p["task.name"] == result.task.name and p["task.version"] == result.task.version
        assert p["encoder.name"] == "fabricated" and p["encoder.version"] == "0" and p["encoder.weights_sha256"] == "0" * 64
        assert int(p["n_train"]) == run.n_train and float(p["C"]) == run.params["C"]
        assert p["split_hash"] == result.split_hash and p["subset_hash"] == run.params["subset_hash"]
        assert p["lesionbench_version"] == result.lesionbench_version
        for m, v in run.metrics.items():
            assert child.data.metrics[m] == pytest.approx(v.value)
            assert child.data.metrics[f"{m}_ci_low"] == pytest.approx(v.ci_low)
            assert child.data.metrics[f"{m}_ci_high"] == pytest.approx(v.ci_high)
        arts = {a.path for d in ("predictions", "subsets", "plots") for a in client.list_artifacts(child.info.run_id, d)}
        expected = {f"predictions/frac{run.fraction:g}_seed{run.seed}.csv", f"subsets/frac{run.fraction:g}_seed{run.seed}.csv", "plots/roc.png", "plots/pr.png"}
        if kind == "survival":
            expected.add("plots/km.png")
        assert expected <= arts


def test_logged_metrics_recomputed_from_logged_predictions(store, tmp_path) -> None:
    """What the issue's reviewer will do: download a child's predictions and recompute its metrics."""
    from lifelines.utils import concordance_index
    from sklearn.metrics import balanced_accuracy_score

    client, logged, _ = store
    for kind, metric in (("multiclass", "balanced_accuracy"), ("survival", "c_index")):
        result, pid = logged[kind]
        child = client.search_runs([client.get_run(pid).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'")[0]
        name = f"frac{float(child.data.params['fraction']):g}_seed{child.data.params['seed']}.csv"
        path = client.download_artifacts(child.info.run_id, f"predictions/{name}", str(tmp_path))
        from lesionbench.benchmark.scoring.run_one import attach_labels

        test = attach_labels(pd.read_csv(path, dtype={"lesion_id": str}).query("split == 'test'"), logged[f"{kind}-labels"], kind)
        if kind == "survival":
            value = concordance_index(test["time"], -test["risk"], test["event"])
        else:
            value = balanced_accuracy_score(test["label"], test.filter(like="score_").to_numpy().argmax(1))
        assert child.data.metrics[metric] == pytest.approx(value, abs=1e-12)


def test_leaked_patients_tagged(store) -> None:
    client, logged, _ = store
    result, pid = logged["survival"]
    tags = client.get_run(pid).data.tags
    assert tags["lesionbench.leaked_patients"] == "1" and tags["lesionbench.leaked_patient_ids"] == result.leaked_patients[0]
    assert client.get_run(logged["multiclass"][1]).data.tags["lesionbench.leaked_patients"] == "0"


def test_failed_mlflow_write_warns_and_keeps_result(store, tmp_path) -> None:
    _, logged, root = store
    result, _ = logged["multiclass"]
    rdir = result_dir(root / "out", result.task.name, result.task.version, "fabricated", "linear")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="MLflow logging .* failed .* local result .* is kept"):
        assert log_result(result, rdir, tracking_uri=f"sqlite:///{blocker / 'mlflow.db'}") is None
    assert (rdir / "result.json").is_file()


def test_default_tracking_uri(monkeypatch, tmp_path) -> None:
    """Default: mlflow.db in the working directory, made absolute (MLflow caches stores by URI string)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path.resolve() / 'x.db'}"
    assert resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"


def test_logging_that_fails_half_way_never_reaches_the_leaderboard(store, tmp_path, monkeypatch, caplog) -> None:
    import lesionbench.benchmark.tracking.mlflow_sink as tracking
    from lesionbench.leaderboard.collect import collect_results

    _, logged, root = store
    result, _ = logged["multiclass"]
    rdir = result_dir(root / "out", result.task.name, result.task.version, "fabricated", "linear")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert log_result(result, rdir, tracking_uri=uri, plots=False)
    real, calls = tracking._log_child, []

    def dies_on_the_second_child(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(tracking, "_log_child", dies_on_the_second_child)
    changed = dataclasses.replace(result, extra={**result.extra, "n_boot": 51})  # an unchanged one would not be logged again
    with pytest.warns(UserWarning, match="disk full"):
        assert log_result(changed, rdir, tracking_uri=uri, plots=False) is None
    with caplog.at_level("WARNING"):
        found = collect_results(tracking_uri=uri)
    assert len(found) == 1 and "its logging did not finish (status FAILED)" in caplog.text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parents = client.search_runs([client.get_experiment_by_name("lesionbench").experiment_id], filter_string=f"tags.`{LEVEL_TAG}` = 'parent'")
    failed = [r for r in parents if r.info.status == "FAILED"]
    # result.json is logged last: a parent killed outright (status left RUNNING) has none either
    assert len(failed) == 1 and "result.json" not in [a.path for a in client.list_artifacts(failed[0].info.run_id)]


def test_read_only_store_is_one_warning_line_not_a_sqlalchemy_traceback(store, tmp_path, capfd) -> None:
    """A store the user may read but not write (here: SQLite's read-only URI mode; a chmod 444 file gives the
    same error to a non-root user): one warning naming the cause, the result kept, nothing else printed."""
    import logging
    import warnings

    client, logged, root = store
    result, _ = logged["multiclass"]
    rdir = result_dir(root / "out", result.task.name, result.task.version, "fabricated", "linear")
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    read_only = f"sqlite:///file:{root / 'mlflow.db'}?mode=ro&uri=true"
    assert resolve_tracking_uri(read_only) == read_only  # SQLite's URI form is not made relative to the cwd
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        changed = dataclasses.replace(result, extra={**result.extra, "n_boot": 51})  # an unchanged one is found, not written
        assert log_result(changed, rdir, tracking_uri=read_only, plots=False) is None
    out, err = capfd.readouterr()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "MLflow logging" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "failed (OperationalError: attempt to write a readonly database); the local result" in messages[0]
    assert "Traceback" not in err + out and "SQLAlchemy database error" not in err + out and "INSERT INTO" not in err + out
    assert (rdir / "result.json").is_file() and len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before
    # the MLflow loggers are left as they were: nothing held back after the call
    assert not logging.getLogger("mlflow.store.db.utils").filters


@pytest.mark.parametrize("kind", ["multiclass", "survival"])
def test_a_figure_redrawn_for_the_next_run_is_the_one_drawn_fresh_for_it(store, kind, tmp_path) -> None:
    """The ROC/PR (and KM) figures are drawn once per result and redrawn per run: nothing of the run drawn before
    (curves, groups, title) may show in the next one, and each run gets its own picture."""
    import numpy as np
    from PIL import Image

    from lesionbench.benchmark.tracking.plots import RunPlots

    _, logged, root = store
    result, _ = logged[kind]
    rdir = result_dir(root / "out", result.task.name, result.task.version, "fabricated", "linear")
    first, second = result.runs[0], result.runs[-1]
    reused = RunPlots(result, logged[f"{kind}-labels"])
    for run, out in ((first, tmp_path / "first"), (second, tmp_path / "second")):
        out.mkdir()
        reused.save(run, rdir, out)
    (tmp_path / "fresh").mkdir()
    names = [p.name for p in RunPlots(result, logged[f"{kind}-labels"]).save(second, rdir, tmp_path / "fresh")]
    assert names == (["roc.png", "pr.png", "km.png"] if kind == "survival" else ["roc.png", "pr.png"])
    for name in names:
        pixels = {d: np.asarray(Image.open(tmp_path / d / name)) for d in ("first", "second", "fresh")}
        np.testing.assert_array_equal(pixels["second"], pixels["fresh"], err_msg=name)
        assert not np.array_equal(pixels["first"], pixels["second"]), name  # each run its own curves and title


# ------------------------------------------------------------------ issue 22: the store as a user browses it
def test_a_resumed_unchanged_result_is_not_logged_twice(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    task, X = fabricate("binary", n_lesions=80, feature_dim=4, seed=3)
    opts = {**FAST, "seeds": (0,), "fractions": (1.0,)}
    first = evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(4), out_dir=tmp_path / "out", **opts)
    rdir = result_dir(tmp_path / "out", task.meta.name, task.meta.version, "fabricated", "linear")
    pid = log_result(first, rdir, tracking_uri=uri)
    again = evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(4), out_dir=tmp_path / "out", **opts)  # resumed
    assert again.created >= first.created and log_result(again, rdir, tracking_uri=uri) == pid
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lesionbench").experiment_id
    assert len(client.search_runs([exp])) == 2  # one parent, one child: nothing logged the second time
    more = evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(4), out_dir=tmp_path / "out", **{**opts, "seeds": (0, 1)})
    assert log_result(more, rdir, tracking_uri=uri) not in (None, pid)  # a changed result is a new parent


def test_runs_carry_the_environment_and_lead_with_the_encoder(store) -> None:
    import numpy as np

    client, logged, _ = store
    result, pid = logged["multiclass"]
    env = result.extra["environment"]
    assert env["packages"]["numpy"] == np.__version__ and env["python"]
    parent = client.get_run(pid)
    tags = parent.data.tags
    assert tags["lesionbench.env.numpy"] == np.__version__
    assert tags.get("lesionbench.env.git.lesionbench") == env["git_commit"].get("lesionbench")
    if "lesionbench" in env["git_commit"]:  # a source checkout (CI's is)
        assert tags["mlflow.source.git.commit"] == env["git_commit"]["lesionbench"]
    assert parent.info.run_name.startswith("fabricated · linear · ") and tags["mlflow.note.content"].startswith("fabricated (linear) on ")
    child = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'")[0]
    assert child.info.run_name.startswith("fabricated · linear · frac")


def test_git_commit_of_a_checkout(tmp_path) -> None:
    import shutil
    import subprocess

    from lesionbench.benchmark.host import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert git_commit(tmp_path) is None  # not a checkout
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        (tmp_path / "pkg.py").write_text("x = 1\n")
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, env=env)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "pkg.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
    (tmp_path / "sub").mkdir()
    assert git_commit(tmp_path / "sub") is None  # only the checkout's own top level


def test_roc_and_pr_legends_name_the_classes_with_their_auc_and_ap(store, tmp_path) -> None:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from lesionbench.benchmark.scoring.scorer import read_predictions
    from lesionbench.benchmark.tracking.plots import RunPlots

    _, logged, root = store
    result, _ = logged["multiclass"]
    manifest = logged["multiclass-labels"]
    rdir = result_dir(root / "out", result.task.name, result.task.version, "fabricated", "linear")
    run = result.runs[0]
    plots = RunPlots(result, labels=manifest)
    plots.save(run, rdir, tmp_path)
    (roc_key,) = [k for k in plots._figures if k[0] == "roc"]
    texts = [t.get_text() for t in plots._figures[roc_key].legend.get_texts()]
    _, y, scores = read_predictions(rdir / run.predictions_path, result.task.kind, manifest)
    name = result.task.class_names[0]
    expected = roc_auc_score(pd.Series(y) == 0, scores[:, 0])
    assert f"{name}  AUC {expected:.3f}" in texts and len(texts) == len(roc_key[1])
    (pr_key,) = [k for k in plots._figures if k[0] == "pr"]
    assert all("  AP 0." in t or "  AP 1." in t for t in (t.get_text() for t in plots._figures[pr_key].legend.get_texts()))


def test_runs_show_when_the_compute_ran_not_when_it_was_logged(store) -> None:
    """MLflow's start and end times are the sweep's own (``extra["started"]``, ``created``), not the logging's."""
    from datetime import datetime

    client, logged, _ = store
    result, pid = logged["multiclass"]
    parent = client.get_run(pid)
    started = int(datetime.fromisoformat(result.extra["started"]).timestamp() * 1000)
    ended = int(datetime.fromisoformat(result.created).timestamp() * 1000)
    assert parent.info.start_time == started and parent.info.end_time == ended
    child = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'", max_results=1)[0]
    assert child.info.start_time == started and child.info.end_time == ended
