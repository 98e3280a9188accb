"""Kaggle-style submissions: every bad file is refused with a clear message and nothing written;
a valid file is scored exactly like the same predictions through the metric functions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from _lb_fixtures import BINARY, MULTI, SURV, make_manifest
from _submit_fixtures import FakeTask, predictions, tree, write_csv
from lesionbench.benchmark.errors import SubmissionError
from lesionbench.benchmark.types import TaskMeta
from lesionbench.leaderboard import build_leaderboard, public_private_split, submit, validate_predictions
from lesionbench.leaderboard.submissions.submit import MAX_SUBMISSION_BYTES, name_problems, name_slug


@pytest.fixture
def binary_task() -> FakeTask:
    return FakeTask(BINARY)


_predictions = predictions
_write = write_csv
_tree = tree


# ------------------------------------------------------------------------------- valid files
def test_valid_submission_scores_like_sklearn_on_public_and_private_parts(binary_task: FakeTask, tmp_path: Path, fresh_tracking_uri: str) -> None:
    preds = _predictions(binary_task).sample(frac=1.0, random_state=3)  # any row order
    preds["comment"] = "ignored"
    path = _write(preds, tmp_path / "preds.csv")
    out = submit(binary_task, path, name="Team A (v2)", results_dir=tmp_path / "results", tracking_uri=fresh_tracking_uri, n_boot=100)

    man = binary_task.manifest()
    test = man[man["split"] == "test"].merge(preds, on="lesion_id")
    part = public_private_split(BINARY, man)
    assert part.sum() == out.score.n_public and (~part).sum() == out.score.n_private
    for name, mask in (("public", part.loc[test["lesion_id"]].to_numpy()), ("private", ~part.loc[test["lesion_id"]].to_numpy())):
        y, s = test["label"].to_numpy()[mask], test["score"].to_numpy()[mask]
        got = getattr(out.score, name)
        assert got["auc"].value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got["average_precision"].value == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert got["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(y, s >= 0.5), abs=1e-12)
        assert got["auc"].ci_low <= got["auc"].value <= got["auc"].ci_high

    # Recorded like any run: a local result and an MLflow parent run with result.json.
    assert out.result_path == tmp_path / "results" / BINARY.name / BINARY.version / "submission-team-a-v2" / "submitted" / "result.json"
    stored = json.loads(out.result_path.read_text())
    assert stored["extra"]["submission"]["name"] == "Team A (v2)"
    assert stored["runs"][0]["metrics"]["auc"]["value"] == out.score.public["auc"].value
    from mlflow.tracking import MlflowClient

    run = MlflowClient(fresh_tracking_uri).get_run(out.run_id)
    assert run.data.tags["lesionbench.level"] == "parent" and run.data.tags["lesionbench.submission"] == "Team A (v2)"
    assert run.data.metrics["public_auc"] == pytest.approx(out.score.public["auc"].value)


def test_scored_identically_to_the_scorer_metric_functions(binary_task: FakeTask, tmp_path: Path) -> None:
    metrics = pytest.importorskip("lesionbench.benchmark.scoring.metrics", reason="the scorer's metrics module has not landed on this branch")
    preds = _predictions(binary_task)
    out = submit(binary_task, _write(preds, tmp_path / "p.csv"), name="x", results_dir=tmp_path / "r", n_boot=0)
    table = out.score.predictions
    pub = table["part"] == "public"
    ref = metrics.compute_metrics(BINARY.kind, table.loc[pub, "label"].to_numpy(), table.loc[pub, "score"].to_numpy())
    for m, v in ref.items():
        if m in out.score.public:
            assert out.score.public[m].value == pytest.approx(v, abs=1e-12)


def test_leaderboard_shows_public_score_and_private_only_with_reveal(binary_task: FakeTask, tmp_path: Path, fresh_tracking_uri: str) -> None:
    for name, q in (("strong", 2.0), ("weak", 0.3)):
        submit(binary_task, _write(_predictions(binary_task, q), tmp_path / f"{name}.csv"), name=name, tracking_uri=fresh_tracking_uri, n_boot=50)
    build_leaderboard(tmp_path / "pub", tracking_uri=fresh_tracking_uri, n_boot=20, n_perm=20)
    doc = json.loads((tmp_path / "pub" / "leaderboard.json").read_text())
    subs = doc["tasks"][0]["submissions"]
    assert [s["name"] for s in subs] == ["strong", "weak"] and [s["rank"] for s in subs] == [1, 2]
    assert all(s["private"] is None and s["public"]["auc"]["value"] is not None for s in subs)
    html = (tmp_path / "pub" / "index.html").read_text()
    assert "Private AUC" not in html and "Submissions" in html
    build_leaderboard(tmp_path / "org", tracking_uri=fresh_tracking_uri, reveal=True, n_boot=20, n_perm=20)
    doc = json.loads((tmp_path / "org" / "leaderboard.json").read_text())
    assert all(s["private"]["auc"]["value"] is not None for s in doc["tasks"][0]["submissions"])
    assert "Private AUC" in (tmp_path / "org" / "index.html").read_text()


def test_public_private_division_is_grouped_stratified_and_fixed(binary_task: FakeTask) -> None:
    man = binary_task.manifest()
    part = public_private_split(BINARY, man)
    test = man[man["split"] == "test"].set_index("lesion_id")
    assert set(part.index) == set(test.index)
    by_patient = pd.Series(part.to_numpy(), index=test.loc[part.index, "patient_id"].to_numpy()).groupby(level=0).nunique()
    assert (by_patient == 1).all(), "a patient must not straddle the public and private parts"
    rate_pub = test.loc[part[part].index, "label"].mean()
    rate_priv = test.loc[part[~part].index, "label"].mean()
    assert abs(rate_pub - rate_priv) < 0.15
    assert 0.35 < part.mean() < 0.65
    assert public_private_split(BINARY, man).equals(part)
    other = public_private_split(TaskMeta(**{**BINARY.__dict__, "version": "test-2"}), man)
    assert not other.equals(part)


def test_public_private_division_of_a_test_split_with_one_lesion_per_class() -> None:
    """A tiny multiclass test split (every class once) is divided by patient; scikit-learn's stratified split raised."""
    man = pd.DataFrame({"lesion_id": [f"L{i}" for i in range(6)], "patient_id": ["A", "A", "B", "C", "C", "D"],
                        "split": "test", "label": [0, 1, 2, 3, 4, 5]})  # fmt: skip
    part = public_private_split(MULTI, man)
    assert part.any() and not part.all()
    assert part.groupby(man.set_index("lesion_id").loc[part.index, "patient_id"].to_numpy()).nunique().eq(1).all()
    assert public_private_split(MULTI, man).equals(part)


