"""`lesionbench run` and `lesionbench compare` end to end on tiny CT volumes with a toy patch encoder.

Feature extraction is the fmcib helper's ``lesionbench.benchmark.encoders.features``; until that lands these
tests are skipped (the scorer itself is covered in test_scorer.py / test_tracking.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lesionbench.benchmark.encoders.features")

from lesionbench.benchmark.data.manifest import ManifestTask  # noqa: E402
from lesionbench.benchmark.encoders.plugins import ENCODERS, TASKS  # noqa: E402
from lesionbench.benchmark.types import EncoderMeta, PatchSpec, TaskKind, TaskMeta  # noqa: E402
from lesionbench.cli import main  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class _ToyTask(ManifestTask):
    meta = TaskMeta(
        name="toy_blobs",
        version="1",
        kind=TaskKind.BINARY,
        description="bright vs dim blobs in tiny CT volumes",
        main_metric="auc",
        metrics=("auc", "average_precision"),
        class_names=("dim", "bright"),
    )


class _ToyEncoder:
    """Patch statistics as features; ``noise`` adds per-lesion noise so two encoders differ."""

    def __init__(self, noise: float = 0.0, name: str = "toy_stats", weights=None):
        self.noise = noise
        self.meta = EncoderMeta(name, "1", 4, patch=PatchSpec(size=(6, 6, 6), spacing_mm=(2.0, 2.0, 2.0)))

    def encode(self, patches: np.ndarray) -> np.ndarray:
        p = patches[:, 0]
        centre = p[:, 2:4, 2:4, 2:4].mean(axis=(1, 2, 3))
        rng = np.random.default_rng(np.round(centre * 1e6).astype(np.int64) % (2**31))
        feats = np.column_stack([centre, p.mean(axis=(1, 2, 3)), p.std(axis=(1, 2, 3)), np.zeros(len(p))])
        return (feats + self.noise * rng.normal(size=feats.shape)).astype(np.float32)


def _write_cohort(root, n_patients: int = 60):
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_patients):
        vol = rng.normal(-800, 20, size=(16, 16, 16)).astype(np.float32)
        img_rows = []
        for j, (z, y, x) in enumerate(((4, 4, 4), (11, 11, 11))):
            label = int(rng.random() < 0.5)
            vol[z - 2 : z + 2, y - 2 : y + 2, x - 2 : x + 2] = rng.normal(200 if label else -100, 60)
            img_rows.append((j, z, y, x, label))
        img = sitk.GetImageFromArray(vol)
        img.SetSpacing((2.0, 2.0, 2.0))
        path = root / f"p{p:03d}.nii.gz"
        sitk.WriteImage(img, str(path))
        split = "train" if p < 36 else ("val" if p < 48 else "test")
        for j, z, y, x, label in img_rows:
            pt = img.TransformIndexToPhysicalPoint((x, y, z))
            rows.append({"lesion_id": f"p{p:03d}_{j}", "patient_id": f"p{p:03d}", "image_path": path.name,
                         "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2], "split": split, "label": label})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _write_cohort(data)
    TASKS.names()  # load built-ins first, then add the toy plug-ins for this test only
    ENCODERS.names()
    monkeypatch.setitem(TASKS._factories, "toy_blobs", _ToyTask)
    monkeypatch.setitem(ENCODERS._factories, "toy_stats", _ToyEncoder)
    monkeypatch.setitem(ENCODERS._factories, "toy_noisy", lambda weights=None: _ToyEncoder(noise=3.0, name="toy_noisy"))
    monkeypatch.chdir(tmp_path)
    return data


def test_run_logs_to_mlflow_and_compare(toy, tmp_path, capsys) -> None:
    common = ["--task", "toy_blobs", "--data-dir", str(toy), "--fractions", "1.0", "0.5", "--seeds", "0", "1", "--n-boot", "50", "--results", "res"]
    assert main(["-q", "run", *common, "--encoder", "toy_stats"]) == 0
    out = capsys.readouterr().out
    assert "toy_blobs / toy_stats / linear" in out and f"MLflow: sqlite:///{(tmp_path / 'mlflow.db').resolve()}" in out
    assert (tmp_path / "mlflow.db").is_file()  # the default store: a sqlite file in the working directory
    result = json.loads((tmp_path / "res/toy_blobs/1/toy_stats/linear/result.json").read_text())
    assert {(r["fraction"], r["seed"]) for r in result["runs"]} == {(1.0, 0), (1.0, 1), (0.5, 0), (0.5, 1)}
    assert result["runs"][0]["metrics"]["auc"]["value"] > 0.9
    assert result["runs"][0]["params"]["n_features_dropped_constant"] == 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # absolute: MLflow caches stores by URI string
    runs = client.search_runs([client.get_experiment_by_name("lesionbench").experiment_id])
    levels = sorted(r.data.tags["lesionbench.level"] for r in runs)
    assert levels == ["child"] * 4 + ["parent"]
    # what tuned the runs is recorded: result.json, the parent's params, each child's params
    assert result["extra"]["validation"] == "fraction"
    assert {r.data.params.get("validation") for r in runs} == {"fraction"}

    assert main(["-q", "run", *common, "--encoder", "toy_noisy", "--no-mlflow", "--val", "full"]) == 0
    capsys.readouterr()
    noisy = json.loads((tmp_path / "res/toy_blobs/1/toy_noisy/linear/result.json").read_text())
    assert noisy["extra"]["validation"] == "full" and {r["params"]["n_val"] for r in noisy["runs"]} == {noisy["extra"]["n_lesions"]["val"]}
    assert main(["compare", "--task", "toy_blobs", "--encoder-a", "toy_stats", "--encoder-b", "toy_noisy", "--results", "res", "--data-dir", str(toy),
                 "--n-boot", "100", "--n-perm", "100"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    line = next(l for l in table.splitlines() if l.strip().startswith("auc"))
    assert float(line.split()[3]) > 0  # A - B
    assert "p (A!=B)" in table  # two-sided by default
    assert main(["compare", "--task", "toy_blobs", "--encoder-a", "toy_noisy", "--encoder-b", "toy_stats", "--results", "res", "--data-dir", str(toy),
                 "--n-boot", "0", "--n-perm", "100", "--alternative", "greater"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    line = next(l for l in table.splitlines() if l.strip().startswith("auc"))
    assert "p (A>B)" in table and float(line.split()[-1]) > 0.5  # the worse model is not better
    # every seed both runs have, one block each, then the differences over seeds
    assert main(["compare", "--task", "toy_blobs", "--encoder-a", "toy_stats", "--encoder-b", "toy_noisy", "--results", "res", "--data-dir", str(toy),
                 "--n-boot", "50", "--n-perm", "50", "--seed", "ALL"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert ", seed 0, " in table and ", seed 1, " in table and "over 2 seeds" in table
    aucs = [float(l.split()[3]) for l in table.splitlines() if l.strip().startswith("auc ") and "mean" not in l]
    mean = next(l for l in table.splitlines() if l.strip().startswith("auc mean A-B"))
    assert len(aucs) == 2 and float(mean.split()[3].rstrip(",")) == pytest.approx(sum(aucs) / 2, abs=1e-3)
    assert main(["compare", "--task", "toy_blobs", "--encoder-a", "a", "--encoder-b", "b", "--seed", "some"]) == 2


def test_run_reports_library_errors(toy, capsys) -> None:
    assert main(["run", "--task", "toy_blobz", "--encoder", "toy_stats", "--no-mlflow"]) == 2
    assert "Did you mean 'toy_blobs'" in capsys.readouterr().err
    code = main(["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--encoder", "toy_stats", "--fractions", "1.0", "1.5", "--seeds", "0", "--no-mlflow"])
    assert code == 2 and "fractions must lie in (0, 1]" in capsys.readouterr().err


def test_third_party_info_logs_stay_off_the_console(capsys) -> None:
    # PyRadiomics logs a line per lesion at INFO; the CLI's console handler drops those below WARNING
    import logging

    from lesionbench.cli import _quiet_third_party

    def rec(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "m", None, None)

    assert not _quiet_third_party(rec("radiomics.featureextractor", logging.INFO))
    assert _quiet_third_party(rec("radiomics.glcm", logging.WARNING))
    assert _quiet_third_party(rec("lesionbench.benchmark.encoders.features", logging.INFO))


def test_run_bad_sweep_and_missing_test_split_fail_before_extraction(toy, capsys, monkeypatch) -> None:
    import lesionbench.benchmark.encoders.features as features

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted for a run that cannot be scored")

    monkeypatch.setattr(features, "extract_features", no_extraction)
    base = ["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--encoder", "toy_stats", "--no-mlflow", "--fractions", "1.0"]
    assert main([*base, "--seeds", "-1"]) == 2
    err = capsys.readouterr().err
    assert "Seeds must be non-negative integers; got [-1]" in err and "Traceback" not in err
    assert main([*base, "--seeds", "0", "0"]) == 2
    assert "Each seed may be given once; [0] repeated" in capsys.readouterr().err
    m = pd.read_csv(toy / "manifest.csv")
    m.loc[m["split"] == "test", "split"] = "val"
    m.to_csv(toy / "manifest.csv", index=False)
    assert main([*base, "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "no lesion with split 'test' (its manifest has train 72, val 48)" in err and "Set split=test" in err


def test_probe_typo_suggests_the_name(toy, capsys) -> None:
    base = ["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--encoder", "toy_stats", "--no-mlflow"]
    assert main([*base, "--probe", "lineer", "--fractions", "1.0", "--seeds", "0"]) == 2
    assert "Unknown probe 'lineer'. Did you mean 'linear'?" in capsys.readouterr().err


def test_unreachable_tracking_server_warns_in_seconds_and_keeps_the_result(toy, capsys) -> None:
    import time
    import warnings

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["-q", "run", "--task", "toy_blobs", "--data-dir", str(toy), "--encoder", "toy_stats", "--fractions", "1.0",
                     "--seeds", "0", "--n-boot", "50", "--tracking-uri", "http://127.0.0.1:9/"])  # fmt: skip
    assert code == 0 and time.perf_counter() - t0 < 30  # MLflow's defaults retried for minutes
    assert any("MLflow logging to 'http://127.0.0.1:9/' failed" in str(w.message) for w in caught)
    assert (toy.parent / "lesionbench-results" / "toy_blobs" / "1" / "toy_stats" / "linear" / "result.json").is_file()
