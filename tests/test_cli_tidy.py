"""The command line as a new user meets it (issue 22): -q/-v after the command, no third-party INFO lines,
a case-insensitive "did you mean", `tasks list` saying where each task's data is, `submit --template`."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from lesionbench.benchmark.errors import did_you_mean
from lesionbench.cli import _quiet_third_party, build_parser, main


@pytest.mark.parametrize(("argv", "quiet", "verbose"), [(["tasks"], False, 0), (["-q", "tasks"], True, 0), (["tasks", "-q"], True, 0),
                                                        (["tasks", "list", "-vv"], False, 2), (["leaderboard", "build", "--out", "x", "-q"], True, 0)])  # fmt: skip
def test_log_options_after_the_command(argv: list[str], quiet: bool, verbose: int) -> None:
    args = build_parser().parse_args(argv)
    assert (args.quiet, args.verbose) == (quiet, verbose)


def test_third_party_info_lines_are_dropped() -> None:
    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "NumExpr defaulting to 2 threads.", None, None)

    assert not _quiet_third_party(record("numexpr.utils", logging.INFO))
    assert _quiet_third_party(record("numexpr.utils", logging.WARNING)) and _quiet_third_party(record("lesionbench.x", logging.INFO))


def test_did_you_mean_ignores_case() -> None:
    assert did_you_mean("RADIOMICS", ["radiomics", "fmcib"]) == " Did you mean 'radiomics'?"
    assert did_you_mean("Synthetic_Sit", ["synthetic_site", "deeplesion_site"]) == " Did you mean 'synthetic_site'?"
    assert did_you_mean("zzzz", ["radiomics"]) == ""


def _cohort(root: Path) -> Path:
    assert main(["-q", "synth", "--patients", "2", "--workers", "1"]) == 0
    return root / "synthetic"


def test_tasks_list_says_prepared_and_where(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LESIONBENCH_DATA", str(tmp_path / "data"))
    assert main(["tasks", "list"]) == 0
    before = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[1:-1]}
    assert before["synthetic_site"][4] == "no" and before["luna16_malignancy"][4] == "no"
    assert before["luna16_malignancy"][5] == str(tmp_path / "data" / "luna16_malignancy")
    _cohort(tmp_path / "data")
    capsys.readouterr()
    assert main(["tasks", "list"]) == 0
    after = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[1:-1]}
    assert after["synthetic_site"][4] == "yes" and after["synthetic_site"][5] == str(tmp_path / "data" / "synthetic" / "synthetic_site")


def test_submit_template_lists_every_test_lesion(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LESIONBENCH_DATA", str(tmp_path / "data"))
    cohort = _cohort(tmp_path / "data")
    for name in ("synthetic_site", "synthetic_survival"):  # two patients hold no test lesion: make the second one's test
        man = pd.read_csv(cohort / name / "manifest.csv")
        man.loc[man["patient_id"] == man["patient_id"].max(), "split"] = "test"
        man.to_csv(cohort / name / "manifest.csv", index=False)
    assert main(["-q", "submit", "--template", "synthetic_site"]) == 0
    table = pd.read_csv("synthetic_site-template.csv")
    man = pd.read_csv(cohort / "synthetic_site" / "manifest.csv")
    assert sorted(table["lesion_id"]) == sorted(man.loc[man["split"] == "test", "lesion_id"]) and len(table) > 0
    assert table.shape[1] == 1 + 8 and "score_lung" in table and table.filter(like="score_").sum(axis=1).round(9).eq(1.0).all()
    assert main(["-q", "submit", "--template", "synthetic_survival", "surv.csv"]) == 0
    assert list(pd.read_csv("surv.csv").columns) == ["lesion_id", "risk"]
    assert main(["-q", "submit", "surv.csv"]) == 2 and "needs --task and --name" in capsys.readouterr().err


def test_help_texts_print_no_doubled_percent() -> None:
    import io
    from contextlib import redirect_stdout

    for command in ("run", "robustness", "extract", "compare", "submit"):
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main([command, "--help"]) == 0
        assert "%%" not in buf.getvalue(), command


def test_data_dir_at_the_cohort_root_names_the_task_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lesionbench.benchmark.errors import ManifestError
    from lesionbench.benchmark.encoders.plugins import get_task

    monkeypatch.setenv("LESIONBENCH_DATA", str(tmp_path / "data"))
    cohort = _cohort(tmp_path / "data")
    with pytest.raises(ManifestError, match=f"use --data-dir {cohort / 'synthetic_site'}"):
        get_task("synthetic_site", data_dir=cohort).manifest()


def test_offline_fmcib_never_downloads_and_suggests_the_control(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    from lesionbench.benchmark.errors import WeightsError
    from lesionbench.benchmark.encoders.plugins import get_encoder

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted while offline")

    monkeypatch.setenv("LESIONBENCH_OFFLINE", "1")
    monkeypatch.delenv("LESIONBENCH_WEIGHTS", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(WeightsError, match="forbids the download.*--random-init"):
        get_encoder("fmcib")


# ----------------------------------------------------------------------------- help text and defaults
def _parsers() -> list[tuple[str, "argparse.ArgumentParser"]]:
    """``lesionbench`` and every (sub-)command's parser, named as typed."""
    import argparse

    found, todo = [], [("", build_parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}".strip(), p) for sub, p in action.choices.items()]
    return found


def test_every_option_has_help_and_shows_its_default() -> None:
    import argparse

    from lesionbench.cli._common import show_default, shows_default

    problems = []
    for name, parser in _parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            what = f"lesionbench {name} {'/'.join(action.option_strings) or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                problems += [f"lesionbench {name} {c.dest}: no help" for c in action._choices_actions if not c.help]
                continue
            if action.help == argparse.SUPPRESS:
                assert action.default is argparse.SUPPRESS or action.dest in ("help", "version"), what  # a hidden alias changes no default
                continue
            if not action.help or not action.help.strip():
                problems.append(f"{what}: no help text")
                continue
            text = formatter._expand_help(action)
            if re.search(r"(?<!by )(?<!the )\bdefault\b(?!:)", text):  # "(default 16)", "linear (default)": one form, "default: X"
                problems.append(f"{what}: say a default as 'default: X': {text!r}")
            if shows_default(action):
                shown = f"default: {show_default(action.default)}"
                if shown not in text:
                    problems.append(f"{what}: help does not show {shown!r}: {text!r}")
                elif text.lower().count("default") != 1:  # a hand-written "(default)" beside the shown one: say it once
                    problems.append(f"{what}: help names a default more than once: {text!r}")
    assert not problems, "\n".join(problems)


def test_help_output_has_no_literal_double_percent() -> None:
    for name, parser in _parsers():
        assert "%%" not in parser.format_help(), name or "lesionbench"
        assert "%%" not in parser.format_usage(), name or "lesionbench"


def test_help_shows_defaults_as_typed() -> None:
    from lesionbench.cli._common import show_default

    assert show_default(Path("lesionbench-results")) == "./lesionbench-results" and show_default(Path("/input")) == "/input"
    assert show_default((1.0, 5.0)) == "1 5" and show_default(2.0) == "2" and show_default(1.5) == "1.5" and show_default(0) == "0"
    parsers = dict(_parsers())
    assert "(default: ./lesionbench-results)" in " ".join(parsers["run"].format_help().split())
    assert "(default: 1 5)" in " ".join(parsers["robustness"].format_help().split())


# ------------------------------------------------------------------- one name per concept: --results
#: The commands that read or write the results folder; --out named it on the first five (a hidden alias now).
RESULTS_COMMANDS = {"run": ["--task", "t", "--encoder", "e"], "compare": ["--task", "t", "--encoder-a", "a", "--encoder-b", "b"],
                    "demo": [], "robustness": ["--encoder", "e"], "evaluate-image": ["x.tar", "--task", "t"],
                    "evaluate-package": ["w.whl", "--task", "t"]}  # fmt: skip


def test_results_is_the_one_name_of_the_results_folder() -> None:
    import argparse

    named = {}
    for name, parser in _parsers():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if action.dest == "results":
                named[name] = action.option_strings
            assert not {"--out", "-o"} & set(action.option_strings) or action.dest != "results", name  # --out: what else it writes
            assert "--output" not in action.option_strings or name == "serve-contract", name  # the contract's /output only
    assert named == {c: ["--results"] for c in [*RESULTS_COMMANDS, "submit", "select", "leaderboard build"]}


@pytest.mark.parametrize("command", sorted(RESULTS_COMMANDS))
def test_out_still_names_the_results_folder_where_it_did(command: str) -> None:
    parser = build_parser()
    args = parser.parse_args([command, *RESULTS_COMMANDS[command], "--out", "old"])
    assert args.results == Path("old") and args.deprecated_options == {"--out": "--results"}
    assert parser.parse_args([command, *RESULTS_COMMANDS[command], "--results", "new"]).results == Path("new")
    assert parser.parse_args([command, *RESULTS_COMMANDS[command]]).results == Path("lesionbench-results")
    sub = dict(_parsers())[command]
    assert not re.search(r"--out\b(?!-)", sub.format_help()) and "--results DIR" in sub.format_help()


def test_the_old_flag_warns_once_naming_the_new_one(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["compare", "--task", "synthetic_site", "--encoder-a", "a", "--encoder-b", "b", "--out", str(tmp_path), "--out", str(tmp_path / "r")]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 2  # nothing there to compare
    warned = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warned == ["--out is deprecated here and will be removed: use --results (same value)."]
    assert str(tmp_path / "r") in capsys.readouterr().err  # the last one given counts, as for any option
    caplog.clear()
    assert main(["compare", "--task", "synthetic_site", "--encoder-a", "a", "--encoder-b", "b", "--results", str(tmp_path)]) == 2
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_extract_writes_to_out_and_output_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["extract", "t.csv", "-o", "f.csv"]).out == Path("f.csv")
    assert parser.parse_args(["extract", "t.csv", "--out", "f.csv"]).out == Path("f.csv")
    old = parser.parse_args(["extract", "t.csv", "--output", "f.csv"])
    assert old.out == Path("f.csv") and old.deprecated_options == {"--output": "-o/--out"}
    assert main(["extract", "t.csv"]) == 2 and "needs -o/--out FILE" in capsys.readouterr().err


# ----------------------------------------------------------------------- names: case and where the data is
@pytest.mark.parametrize(("argv", "hint"), [(["run", "--task", "LUNA16_malignancy", "--encoder", "radiomics"], "'luna16_malignancy'"),
                                            (["run", "--task", "synthetic_site", "--encoder", "RADIOMICS"], "'radiomics'"),
                                            (["extract", "--task", "Synthetic_Site", "-o", "x.csv"], "'synthetic_site'"),
                                            (["prepare", "LUNA16_Malignancy", "--raw", "x"], "'luna16_malignancy'")])  # fmt: skip
def test_a_name_in_another_case_gets_did_you_mean(argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert f"Did you mean {hint}?" in capsys.readouterr().err


def test_compare_suggests_the_task_and_encoder_names_it_has_results_of(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "luna16_malignancy" / "v1" / "radiomics" / "linear").mkdir(parents=True)
    assert main(["compare", "--task", "LUNA16_Malignancy", "--encoder-a", "a", "--encoder-b", "b", "--results", str(tmp_path)]) == 2
    assert "Did you mean 'luna16_malignancy'?" in capsys.readouterr().err
    assert main(["compare", "--task", "luna16_malignancy", "--encoder-a", "Radiomics", "--encoder-b", "b", "--results", str(tmp_path)]) == 2
    assert "Did you mean 'radiomics'?" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["luna16_malignancy", "lung1_survival", "kits_malignancy"])  # three ways of reading a manifest
def test_data_dir_at_the_data_root_names_the_task_folder(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lesionbench.benchmark.encoders.plugins import get_task
    from lesionbench.benchmark.errors import ManifestError

    root = tmp_path / "data"
    monkeypatch.setenv("LESIONBENCH_DATA", str(root))
    root.mkdir()
    with pytest.raises(ManifestError, match=f"{root} is the data root .*its own folder {root / name}, which is not prepared"):
        get_task(name, data_dir=root).manifest()
    (root / name).mkdir()
    (root / name / "manifest.csv").write_text("lesion_id\n")
    with pytest.raises(ManifestError, match=f"use --data-dir {root / name} "):
        get_task(name, data_dir=root).manifest()


# ------------------------------------------------------------------------------ offline: no download path
def test_offline_idc_download_never_connects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket
    import urllib.request

    from lesionbench.benchmark.errors import DataPreparationError
    from lesionbench.tasks import _idc
    from lesionbench.tasks.lung1 import CLINICAL

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted while offline")

    monkeypatch.setenv("LESIONBENCH_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    series = pd.DataFrame({"PatientID": ["LUNG1-001"], "Modality": ["CT"], "series_size_MB": [60.0], "SeriesInstanceUID": ["1.2.3"]})
    plan = _idc.DownloadPlan("lung1", "nsclc_radiomics", series, CLINICAL, "v1")
    with pytest.raises(DataPreparationError, match="LESIONBENCH_OFFLINE/HF_HUB_OFFLINE forbids downloads.*--dry-run"):
        _idc.download(plan, tmp_path / "raw", client=object())
    assert not (tmp_path / "raw").exists()
    assert _idc.fetch_clinical(CLINICAL, tmp_path) is None


def test_no_mlflow_info_lines_after_the_cli_set_up_logging(tmp_path: Path) -> None:
    """MLflow logs through its own stderr handler ("Creating initial MLflow database tables..."): quiet after main()."""
    import os
    import subprocess
    import sys

    script = ("from lesionbench.cli import main; main(['tasks', 'list']); import mlflow; "
              "mlflow.set_tracking_uri('sqlite:///fresh.db'); mlflow.search_experiments()")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "fresh.db").is_file(), proc.stderr[-2000:]
    assert not [ln for ln in proc.stderr.splitlines() if " INFO " in f" {ln} " and "lesionbench" not in ln], proc.stderr