def test_excel_style_csv_is_accepted(binary_task: FakeTask, tmp_path: Path) -> None:
    """A UTF-8 byte-order mark, CRLF line ends and padded cells are what spreadsheets write."""
    preds = _predictions(binary_task)
    text = "lesion_id, score\r\n" + "".join(f" {i} ,{s:.6f}\r\n" for i, s in zip(preds["lesion_id"], preds["score"]))
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    got = validate_predictions(path, BINARY, binary_task.manifest())
    assert got["score"].to_numpy() == pytest.approx(preds["score"].round(6).to_numpy())


def test_multiclass_rows_are_renormalised_within_tolerance(tmp_path: Path) -> None:
    task = FakeTask(MULTI)
    preds = _predictions(task)
    cols = [c for c in preds.columns if c.startswith("score_")]
    preds[cols] = (preds[cols] * 0.996).round(6)
    got = validate_predictions(_write(preds, tmp_path / "m.csv"), MULTI, task.manifest())
    assert np.allclose(got[cols].sum(axis=1), 1.0)
    # score_0..k-1 is accepted as well.
    renamed = preds.rename(columns={c: f"score_{i}" for i, c in enumerate(cols)})
    assert validate_predictions(_write(renamed, tmp_path / "n.csv"), MULTI, task.manifest()).shape == (len(preds), 5)


def test_survival_submission(tmp_path: Path) -> None:
    task = FakeTask(SURV)
    out = submit(task, _write(_predictions(task), tmp_path / "s.csv"), name="surv", results_dir=tmp_path / "r", n_boot=20)
    assert list(out.score.public) == ["c_index", "auc_2y"] and 0 <= out.score.public["c_index"].value <= 1


