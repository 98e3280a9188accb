"""Every shell command the README and docs/*.md show runs, as documented, on the synthetic cohort (issue 22).

A documented command that stops working fails here, not in a new user's first hour. Each command found in a
```bash block is classified in :data:`PLAN`: run (in the order the documents give them, in one working
folder, through the real CLI) or skipped with the reason. A command missing from the plan, or a plan entry
no document shows any more, fails :func:`test_every_documented_command_is_planned`, so the table cannot rot.

Placeholders a user replaces are replaced the same way here (``my_manifest.csv``, ``seeds.csv``,
files the test writes from the cohort; ``predictions.csv`` is what the documented
``submit --template`` writes; ``rider/manifest.csv``: the synthetic cohort's
test-retest twin); FMCIB's released weights are not in CI, so ``--encoder fmcib --weights model_weights.torch``
runs as ``--encoder fmcib --random-init`` (the same network, seeded random weights), as the README suggests.
The default (CI) run is small: a 26-patient cohort, and :data:`SMALL` settings (one seed, 50 bootstrap
resamples, one perturbation draw) appended to the commands that take them; the commands that need a
4096-d ResNet-50 on CPU are marked ``slow``. ``pytest -m slow`` runs every planned command as written on the
same small cohort (settings as documented: about 10 minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from lesionbench.cli import main

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
#: With seed 0 the smallest cohort whose test split holds 2 patients (a submission's public/private halves need them).
PATIENTS = 26
#: Settings appended in the default run where a command does not give them itself (option -> values).
SMALL = {
    "run": {"--seeds": ["0"], "--n-boot": ["50"]},
    "compare": {"--n-boot": ["50"], "--n-perm": ["50"]},
    "robustness": {"--repeats": ["1"], "--n-boot": ["50"]},
    "leaderboard build": {"--n-boot": ["50"], "--n-perm": ["50"]},
}
WEIGHTS = "the command needs FMCIB's released weights (Zenodo record 10528450), which CI does not download"
FMCIB_CPU = "fmcib-random-init is a 4096-d ResNet-50: about 1 s per lesion and perturbation on 2 CPU cores"


@dataclass(frozen=True)
class Plan:
    """How the test runs one documented command: ``skip`` holds the reason it does not; ``slow`` runs it only under -m slow."""

    skip: str = ""
    slow: str = ""


PLAN: dict[str, Plan] = {
    # README: install and CI
    'python3 -m venv .venv && .venv/bin/pip install -q "torch==2.13.0" && .venv/bin/pip install -q -e . && .venv/bin/lesionbench demo':
        Plan(skip="installs packages; the demo itself is tested in tests/test_demo.py"),
    "bash .ci/run": Plan(skip="this is CI itself (it runs this test)"),
    # README: tasks, validate, extract
    "lesionbench validate my_manifest.csv --task synthetic_malignancy": Plan(),
    "lesionbench extract seeds.csv --encoder fmcib --weights model_weights.torch -o features.parquet": Plan(slow=FMCIB_CPU),
    "lesionbench extract --task synthetic_site --encoder fmcib-random-init -o features.csv": Plan(slow=FMCIB_CPU),
    # README: scoring
    "lesionbench run --task synthetic_malignancy --encoder radiomics": Plan(),
    "lesionbench run --task synthetic_malignancy --encoder fmcib-random-init": Plan(slow=FMCIB_CPU),
    "lesionbench compare --task synthetic_malignancy --encoder-a radiomics --encoder-b fmcib-random-init": Plan(slow=FMCIB_CPU),
    "lesionbench run --task luna16_malignancy --encoder fmcib --weights model_weights.torch --fractions 1.0 0.1":
        Plan(skip="needs the LUNA16 scans and LIDC-IDRI labels (tests/test_tasks_luna16.py covers the task) and " + WEIGHTS),
    "lesionbench run --task synthetic_malignancy --encoder fmcib-random-init --probe knn": Plan(slow=FMCIB_CPU),
    "lesionbench run --task synthetic_malignancy --encoder fmcib-random-init --shots 1 5 10": Plan(slow=FMCIB_CPU),
    "lesionbench run --task synthetic_malignancy --encoder fmcib-random-init --adapt finetune":
        Plan(skip="fine-tunes a 4096-d ResNet-50 end to end: meant for a GPU (tests/test_protocols_synthetic.py fine-tunes tiny CNNs through the same CLI)"),
    # README: robustness
    "lesionbench robustness --task synthetic_malignancy --encoder radiomics": Plan(),
    "lesionbench robustness --task synthetic_malignancy --encoder fmcib-random-init --perturb shift,noise,retest": Plan(slow=FMCIB_CPU),
    "lesionbench robustness --retest-manifest rider/manifest.csv --encoder fmcib --weights model_weights.torch": Plan(slow=FMCIB_CPU),
    # README: leaderboard and submissions
    "lesionbench leaderboard build --out site/": Plan(),
    "lesionbench submit --template synthetic_site predictions.csv": Plan(),
    'lesionbench submit --task synthetic_site predictions.csv --name "my team"': Plan(),
    'lesionbench select --task synthetic_site --name "my team" sub-0002 sub-0005': Plan(),
    "lesionbench leaderboard build --out final/ --reveal": Plan(),
    # docs/byo-encoder.md
    "pip install ./my-package": Plan(skip="my-package is the reader's own; CI installs the example plug-in (examples/lesionbench-example-encoder)"),
    "lesionbench extract seeds.csv --encoder my-ct-model -o features.parquet": Plan(),
    # docs/scale-out.md: real cohorts on clusters
    'pip install "lesionbench[dask]"': Plan(skip="installs packages (CI installs the dask extra)"),
    "lesionbench run --task deeplesion_site lung1_survival --encoder fmcib ct-fm voco-b --dask local:4":
        Plan(skip="needs DeepLesion and LUNG1 and the zoo's weights; tests/test_dask.py runs the same CLI on Dask with a synthetic cohort"),
    "lesionbench extract --task deeplesion_site --encoder fmcib --dask tcp://scheduler:8786 -o features.parquet":
        Plan(skip="needs DeepLesion, a running scheduler at scheduler:8786 and " + WEIGHTS),
    "lesionbench run --task deeplesion_site --encoder fmcib ct-fm --dask-cluster cluster.yaml":
        Plan(skip="needs DeepLesion, a batch scheduler (tests/test_slurm.py starts one where it can) and the zoo's weights"),
    "cd /project/$USER && python -m venv lb && . lb/bin/activate": Plan(skip="cluster set-up on a shared filesystem"),
    "export LESIONBENCH_CACHE=/project/$USER/lesionbench-cache": Plan(skip="cluster set-up on a shared filesystem"),
    "lesionbench run --task deeplesion_site --encoder fmcib ct-fm voco-b suprem --dask-cluster cluster.yaml --results /project/$USER/results":
        Plan(skip="needs DeepLesion, a batch scheduler and the zoo's weights"),
    "export LESIONBENCH_CACHE=/mnt/shared/lesionbench-cache": Plan(skip="cloud set-up on a shared filesystem"),
    "lesionbench run --task deeplesion_site --encoder fmcib ct-fm --dask tcp://SCHEDULER:8786 --results /mnt/shared/results":
        Plan(skip="needs DeepLesion, a running scheduler and the zoo's weights"),
    '.venv/bin/pip install -q -e ".[server]" && .venv/bin/lesionbench serve --demo': Plan(skip='installs into a venv and starts a long-running server: the challenge-server tests (tests/server) start it in-process and drive every step'),
    'pip install -e ".[server]"': Plan(skip='installs the package; CI installs the test extra, which includes the server extra'),
    'lesionbench serve --demo': Plan(skip='a long-running server: the challenge-server tests (tests/server) start it in-process and drive every step'),
    'export LESIONBENCH_TOKEN=lb_...': Plan(skip="a participant's token from a running server (tests/server/test_server_client.py uses one)"),
    'lesionbench submit --server http://127.0.0.1:8000 --phase 2 predictions.csv --wait': Plan(skip='needs a running server; tests/server drive the client against one'),
    'lesionbench submissions --server http://127.0.0.1:8000 --phase 2': Plan(skip='needs a running server; tests/server drive the client against one'),
    'H="Authorization: Bearer $ORGANISER_TOKEN"; S=https://challenge.example.org/api/v1': Plan(skip="an organiser's deployment; the API tests make these calls in-process"),
    'curl -H "$H" -X POST $S/challenges -d \'{"slug":"nodules-2027","title":"Nodule malignancy 2027","team_signup":"open"}\' -H \'content-type: application/json\'': Plan(skip="an organiser's deployment; the API tests make these calls in-process"),
    'curl -H "$H" -X POST $S/challenges/nodules-2027/phases -H \'content-type: application/json\' -d \'{"name":"sanity","kind":"sanity","task":"luna16_malignancy","quota_per_window":10}\'': Plan(skip="an organiser's deployment; the API tests make these calls in-process"),
    'curl -H "$H" -X POST $S/challenges/nodules-2027/phases -H \'content-type: application/json\' -d \'{"name":"main","kind":"public","task":"luna16_malignancy","quota_per_window":5,"quota_window_hours":24,"quota_total":100,"max_concurrent":2,"final_selection_n":2}\'': Plan(skip="an organiser's deployment; the API tests make these calls in-process"),
    'curl -H "$H" -X POST $S/phases/2/state/open': Plan(skip="an organiser's deployment; the API tests make these calls in-process"),
    'export LESIONBENCH_DATABASE_URL=postgresql+psycopg://lesionbench@db.internal/lesionbench': Plan(skip='a production database; CI runs the server tests on a loopback PostgreSQL'),
    'export LESIONBENCH_SECRET_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(48))")': Plan(skip='production set-up'),
    'lesionbench db upgrade': Plan(skip='needs the production database above; tests/server/test_server_db.py upgrades a fresh one'),
    'lesionbench serve --folder /srv/lesionbench --host 127.0.0.1 --port 8000 --secure-cookies': Plan(skip='a long-running server: the challenge-server tests (tests/server) start it in-process and drive every step'),
    'lesionbench worker --folder /srv/lesionbench': Plan(skip='a long-running worker: the fault tests run workers in-process and as processes'),
    'PYTHONPATH=. python -m pytest -q tests/leaderboard/test_integrity_private.py tests/leaderboard/test_integrity_forged.py': Plan(skip='runs tests that the suite runs itself'),
}  # fmt: skip


@dataclass(frozen=True)
class Documented:
    """One command of a shell block: where it is written and what it says (comments stripped, lines joined)."""

    where: str
    command: str


def documented_commands() -> list[Documented]:
    """Every command of every ```bash / ```sh / ```shell / ```console block, in document order."""
    found: list[Documented] = []
    fence = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for m in fence.finditer(text):
            if m.group("lang") not in ("bash", "sh", "shell", "console"):
                continue
            first = text[: m.start("body")].count("\n") + 1
            body = re.sub(r"\\\n", " ", m.group("body"))  # continuation lines join (line numbers: the block's first)
            for offset, line in enumerate(body.splitlines()):
                line = line.strip().removeprefix("$ ")
                if not line or line.startswith("#"):
                    continue
                found.append(Documented(f"{doc}:{first + offset}", _normalise(line)))
    return found


def _normalise(line: str) -> str:
    """The command without its trailing comment, its spacing collapsed (quotes kept as written)."""
    quote, cut = "", len(line)
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            cut = i
            break
    return " ".join(line[:cut].split())


def test_every_documented_command_is_planned() -> None:
    documented = documented_commands()
    assert len(documented) >= 20  # the parser found the blocks
    unplanned = [f"{d.where}: {d.command}" for d in documented if d.command not in PLAN]
    assert not unplanned, "documented commands without a plan (add each to PLAN: run it, or skip it with the reason):\n" + "\n".join(unplanned)
    stale = sorted(set(PLAN) - {d.command for d in documented})
    assert not stale, f"PLAN entries no document shows any more (remove them): {stale}"
    assert all(len(p.skip) > 15 for p in PLAN.values() if p.skip)  # a skip says why


# ------------------------------------------------------------------ running them
def _argv(command: str, cohort: Path, *, small: bool) -> list[str]:
    """The CLI arguments of a documented ``lesionbench ...`` command, placeholders replaced (see the module docstring)."""
    text = command.replace("--encoder fmcib --weights model_weights.torch", "--encoder fmcib --random-init")
    text = text.replace("--encoder my-ct-model", "--encoder example-intensity-histogram")
    text = text.replace("rider/manifest.csv", shlex.quote(str(cohort / "retest" / "manifest.csv")))
    argv = shlex.split(text)[1:]
    key = "leaderboard build" if argv[:2] == ["leaderboard", "build"] else argv[0]
    for option, values in (SMALL.get(key, {}) if small else {}).items():
        if option not in argv:
            argv += [option, *values]
    return ["-q", *argv]


def _write_inputs(cohort: Path, cwd: Path) -> None:
    """The files the documents ask the reader to bring (but the predictions: `submit --template`), made from the synthetic cohort."""
    man = pd.read_csv(cohort / "synthetic_malignancy" / "manifest.csv")
    base = cohort / "synthetic_malignancy"
    for col in ("image_path", "mask_path"):
        man[col] = [str((base / p).resolve()) for p in man[col]]
    man.to_csv(cwd / "my_manifest.csv", index=False)
    man[["lesion_id", "image_path", "coordX", "coordY", "coordZ"]].to_csv(cwd / "seeds.csv", index=False)


def _run_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, full: bool) -> dict[str, float]:
    data = tmp_path / "data"
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.setenv("LESIONBENCH_DATA", str(data))
    monkeypatch.chdir(cwd)
    cohort = data / "synthetic"
    start = time.perf_counter()
    assert main(["-q", "synth", "--patients", str(PATIENTS), "--workers", "2"]) == 0
    logger.info("synth --patients %d: %.1f s", PATIENTS, time.perf_counter() - start)
    _write_inputs(cohort, cwd)
    failures, seconds = [], {}
    for doc in documented_commands():
        plan = PLAN[doc.command]
        if plan.skip or (plan.slow and not full) or not doc.command.startswith("lesionbench "):
            continue
        argv = _argv(doc.command, cohort, small=not full)
        if argv[1] == "select":  # the example selects a team's 2nd and 5th submissions: make them
            for _ in range(4):
                assert main(["-q", "submit", "--task", "synthetic_site", "predictions.csv", "--name", "my team"]) == 0
        start = time.perf_counter()
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except Exception:  # a traceback where the CLI should print one error line: a failure to report too
                rc = -1
                err.write(traceback.format_exc())
        seconds[doc.command] = round(time.perf_counter() - start, 1)
        logger.info("%s: %s s (%s)", doc.where, seconds[doc.command], " ".join(argv))
        if rc != 0:
            failures.append(f"{doc.where}: `{doc.command}` (run as {argv}) exited {rc}: {err.getvalue().strip()[-600:]}")
    assert not failures, "documented commands that fail:\n" + "\n".join(failures)
    return seconds


def test_the_documented_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = _run_documented(tmp_path, monkeypatch, full=False)
    assert "lesionbench robustness --task synthetic_malignancy --encoder radiomics" in seconds
    assert (tmp_path / "work" / "site" / "index.html").is_file() and (tmp_path / "work" / "features.parquet").is_file()


@pytest.mark.slow
def test_the_documented_commands_run_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = _run_documented(tmp_path, monkeypatch, full=True)
    assert "lesionbench run --task synthetic_malignancy --encoder fmcib-random-init" in seconds


def test_licence_and_citation_files_match_the_package() -> None:
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence and "END OF TERMS AND CONDITIONS" in licence
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == project["license"]["text"] == "Apache-2.0"
    assert str(cff["version"]) == project["version"]
    assert any(r.get("doi") == "10.1038/s42256-024-00807-9" for r in cff["references"])  # Pai et al. 2024
