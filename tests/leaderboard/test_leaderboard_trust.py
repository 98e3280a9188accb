"""What the leaderboard trusts: only its own experiments, only well-formed results with provenance, one
row per entry identity, ranking at one label fraction, no credentials in what it writes, and one clear
message (never a traceback) for a bad input."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from _lb_fixtures import BINARY, log_to_mlflow, make_manifest, write_result
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.leaderboard import build_leaderboard
from lesionbench.leaderboard.build import build_document
from lesionbench.leaderboard.collect import collect_results
from lesionbench.leaderboard.validate import ResultFileError, parse_result

FAST = {"n_boot": 20, "n_perm": 20}


def _doc(results: Path, **kw) -> dict:
    return build_document(collect_results(results_dir=results, **kw), **FAST)


def _edit(folder: Path, change) -> Path:
    """Rewrite ``folder/result.json`` through ``change(doc)``."""
    path = folder / "result.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings about what the build read (not the statistics' own, e.g. too few permutations)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and not r.name.endswith("_stats")]


# ------------------------------------------------------------------------- 13.2 foreign results
def _winner(folder: Path, manifest) -> Path:
    """The fake 'Winner': perfect AUC, dated 2099."""
    f = write_result(BINARY, manifest, "Winner", 50.0, folder.parent, folder=folder)

    def perfect(d: dict) -> None:
        d["created"] = "2099-01-01T00:00:00+00:00"
        for run in d["runs"]:
            run["metrics"]["auc"] = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}

    _edit(f, perfect)
    return f


def test_only_the_harness_experiment_is_read(fresh_tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=fresh_tracking_uri)
    ours = client.create_experiment("lesionbench", artifact_location=(tmp_path / "a1").as_uri())
    other = client.create_experiment("other-project", artifact_location=(tmp_path / "a2").as_uri())
    man = make_manifest(BINARY)
    log_to_mlflow(write_result(BINARY, man, "fmcib", 1.0, tmp_path / "r"), fresh_tracking_uri, ours)
    log_to_mlflow(_winner(tmp_path / "w" / "winner", man), fresh_tracking_uri, other)

    build_leaderboard(tmp_path / "lb", tracking_uri=fresh_tracking_uri, **FAST)
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert [e["encoder"] for e in doc["tasks"][0]["entries"]] == ["fmcib"]
    assert "Winner" not in (tmp_path / "lb" / "index.html").read_text()

    # Read on purpose, the Winner is still refused: dated in the future; one warning naming the run and the field.
    with caplog.at_level(logging.WARNING):
        items = collect_results(tracking_uri=fresh_tracking_uri, experiments=["lesionbench", "other-project"])
    assert [i.result.encoder.name for i in items] == ["fmcib"]
    (msg,) = [m for m in _warnings(caplog) if "Skipping" in m]
    assert "MLflow run" in msg and "created" in msg and "future" in msg

    from lesionbench.cli import main

    assert main(["-q", "leaderboard", "build", "--tracking-uri", fresh_tracking_uri, "--experiment", "other-project", "--out", str(tmp_path / "lb2"), "--n-boot", "10", "--n-perm", "10"]) == 0
    assert json.loads((tmp_path / "lb2" / "leaderboard.json").read_text())["tasks"] == []


def test_missing_experiment_is_said(fresh_tracking_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert collect_results(tracking_uri=fresh_tracking_uri, experiments=["nope"]) == []
    assert any("No experiment named 'nope'" in m for m in _warnings(caplog))


def _breakers() -> dict[str, tuple]:
    def seed_text(d):
        d["runs"][0]["seed"] = '0"><img src=x onerror=alert(1)>'

    return {
        "empty runs": (lambda d: d.__setitem__("runs", []), "runs"),
        "string metric": (lambda d: d["runs"][0]["metrics"]["auc"].__setitem__("value", "0.9"), "runs[0].metrics.auc.value"),
        "fraction as text": (lambda d: d["runs"][0].__setitem__("fraction", "1.0"), "runs[0].fraction"),
        "fraction above 1": (lambda d: d["runs"][0].__setitem__("fraction", 2.0), "runs[0].fraction"),
        "seed as markup": (seed_text, "runs[0].seed"),
        "unknown metric": (lambda d: d["runs"][0]["metrics"].__setitem__("<b>x</b>", {"value": 0.5}), "metrics key"),
        "CI reversed": (lambda d: d["runs"][0]["metrics"]["auc"].update(ci_low=0.9, ci_high=0.1), "runs[0].metrics.auc"),
        "AUC above 1": (lambda d: d["runs"][0]["metrics"]["auc"].__setitem__("value", 3.0), "runs[0].metrics.auc.value"),
        "no provenance": (lambda d: d.__setitem__("extra", {}), "extra.n_boot"),
        "no schema": (lambda d: d.pop("schema"), "schema"),
        "future date": (lambda d: d.__setitem__("created", "2099-01-01T00:00:00+00:00"), "created"),
        "not an object": (lambda d: d["runs"].__setitem__(0, 7), "runs[0]"),
    }


@pytest.mark.parametrize("case", list(_breakers()))
def test_malformed_result_is_skipped_with_one_warning_naming_file_and_field(case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    change, field = _breakers()[case]
    man = make_manifest(BINARY)
    write_result(BINARY, man, "good", 1.0, tmp_path)
    bad = _edit(write_result(BINARY, man, "bad", 1.5, tmp_path), change)
    with caplog.at_level(logging.WARNING):
        doc = _doc(tmp_path)
    assert [e["encoder"] for e in doc["tasks"][0]["entries"]] == ["good"]
    (msg,) = _warnings(caplog)
    assert str(bad) in msg and field in msg, msg


def test_fuzzed_result_files_are_one_warning_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Random bytes and every kind of truncation as result.json: skipped, one warning each, no traceback."""
    good = write_result(BINARY, make_manifest(BINARY), "good", 1.0, tmp_path / "r") / "result.json"
    raw = good.read_bytes()
    rng = random.Random(0)
    blobs = [rng.randbytes(rng.randint(0, 400)) for _ in range(20)]
    blobs += [raw[: rng.randint(0, len(raw) - 1)] for _ in range(20)]
    blobs += [b"", b"null", b"[]", b'"x"', b"{}", b"1e400", b"\xff\xfe{", b"[" * 5000 + b"]" * 5000]
    for i, blob in enumerate(blobs):
        (tmp_path / "r" / f"fuzz{i}").mkdir()
        (tmp_path / "r" / f"fuzz{i}" / "result.json").write_bytes(blob)
        with pytest.raises(ResultFileError, match=f"fuzz{i}"):
            parse_result(blob, str(tmp_path / "r" / f"fuzz{i}" / "result.json"))
    with caplog.at_level(logging.WARNING):
        items = collect_results(results_dir=tmp_path / "r")
    assert [i.result.encoder.name for i in items] == ["good"]
    skipped = [m for m in _warnings(caplog) if m.startswith("Skipping")]
    assert len(skipped) == len(blobs)
    for i in range(len(blobs)):
        assert sum(f"fuzz{i}/result.json" in m for m in skipped) == 1