# ------------------------------------------------------------------------------- bad files
def _bad_cases(task: FakeTask, tmp: Path) -> dict[str, tuple[Path, str, str]]:
    """case -> (file, name, expected message fragment)."""
    good = _predictions(task)
    cases: dict[str, tuple[Path, str, str]] = {}

    def add(case: str, df: pd.DataFrame | None, fragment: str, *, name: str = "ok", raw: bytes | None = None) -> None:
        path = tmp / f"{case}.csv"
        if raw is not None:
            path.write_bytes(raw)
        else:
            df.to_csv(path, index=False)
        cases[case] = (path, name, fragment)

    add("missing_ids", good.iloc[5:], "5 of 120 test lesion(s) missing: 'L0090'")
    add("duplicates", pd.concat([good, good.iloc[[0]]]), "duplicate lesion_id(s) 'L0090'")
    nan = good.copy()
    nan.loc[3, "score"] = np.nan
    add("nan_empty", nan, "column 'score': empty value at line 5")
    nan2 = good.astype({"score": object})
    nan2.loc[3, "score"] = "NaN"
    add("nan_literal", nan2, "NaN or infinite value at line 5")
    inf = good.astype({"score": object})
    inf.loc[7, "score"] = "inf"
    add("inf", inf, "NaN or infinite value at line 9")
    text = good.astype({"score": object})
    text.loc[[2, 4], "score"] = ["high", "0.5%"]
    add("text_in_scores", text, "column 'score': not a number at lines 4, 6 (got 'high', '0.5%')")
    rng = good.copy()
    rng.loc[0, "score"] = 1.7
    add("out_of_range", rng, "outside [0, 1] (got 1.7)")
    unknown = good.copy()
    unknown.loc[0, "lesion_id"] = "NOT_A_LESION"
    add("unknown_id", unknown, "1 unknown lesion_id(s) not in task 'luna16_malignancy': 'NOT_A_LESION'")
    train = good.copy()
    train.loc[0, "lesion_id"] = "L0000"
    add("train_id", train, "are not test lesions of 'luna16_malignancy': 'L0000'")
    wrong = _predictions(FakeTask(MULTI))
    add("wrong_task_columns", wrong.assign(lesion_id=good["lesion_id"]), "looks like a submission for a multiclass task with 4 classes")
    add("wrong_task_risk", good.rename(columns={"score": "risk"}), "looks like a submission for a survival task")
    other_ids = good.copy()
    other_ids["lesion_id"] = [f"X{i}" for i in range(len(good))]
    add("wrong_task_ids", other_ids, "was this file made for another task or task version?")
    add("no_lesion_id", good.rename(columns={"lesion_id": "id"}), "missing column 'lesion_id'")
    add("empty_file", None, "file is empty", raw=b"")
    add("header_only", None, "header but no rows", raw=b"lesion_id,score\n")
    add("not_csv", None, "could not be parsed as CSV", raw=b"lesion_id,score\nL0090,0.5\nL0091,0.3,1,2\n")
    add("not_utf8", None, "not UTF-8", raw=b"lesion_id,score\n\xff\xfe,0.5\n")
    for case, name, frag in (
        ("name_traversal", "../../etc/passwd", "path separator"),
        ("name_dotdot", "..", "contains '..'"),
        ("name_backslash", "a\\b", "path separator"),
        ("name_control", "team\x00x", "control characters"),
        ("name_newline", "team\nx", "control characters"),
        ("name_long", "x" * 65, "at most 64"),
        ("name_empty", "", "name is empty"),
        ("name_hidden", ".hidden", "does not start with a letter or digit"),
    ):
        add(case, good, frag, name=name)
    return cases


