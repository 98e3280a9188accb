"""The command line as a new user meets it (issue 22): -q/-v after the command, no third-party INFO lines,
a case-insensitive "did you mean", `tasks list` saying where each task's data is, `submit --template`."""

from __future__ import annotations

import logging
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