def test_compare_on_a_truncated_result_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lesionbench.cli import main

    man = make_manifest(BINARY)
    for enc in ("a", "b"):
        write_result(BINARY, man, enc, 1.0, tmp_path)
    path = tmp_path / BINARY.name / BINARY.version / "b" / "linear" / "result.json"
    path.write_bytes(path.read_bytes()[:300])
    rc = main(["compare", "--task", BINARY.name, "--encoder-a", "a", "--encoder-b", "b", "--results", str(tmp_path), "--n-boot", "10", "--n-perm", "10"])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------- 13.9 CLI messages
def test_cli_build_survives_malformed_results_and_mathtext_names(tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from lesionbench.cli import main

    man = make_manifest(BINARY)
    write_result(BINARY, man, r"enc $\frac{1}{$ x", 1.0, tmp_path / "r", folder=tmp_path / "r" / "mathtext")
    write_result(BINARY, man, "ok", 0.8, tmp_path / "r")
    _edit(write_result(BINARY, man, "empty", 1.0, tmp_path / "r"), lambda d: d.__setitem__("runs", []))
    _edit(write_result(BINARY, man, "text", 1.0, tmp_path / "r"), lambda d: d["runs"][0].__setitem__("fraction", "all"))
    with caplog.at_level(logging.WARNING):
        rc = main(["-q", "leaderboard", "build", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb"), "--n-boot", "10", "--n-perm", "10"])
    err = capsys.readouterr().err
    assert rc == 0, err
    empty, text = _warnings(caplog)
    assert "Traceback" not in err and "empty/linear/result.json" in empty and "runs: empty" in empty
    assert "text/linear/result.json" in text and "runs[0].fraction: expected a finite number, got 'all'" in text
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert [e["encoder"] for e in doc["tasks"][0]["entries"]] == [r"enc $\frac{1}{$ x", "ok"]
    assert (tmp_path / "lb" / "index.html").read_text().count("data:image/png;base64,") == 2


def test_cli_build_on_unreachable_server_and_plain_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.cli import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    rc = main(["leaderboard", "build", "--tracking-uri", "http://alice:s3cret@127.0.0.1:9/?token=t0k", "--out", str(tmp_path / "lb")])
    err = capsys.readouterr().err
    assert rc == 2 and "Cannot read the MLflow store at http://***@127.0.0.1:9" in err, err
    assert "s3cret" not in err and "t0k" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "folder").mkdir()
    rc = main(["leaderboard", "build", "--tracking-uri", str(tmp_path / "folder"), "--out", str(tmp_path / "lb")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a plain path, not a tracking URI" in err and f"--results {tmp_path / 'folder'}" in err
    assert not (tmp_path / "lb").exists()  # a rejected input writes nothing


# ---------------------------------------------------------------------------- 13.3 credentials
def test_redact_uri() -> None:
    from lesionbench.benchmark.tracking.mlflow_sink import redact_uri

    assert redact_uri("postgresql://user:pass@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert redact_uri("https://user:tok@host/x?token=abc&x=1") == "https://***@host/x?token=***&x=1"
    assert redact_uri("failed: https://u:p@h/api?api_key=k#f") == "failed: https://***@h/api?api_key=***#f"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_no_credentials_in_what_the_build_writes_or_logs(fresh_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A tracking URI with a password and a token: the page, Markdown, JSON and logs show neither."""
    import mlflow.tracking
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=fresh_tracking_uri)
    exp = client.create_experiment("lesionbench", artifact_location=(tmp_path / "a").as_uri())
    log_to_mlflow(write_result(BINARY, make_manifest(BINARY), "fmcib", 1.0, tmp_path / "r"), fresh_tracking_uri, exp)
    secret_uri = "https://alice:s3cret@mlflow.example.org/?access_token=t0k3n"
    # the store answers from the sqlite file, whatever URI the leaderboard was given
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", lambda tracking_uri=None: MlflowClient(tracking_uri=fresh_tracking_uri))
    with caplog.at_level(logging.DEBUG):
        build_leaderboard(tmp_path / "lb", tracking_uri=secret_uri, **FAST)
    written = "".join(p.read_text() for p in (tmp_path / "lb").iterdir()) + caplog.text
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert doc["tasks"][0]["entries"][0]["provenance"]["location"].startswith("https://***@mlflow.example.org/?access_token=***#")
    assert "s3cret" not in written and "t0k3n" not in written


def test_tracking_warning_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.benchmark.tracking.mlflow_sink import log_result
    from lesionbench.benchmark.types import TaskResult

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    folder = write_result(BINARY, make_manifest(BINARY), "fmcib", 1.0, tmp_path)
    result = TaskResult.from_dict(json.loads((folder / "result.json").read_text()))
    with pytest.warns(UserWarning) as rec:
        assert log_result(result, folder, tracking_uri="http://bob:pw123@127.0.0.1:9", plots=False) is None
    text = " ".join(str(w.message) for w in rec)
    assert "pw123" not in text and "http://***@127.0.0.1:9" in text


# ----------------------------------------------------------------- 13.6 entry identity, 12.5 ranking
def test_a_newer_scratch_run_does_not_replace_the_real_entry(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "fmcib", 1.0, tmp_path / "a")
    write_result(BINARY, man, "radiomics", 0.6, tmp_path / "a")
    # 20% labels, --n-boot 0, newer, in another results folder: a scratch run of the same encoder
    write_result(BINARY, man, "fmcib", 3.0, tmp_path / "a" / "scratch", fractions=(0.2,), intervals=False, created="2026-11-29T09:00:00+00:00")
    t = _doc(tmp_path / "a")["tasks"][0]
    assert [(e["encoder"], e["fraction"]) for e in t["entries"]] == [("fmcib", 1.0), ("radiomics", 1.0)]
    assert t["entries"][0]["provenance"]["created"].startswith("2026-11-27")
    (u,) = t["unranked"]
    assert u["encoder"] == "fmcib" and u["fraction"] == 0.2 and u["rank"] is None
    assert "20% of the training labels" in u["unranked_reason"] and "ranking is at 100%" in u["unranked_reason"]
    assert u["label"] != t["entries"][0]["label"]
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")
    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA

    jsonschema.Draft202012Validator(LEADERBOARD_SCHEMA).validate(json.loads(json.dumps(_doc(tmp_path / "a"))))


def test_two_checkpoints_under_one_name_are_two_rows(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "fmcib", 1.0, tmp_path / "ck1", weights="a" * 64)
    write_result(BINARY, man, "fmcib", 0.4, tmp_path / "ck2", weights="b" * 64, seed=1)
    t = _doc(tmp_path)["tasks"][0]
    assert [e["label"] for e in t["entries"]] == ["fmcib · weights aaaaaaaa", "fmcib · weights bbbbbbbb"]
    assert [e["rank"] for e in t["entries"]] == [1, 2] and t["entries"][1]["comparison"]["versus"] == "fmcib · weights aaaaaaaa"


def test_runs_without_intervals_are_listed_not_ranked(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "with-ci", 0.5, tmp_path)
    write_result(BINARY, man, "no-ci", 2.0, tmp_path, intervals=False)
    t = _doc(tmp_path)["tasks"][0]
    assert [e["encoder"] for e in t["entries"]] == ["with-ci"]
    assert [(u["encoder"], u["unranked_reason"]) for u in t["unranked"]] == [("no-ci", "no confidence interval (scored with --n-boot 0)")]


def test_only_entries_at_the_headline_fraction_are_ranked(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "full", 0.8, tmp_path)
    write_result(BINARY, man, "half", 3.0, tmp_path, fractions=(0.5, 0.2))  # better, but on half the labels
    doc = _doc(tmp_path)
    t = doc["tasks"][0]
    assert t["fraction"] == 1.0 and [e["encoder"] for e in t["entries"]] == ["full"]
    assert t["unranked"][0]["encoder"] == "half" and "50%" in t["unranked"][0]["unranked_reason"]
    from lesionbench.leaderboard.render import render_html, render_markdown

    html, md = render_html(doc), render_markdown(doc)
    assert "<h3>Ranking at 100% of the training labels</h3>" in html and "Listed, not ranked" in html
    assert "| 1 | full | linear | 100% |" in md and "| half | linear | 50% |" in md


def test_scorer_refuses_a_second_checkpoint_in_the_same_results_folder(tmp_path: Path) -> None:
    import dataclasses

    from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
    from lesionbench.benchmark.scoring.scorer import evaluate_features

    task, X = fabricate("binary", n_lesions=80, signal=1.0, seed=3, name="fab_binary")
    enc = fabricated_encoder_meta(X.shape[1], "fmcib")
    kw = {"fractions": (1.0,), "seeds": (0,), "out_dir": tmp_path, "n_boot": 0, "progress": False}
    evaluate_features(task.manifest(), X, task.meta, encoder=dataclasses.replace(enc, weights_sha256="a" * 64), **kw)
    evaluate_features(task.manifest(), X, task.meta, encoder=dataclasses.replace(enc, weights_sha256="a" * 64), **kw)  # same checkpoint: fine
    with pytest.raises(ConfigurationError, match="other weights .* own --results folder"):
        evaluate_features(task.manifest(), X, task.meta, encoder=dataclasses.replace(enc, weights_sha256="b" * 64), **kw)


# ------------------------------------------------------------------------------ 12.9 wording
def test_page_says_what_the_interval_resamples_and_why_sd_is_dash(tmp_path: Path) -> None:
    man = make_manifest(BINARY)
    write_result(BINARY, man, "a", 1.0, tmp_path, extra={"validation": "fraction"})
    write_result(BINARY, man, "b", 0.5, tmp_path)
    build_leaderboard(tmp_path / "lb", results_dir=tmp_path, include_published=False, **FAST)
    html = (tmp_path / "lb" / "index.html").read_text()
    assert "CI over test patients" in html and "over test lesions" not in html
    assert "– at 100% of the labels, where every seed trains on the same subset" in html
    assert '<td><span class="sd">–</span></td>' in html
    # the validation split the probe was tuned on, when the result records it
    assert "<th class=\"l\">Validation</th>" in html and '<td class="l">fraction</td>' in html
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert [e["provenance"]["validation"] for e in doc["tasks"][0]["entries"]] == ["fraction", None]


def test_lesion_bootstrap_is_worded_as_lesions(tmp_path: Path) -> None:
    write_result(BINARY, make_manifest(BINARY), "a", 1.0, tmp_path, extra={"bootstrap_unit": "lesion"})
    build_leaderboard(tmp_path / "lb", results_dir=tmp_path, include_published=False, **FAST)
    assert "CI over test lesions" in (tmp_path / "lb" / "index.html").read_text()


def test_mathtext_in_a_name_is_drawn_as_text(tmp_path: Path) -> None:
    """13.9: matplotlib parses ``$...$`` as mathtext; ``$\\frac{`` made the page build fail."""
    from lesionbench.leaderboard.plots import curve_plot, forest_plot

    man = make_manifest(BINARY)
    write_result(BINARY, man, r"enc $\frac{1}{$ x", 1.0, tmp_path, folder=tmp_path / "m")
    write_result(BINARY, man, "cost $5 and $6", 0.5, tmp_path)
    t = _doc(tmp_path)["tasks"][0]
    assert forest_plot(t) and curve_plot(t)


def test_compare_on_fuzzed_result_files_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lesionbench.cli import main

    man = make_manifest(BINARY)
    for enc in ("a", "b"):
        write_result(BINARY, man, enc, 1.0, tmp_path)
    path = tmp_path / BINARY.name / BINARY.version / "b" / "linear" / "result.json"
    raw = path.read_bytes()
    rng = random.Random(1)
    for blob in [rng.randbytes(200), raw[: len(raw) // 2], b"", b"[]", b'{"task": 1}', b"\xff" + raw]:
        path.write_bytes(blob)
        rc = main(["compare", "--task", BINARY.name, "--encoder-a", "a", "--encoder-b", "b", "--results", str(tmp_path), "--n-boot", "10", "--n-perm", "10"])
        err = capsys.readouterr().err
        assert rc == 2 and str(path) in err and len(err.strip().splitlines()) == 1, (blob[:20], err)


def test_seed_mean_ignores_an_undefined_seed_like_the_curve(tmp_path: Path) -> None:
    """One seed with an undefined metric: the entry's mean over seeds is that of the defined seeds, as on the curve."""
    folder = write_result(BINARY, make_manifest(BINARY), "a", 1.0, tmp_path)

    def undefined(d: dict) -> None:
        run = next(r for r in d["runs"] if r["fraction"] == 1.0 and r["seed"] == 2)
        run["metrics"]["balanced_accuracy"] = {"value": None, "ci_low": None, "ci_high": None}

    _edit(folder, undefined)
    e = _doc(tmp_path)["tasks"][0]["entries"][0]
    point = next(p for p in e["curves"]["balanced_accuracy"] if p["fraction"] == 1.0)
    assert e["metrics"]["balanced_accuracy"]["mean"] == pytest.approx(point["mean"]) and e["metrics"]["balanced_accuracy"]["n_seeds"] == 2


def test_published_result_schema_agrees_with_the_checks(tmp_path: Path) -> None:
    """result.schema.json (written beside the page) accepts what run/submit write and rejects what the checks reject."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")
    from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
    from lesionbench.benchmark.scoring.scorer import evaluate_features, result_dir
    from lesionbench.leaderboard.schema import RESULT_SCHEMA

    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)
    schema = jsonschema.Draft202012Validator(RESULT_SCHEMA)
    task, X = fabricate("binary", n_lesions=80, signal=1.0, seed=3, name="fab_binary")
    res = evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(X.shape[1], "enc"), fractions=(1.0,), seeds=(0,), out_dir=tmp_path / "s", n_boot=5, progress=False)
    scored = result_dir(tmp_path / "s", "fab_binary", res.task.version, "enc", res.probe) / "result.json"
    fixture = write_result(BINARY, make_manifest(BINARY), "a", 1.0, tmp_path / "f") / "result.json"
    for path in (scored, fixture):
        schema.validate(json.loads(path.read_text()))
        parse_result(path.read_bytes(), str(path))
    semantic_only = {"CI reversed", "future date"}  # beyond a JSON Schema: the checks alone
    for case, (change, _) in _breakers().items():
        doc = json.loads(fixture.read_text())
        change(doc)
        with pytest.raises(ResultFileError):
            parse_result(json.dumps(doc), case)
        assert schema.is_valid(doc) == (case in semantic_only), case
    build_leaderboard(tmp_path / "lb", results_dir=tmp_path / "f", include_published=False, **FAST)
    assert json.loads((tmp_path / "lb" / "result.schema.json").read_text()) == json.loads(json.dumps(RESULT_SCHEMA))


def test_generated_weights_label_is_a_valid_result(tmp_path: Path) -> None:
    """fmcib-random-init records ``weights_sha256="random-init-seed-0"`` (no file to hash): its results are read."""
    write_result(BINARY, make_manifest(BINARY), "fmcib-random-init", 1.0, tmp_path, weights="random-init-seed-0")
    assert [e["encoder"] for e in _doc(tmp_path)["tasks"][0]["entries"]] == ["fmcib-random-init"]
