"""Every protocol end to end on lesionbench's own synthetic CT cohort, through the real CLI (issue 15's proof).

One small cohort (`lesionbench synth --patients 12`: with seed 0 the smallest cohort whose train, val and test
splits each hold both classes of synthetic_malignancy) is generated once for the module. On it `lesionbench
run` scores the k-NN probe, k-shot (linear and k-NN), fine-tuning and `lesionbench robustness`, each with two
encoders, all logging to one MLflow sqlite store; `lesionbench leaderboard build` then renders them, and the
page is loaded in headless Chromium. The encoders are cheap on purpose (the module takes about 30 s of CPU, a
third of it generating the cohort): the example third-party encoder and two tiny 3D CNNs registered for the
test, whose networks `--adapt finetune` trains.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lesionbench_example_encoder", reason="the example encoder is not installed (pip install ./examples/lesionbench-example-encoder)")

from torch import nn  # noqa: E402

from lesionbench.benchmark.encoders.plugins import ENCODERS, get_task  # noqa: E402
from lesionbench.benchmark.types import EncoderMeta, PatchSpec  # noqa: E402
from lesionbench.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "leaderboard"))
from _lb_fixtures import _chromium, _page_requests, needs_chromium  # noqa: E402

TASK = "synthetic_malignancy"
SURVIVAL = "synthetic_survival"
#: With seed 0, 12 patients (29 lesions) is the smallest cohort whose train, val and test splits all hold
#: benign and malignant lesions (11 patients leave val benign only); test_the_cohort_is_the_smallest_... pins it.
PATIENTS = 12
HISTOGRAM = "example-intensity-histogram"
#: Part of tiny-cnn-a's version, which the page shows: it must stay inert text (no script runs, nothing loads).
HOSTILE = '<img src="http://evil.invalid/x.png" onerror="document.body.setAttribute(\'data-pwned\',1)">'


class TinyCNN:
    """A tiny 3D CNN (one conv, batch norm, pooled features): fast frozen features and a network to fine-tune."""

    def __init__(self, name: str, seed: int, width: int, version: str = "1"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv3d(1, width, 3, stride=2, padding=1), nn.BatchNorm3d(width), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten()
            )
        self.meta = EncoderMeta(name, version, width, patch=PatchSpec(size=(16, 16, 16), spacing_mm=(2.0, 2.0, 2.0)),
                                weights_sha256=f"{seed}" * 64, description="tiny 3D CNN for the tests")  # fmt: skip

    def torch_module(self) -> nn.Module:
        return self.net

    def encode(self, patches: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net.eval()(torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))).numpy()


#: protocol folder -> (extra `lesionbench run` arguments, encoders, the leaderboard's label of the section)
RUNS = {
    "knn": (["--probe", "knn", "--fractions", "1.0"], (HISTOGRAM, "tiny-cnn-a"), "k-NN probe"),
    "k-shot-linear": (["--shots", "1", "3"], (HISTOGRAM, "tiny-cnn-a"), "k-shot, linear probe (k labelled lesions per class)"),
    "k-shot-knn": (["--probe", "knn", "--shots", "1", "3"], (HISTOGRAM, "tiny-cnn-a"), "k-shot, k-NN probe (k labelled lesions per class)"),
    "finetune-linear": (["--adapt", "finetune", "--fractions", "1.0", "--ft-epochs", "1", "--ft-batch-size", "8"],
                        ("tiny-cnn-a", "tiny-cnn-b"), "fine-tuned, linear probe"),  # fmt: skip
}
ROBUST_ENCODERS = (HISTOGRAM, "tiny-cnn-a")


@dataclass(frozen=True)
class Bench:
    cohort: Path
    results: Path
    tracking_uri: str
    site: Path
    version: str
    outputs: dict[str, str]  # "<protocol folder> <encoder>" -> what the CLI printed
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """The cohort, every protocol's runs, the robustness runs and the leaderboard, made once.

    Under pytest-xdist (CI runs ``-n 2``) the module's tests may land on both workers: the first one makes
    everything in the session's shared folder under a lock, the other reads it (pytest-xdist's recipe).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "synthetic-protocols"
    else:
        root = tmp_path_factory.mktemp("synthetic-protocols")
    root.mkdir(exist_ok=True)
    with open(root.parent / "synthetic-protocols.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "done.json"
        if not done.is_file():
            for old in root.iterdir():  # a worker that failed half way leaves its files: start clean
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            done.write_text(json.dumps(_make_everything(root)))
        made = json.loads(done.read_text())
    return Bench(root / "cohort", root / "results", _uri(root), root / "site", made["version"], made["outputs"], made["seconds"])


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"  # absolute: MLflow caches stores by URI string


def _make_everything(root: Path) -> dict:
    cohort, results, uri = root / "cohort", root / "results", _uri(root)
    outputs: dict[str, str] = {}
    seconds: dict[str, float] = {}

    def cli(key: str, argv: list[str]) -> None:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            rc = main(["-q", *argv])
        seconds[key] = round(time.perf_counter() - start, 2)
        assert rc == 0, (key, out.getvalue())
        outputs[key] = out.getvalue()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_CACHE", str(root / "cache"))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        ENCODERS.names()  # load the entry points first, so the test encoders are not overwritten later
        mp.setitem(ENCODERS._factories, "tiny-cnn-a", lambda weights=None: TinyCNN("tiny-cnn-a", 1, 4, "1" + HOSTILE))
        mp.setitem(ENCODERS._factories, "tiny-cnn-b", lambda weights=None: TinyCNN("tiny-cnn-b", 2, 6))
        cli("synth", ["synth", "--patients", str(PATIENTS), "--out", str(cohort), "--workers", "2"])
        common = ["--task", TASK, "--data-dir", str(cohort / TASK), "--seeds", "0", "--n-boot", "20", "--results", str(results), "--tracking-uri", uri]
        for folder, (args, encoders, _) in RUNS.items():
            for enc in encoders:
                cli(f"{folder} {enc}", ["run", *common, "--encoder", enc, *args])
        # the cohort's one test patient is censored before 2 years: the 2-year AUC has no case (it crashed once)
        cli("survival knn", ["run", *common, "--task", SURVIVAL, "--data-dir", str(cohort / SURVIVAL), "--encoder", HISTOGRAM,
                             "--probe", "knn", "--fractions", "1.0"])  # fmt: skip
        for enc in ROBUST_ENCODERS:
            cli(f"robustness {enc}", ["robustness", "--task", TASK, "--data-dir", str(cohort / TASK), "--encoder", enc, "--perturb", "shift,noise",
                                      "--repeats", "2", "--n-boot", "20", "--results", str(results), "--tracking-uri", uri])  # fmt: skip
        cli("leaderboard", ["leaderboard", "build", "--tracking-uri", uri, "--results", str(results), "--out", str(root / "site"), "--data-root", str(cohort),
                            "--n-boot", "20", "--n-perm", "20", "--no-published"])  # fmt: skip
    version = get_task(TASK, data_dir=cohort / TASK).meta.version
    return {"version": version, "outputs": outputs, "seconds": seconds}


def _result_dir(bench: Bench, enc: str, folder: str) -> Path:
    return bench.results / TASK / bench.version / enc / folder


def test_the_cohort_is_the_smallest_whose_splits_hold_both_classes(bench: Bench) -> None:
    man = pd.read_csv(bench.cohort / TASK / "manifest.csv")
    assert man["patient_id"].nunique() == PATIENTS
    assert man.groupby("split")["label"].nunique().to_dict() == {"train": 2, "val": 2, "test": 2}
    index = man["patient_id"].str[1:].astype(int)
    for n in range(1, PATIENTS):  # patient i depends only on (seed, i): the first n patients are the n-patient cohort
        classes = man[index < n].groupby("split")["label"].nunique()
        assert len(classes) < 3 or classes.min() < 2, n


@pytest.mark.parametrize("folder", list(RUNS))
def test_each_protocol_writes_its_result_json(bench: Bench, folder: str) -> None:
    args, encoders, _ = RUNS[folder]
    for enc in encoders:
        assert f"{TASK} / {enc} / {folder}" in bench.outputs[f"{folder} {enc}"]
        result = json.loads((_result_dir(bench, enc, folder) / "result.json").read_text())
        assert result["extra"]["protocol"] == _protocol(folder) and result["encoder"]["name"] == enc
        assert result["probe"] == folder.rsplit("-", 1)[-1] and result["extra"]["bootstrap_unit"] == "patient"
        assert result["task"]["version"] == bench.version  # the cohort's size and seed name the results
        if folder.startswith("k-shot"):
            assert sorted(r["shots"] for r in result["runs"]) == [1, 3]
        else:
            assert [r["fraction"] for r in result["runs"]] == [1.0]
        for run in result["runs"]:
            assert np.isfinite(run["metrics"]["auc"]["value"]), (folder, enc, run)
            assert (_result_dir(bench, enc, folder) / run["predictions_path"]).is_file()
    if folder.startswith("finetune"):
        assert result["encoder"]["trainable"] and ["adapt", "finetune"] in result["encoder"]["settings"]


def test_robustness_writes_its_result_per_encoder(bench: Bench) -> None:
    for enc in ROBUST_ENCODERS:
        doc = json.loads((_result_dir(bench, enc, "robustness.json")).read_text())
        assert doc["encoder"]["name"] == enc and doc["n_test"] == 3 and set(doc["perturbations"]) == {"shift", "noise"}
        for block in doc["perturbations"].values():
            assert 0.0 <= block["prediction_change"]["value"] <= 1.0 and np.isfinite(block["cosine"]["value"])


def test_mlflow_holds_the_runs_of_every_protocol_and_encoder(bench: Bench) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(bench.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("lesionbench").experiment_id], max_results=1000)
    parents = sorted((r.data.tags["lesionbench.protocol"], r.data.tags["lesionbench.probe"], r.data.tags["lesionbench.encoder"])
                     for r in runs if r.data.tags.get("lesionbench.level") == "parent" and r.data.tags["lesionbench.task"] == TASK)  # fmt: skip
    assert parents == sorted((_protocol(f), f.rsplit("-", 1)[-1], e) for f, (_, encs, _) in RUNS.items() for e in encs)
    for r in runs:
        if r.data.tags.get("lesionbench.level") == "parent":
            names = {a.path for a in client.list_artifacts(r.info.run_id)}
            assert "result.json" in names, r.info.run_name
    children = [r for r in runs if r.data.tags.get("lesionbench.level") == "child"]
    assert sum(r.data.params.get("protocol") == "k-shot" for r in children) == 4 * 2  # 2 encoders x 2 probes x k = 1, 3
    robust = sorted(r.data.tags["lesionbench.encoder"] for r in runs if r.data.tags.get("lesionbench.protocol") == "robustness")
    assert robust == sorted(ROBUST_ENCODERS)