CASES = [
    "missing_ids", "duplicates", "nan_empty", "nan_literal", "inf", "text_in_scores", "out_of_range", "unknown_id",
    "train_id", "wrong_task_columns", "wrong_task_risk", "wrong_task_ids", "no_lesion_id", "empty_file", "header_only",
    "not_csv", "not_utf8", "name_traversal", "name_dotdot", "name_backslash", "name_control", "name_newline",
    "name_long", "name_empty", "name_hidden",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_submission_is_rejected_and_nothing_written(case: str, binary_task: FakeTask, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    path, name, fragment = _bad_cases(binary_task, files)[case]
    results = tmp_path / "results"
    db = tmp_path / "mlflow" / "mlflow.db"
    before = _tree(tmp_path)
    with pytest.raises(SubmissionError) as ei:
        submit(binary_task, path, name=name, results_dir=results, tracking_uri=f"sqlite:///{db}", n_boot=10)
    msg = str(ei.value)
    assert fragment in msg, msg
    assert "submission rejected" in msg
    assert _tree(tmp_path) == before and not results.exists() and not db.exists()


def test_huge_file_is_refused_before_reading(binary_task: FakeTask, tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:  # sparse: 60 MiB on paper, nothing on disk
        fh.write(b"lesion_id,score\n")
        fh.truncate(MAX_SUBMISSION_BYTES + 10 * 2**20)
    with pytest.raises(SubmissionError, match=r"file is 60\.0 MiB; at most 50 MiB is accepted"):
        submit(binary_task, path, name="big", results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    small = _write(_predictions(binary_task), tmp_path / "small.csv")
    with pytest.raises(SubmissionError, match="at most 0 MiB"):
        validate_predictions(small, BINARY, binary_task.manifest(), max_bytes=100)


def test_every_problem_is_reported_at_once(binary_task: FakeTask, tmp_path: Path) -> None:
    good = _predictions(binary_task).astype({"score": object})
    bad = pd.concat([good.iloc[3:], good.iloc[[3]]])
    bad.iloc[0, 1] = "oops"
    bad.iloc[1, 1] = "nan"
    with pytest.raises(SubmissionError) as ei:
        submit(binary_task, _write(bad, tmp_path / "b.csv"), name="../x", results_dir=tmp_path / "r")
    problems = ei.value.problems
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    for fragment in ("path separator", "contains '..'", "duplicate lesion_id", "3 of 120 test lesion(s) missing", "not a number", "NaN or infinite"):
        assert fragment in joined


def test_multiclass_rows_far_from_one_are_refused(tmp_path: Path) -> None:
    task = FakeTask(MULTI)
    preds = _predictions(task)
    cols = [c for c in preds.columns if c.startswith("score_")]
    preds.loc[0, cols] = [0.9, 0.9, 0.1, 0.1]
    with pytest.raises(SubmissionError, match=r"do not sum to 1 at line 2 \(sums 2\)"):
        validate_predictions(_write(preds, tmp_path / "m.csv"), MULTI, task.manifest())


def test_names_and_slugs() -> None:
    assert name_problems("Team A (v2)") == [] and name_problems("x.y_z+1-2") == []
    assert name_slug("Team A (v2)") == "team-a-v2"
    assert name_problems("a/b") and name_problems("..") and name_problems("a\tb")


def test_feature_submission_is_validated_first(binary_task: FakeTask, tmp_path: Path) -> None:
    man = binary_task.manifest()
    feats = pd.DataFrame(np.random.default_rng(0).normal(size=(len(man), 3)), columns=["f0", "f1", "f2"])
    feats.insert(0, "lesion_id", man["lesion_id"])
    bad = feats.iloc[1:].astype({"f1": object})
    bad.iloc[0, 2] = "x"
    with pytest.raises(SubmissionError) as ei:
        submit(binary_task, _write(bad, tmp_path / "f.csv"), name="feat", kind="features", results_dir=tmp_path / "r")
    joined = "\n".join(ei.value.problems)
    assert "1 of 210 train/val/test lesion(s) missing: 'L0000'" in joined and "column 'f1': not a number" in joined
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------- CLI
def test_cli_submit(binary_task: FakeTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], empty_mlflow_db: Path) -> None:
    import lesionbench.benchmark.encoders.plugins as plugins
    from lesionbench.cli import main

    monkeypatch.setattr(plugins, "get_task", lambda name, **kw: binary_task if name == BINARY.name else plugins.TASKS.get(name))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    good = _write(_predictions(binary_task), tmp_path / "good.csv")
    rc = main(["-q", "submit", "--task", BINARY.name, str(good), "--name", "cli-team", "--results", str(tmp_path / "r"), "--no-mlflow"])
    out = capsys.readouterr().out
    assert rc == 0 and "accepted" in out and "public auc" in out
    assert (tmp_path / "r" / BINARY.name / BINARY.version / "submission-cli-team" / "submitted" / "result.json").exists()

    bad = _predictions(binary_task).iloc[1:]
    rc = main(["submit", "--task", BINARY.name, str(_write(bad, tmp_path / "bad.csv")), "--name", "a/b", "--results", str(tmp_path / "r2")])
    assert not (tmp_path / "mlflow.db").exists()
    err = capsys.readouterr().err
    assert rc == 2 and "submission rejected, 2 problem(s)" in err and "path separator" in err
    assert not (tmp_path / "r2").exists()
    assert main(["submit", "--task", BINARY.name, "--name", "x", "--results", str(tmp_path / "r3")]) == 2
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")  # an initialised store (migrations take seconds)
    shutil.copy(empty_mlflow_db, tmp_path / "lesionbench-organiser" / "mlflow.db")  # the organiser's own store
    assert main(["-q", "submit", "--task", BINARY.name, str(good), "--name", "default-store"]) == 0
    assert (tmp_path / "lesionbench-organiser" / BINARY.name / BINARY.version / "teams" / "default-store" / "sub-0001" / "record.json").is_file()
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts" / "lesionbench").is_dir()
    assert (tmp_path / "lesionbench-results" / BINARY.name / BINARY.version / "submission-default-store" / "submitted" / "result.json").is_file()
    assert main(["-q", "leaderboard", "build", "--out", "lb", "--n-boot", "10", "--n-perm", "10"]) == 0
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert [s["name"] for s in doc["tasks"][0]["submissions"]] == ["default-store"]


def test_feature_submission_is_scored_by_the_standard_probe(binary_task: FakeTask, tmp_path: Path) -> None:
    pytest.importorskip("lesionbench.benchmark.scoring.scorer", reason="the scorer (evaluate_features) has not landed on this branch")
    man = binary_task.manifest()
    rng = np.random.default_rng(0)
    signal = man["label"].to_numpy()[:, None] * 1.5
    feats = pd.DataFrame(signal + rng.normal(size=(len(man), 4)), columns=[f"f{i}" for i in range(4)])
    feats.insert(0, "lesion_id", man["lesion_id"])
    out = submit(binary_task, _write(feats.sample(frac=1.0, random_state=1), tmp_path / "f.csv"), name="feat", kind="features", results_dir=tmp_path / "r", n_boot=0)
    assert out.result.probe == "linear" and out.result.extra["submission"]["kind"] == "features"
    assert out.score.public["auc"].value > 0.75  # the planted signal is found
    table = out.score.predictions
    pub = (table["part"] == "public").to_numpy()
    assert out.score.public["auc"].value == pytest.approx(roc_auc_score(table["label"][pub], table["score"][pub]), abs=1e-12)


def test_cli_submit_to_a_registered_task(tmp_path: Path, capsys: pytest.CaptureFixture[str], empty_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lesionbench submit` resolves the real task by name and reads its prepared manifest (labels stay with the harness)."""
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.cli import main

    monkeypatch.chdir(tmp_path)  # the default results folder is ./lesionbench-results

    meta = get_task("synthetic_site").meta
    man = make_manifest(meta, seed=4)
    images = tmp_path / "images"
    images.mkdir()
    for p in man["image_path"].unique():  # placeholder volumes: submissions never read images
        (images / Path(p).name).touch()
    man["image_path"] = [f"../images/{Path(p).name}" for p in man["image_path"]]
    (tmp_path / "task").mkdir()
    man.to_csv(tmp_path / "task" / "manifest.csv", index=False)
    task = FakeTask(meta)
    task._manifest = man
    preds = _predictions(task)
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    (tmp_path / "lesionbench-organiser").mkdir(mode=0o700)
    shutil.copy(empty_mlflow_db, tmp_path / "lesionbench-organiser" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-q", "submit", "--task", "synthetic_site", "--data-dir", str(tmp_path / "task"), "--tracking-uri", uri, "--name", "site team"]
    assert main([*args, str(_write(preds, tmp_path / "p.csv"))]) == 0
    assert "public balanced_accuracy" in capsys.readouterr().out
    assert len(list((tmp_path / "lesionbench-results" / "synthetic_site").glob("*/submission-site-team/submitted/result.json"))) == 1
    # The same file for the binary task of the same cohort (same lesions) is refused as a wrong-task submission.
    (tmp_path / "mal").mkdir()
    man.assign(label=man["label"] % 2).to_csv(tmp_path / "mal" / "manifest.csv", index=False)
    rc = main(["submit", "--task", "synthetic_malignancy", "--data-dir", str(tmp_path / "mal"), "--no-mlflow", "--results", str(tmp_path / "r"), "--name", "x", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "looks like a submission for a multiclass task with 8 classes (e.g. " in err and "synthetic_site" in err