def test_the_leaderboard_ranks_every_protocol_in_its_own_section(bench: Bench) -> None:
    doc = json.loads((bench.site / "leaderboard.json").read_text())
    sections = {t["protocol"]: t for t in doc["tasks"] if t["name"] == TASK}
    assert len(doc["tasks"]) == len(RUNS) + 1 and set(sections) == set(RUNS)  # one section per protocol and probe
    for folder, (_, encoders, _) in RUNS.items():
        sec = sections[folder]
        assert sec["name"] == TASK and sec["version"] == bench.version and not sec["unranked"]
        assert sorted(e["encoder"] for e in sec["entries"]) == sorted(encoders)
        assert all(e["rank"] >= 1 and len(e["rank_interval"]) == 2 for e in sec["entries"]), sec["entries"]
    assert sections["k-shot-linear"]["shots"] == 3 and sections["k-shot-knn"]["shots"] == 3
    (robust,) = doc["robustness"]
    assert sorted(e["encoder"] for e in robust["encoders"]) == sorted(ROBUST_ENCODERS)
    assert sorted({r["encoder"] for r in robust["rows"]}) == sorted(ROBUST_ENCODERS)

    html = (bench.site / "index.html").read_text(encoding="utf-8")
    slug = "task-synthetic-malignancy-" + re.sub(r"[^a-z0-9]+", "-", bench.version.lower())
    for folder, (_, encoders, label) in RUNS.items():
        part = html.split(f'<section class="task" id="{slug}-{folder}"><h2>{TASK} <span class="protocol">· {label}</span>', 1)[1]
        part = part.split("</section>", 1)[0]
        assert part.count('<table class="rank">') == 1
        assert sorted(re.findall(r'<span class="enc">([^<]+)</span>', part.split('<table class="rank">', 1)[1].split("</table>", 1)[0])) == sorted(encoders)
    robust_part = html.split("Robustness of features and predictions", 1)[1]
    assert {enc for enc in ROBUST_ENCODERS if f'<tr><td class="l enc">{enc}</td>' in robust_part} == set(ROBUST_ENCODERS)


@needs_chromium
def test_the_page_renders_in_chromium_inert_and_offline(bench: Bench, tmp_path: Path) -> None:
    # the detectors work: the encoder version pasted raw into a page runs its script and fetches
    control = tmp_path / "control.html"
    control.write_text(f"<html><body>{HOSTILE}</body></html>")
    assert 'data-pwned="' in _chromium("--dump-dom", control.as_uri()).stdout
    assert "http://evil.invalid/x.png" in _page_requests(control.as_uri(), tmp_path)

    page = bench.site / "index.html"
    assert "v1&lt;img src=" in page.read_text(encoding="utf-8")  # the hostile version reached the page, as text
    dom = _chromium("--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-pwned="' not in dom.stdout and "<script" not in dom.stdout.lower()  # no script ran, none is on the page
    assert _page_requests(page.resolve().as_uri(), tmp_path) == set()  # nothing loaded from the network
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom.stdout))
    for _, (_, _, label) in RUNS.items():
        assert f"{TASK} · {label}" in text, label
    assert "Robustness of features and predictions" in text


def test_knn_on_survival_runs_when_no_test_lesion_has_a_two_year_status(bench: Bench) -> None:
    man = pd.read_csv(bench.cohort / SURVIVAL / "manifest.csv")
    test = man[man["split"] == "test"]
    assert ((test["event"] == 0) & (test["time"] < 730)).all()  # every test lesion censored before 2 years
    assert f"{SURVIVAL} / {HISTOGRAM} / knn" in bench.outputs["survival knn"]
    result = json.loads((bench.results / SURVIVAL / bench.version / HISTOGRAM / "knn" / "result.json").read_text())
    (run,) = result["runs"]
    assert np.isnan(run["metrics"]["auc_2y"]["value"]) and np.isnan(run["metrics"]["c_index"]["value"])
    doc = json.loads((bench.site / "leaderboard.json").read_text())
    (sec,) = [t for t in doc["tasks"] if t["name"] == SURVIVAL]
    assert not sec["entries"] and [(u["encoder"], u["unranked_reason"]) for u in sec["unranked"]] == [(HISTOGRAM, "main metric undefined on the test split")]


def _protocol(folder: str) -> str:
    return "knn" if folder == "knn" else folder.rsplit("-", 1)[0]
