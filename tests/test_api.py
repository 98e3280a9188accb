"""The top-level Python API (lesionbench.api, issue 22) on tiny CT volumes with an encoder object defined here
and never registered, as a notebook user would write one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lesionbench
from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.data.manifest import ManifestTask
from lesionbench.benchmark.types import EncoderMeta, PatchSpec, TaskKind, TaskMeta


class BlobTask(ManifestTask):
    meta = TaskMeta(name="api_blobs", version="1", kind=TaskKind.BINARY, description="bright vs dim blobs", main_metric="auc",
                    metrics=("auc", "average_precision"), class_names=("dim", "bright"))  # fmt: skip


class PatchStats:
    """Patch statistics: an encoder a user writes in a notebook (``meta`` and ``encode``, nothing registered)."""

    meta = EncoderMeta("patch-stats", "1", 3, patch=PatchSpec(size=(6, 6, 6), spacing_mm=(2.0, 2.0, 2.0)))

    def encode(self, patches: np.ndarray) -> np.ndarray:
        p = patches[:, 0]
        return np.column_stack([p[:, 2:4, 2:4, 2:4].mean(axis=(1, 2, 3)), p.mean(axis=(1, 2, 3)), p.std(axis=(1, 2, 3))]).astype(np.float32)


class Blurred(PatchStats):
    meta = EncoderMeta("patch-mean", "1", 3, patch=PatchSpec(size=(6, 6, 6), spacing_mm=(2.0, 2.0, 2.0)))

    def encode(self, patches: np.ndarray) -> np.ndarray:
        out = super().encode(patches)
        out[:, 0] = out[:, 1]  # the centre is gone: a worse encoder
        return out


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    """40 patients, two blobs each in a 16^3 volume (2 mm): bright blobs are label 1. Relative image paths."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    rows = []
    for p in range(40):
        vol = rng.normal(-800, 20, size=(16, 16, 16)).astype(np.float32)
        img = sitk.GetImageFromArray(vol)
        img.SetSpacing((2.0, 2.0, 2.0))
        for j, (z, y, x) in enumerate(((4, 4, 4), (11, 11, 11))):
            label = int(rng.random() < 0.5)
            vol[z - 2 : z + 2, y - 2 : y + 2, x - 2 : x + 2] = rng.normal(200 if label else -100, 60)
            pt = img.TransformIndexToPhysicalPoint((x, y, z))
            split = "train" if p < 24 else ("val" if p < 32 else "test")
            rows.append({"lesion_id": f"p{p:02d}_{j}", "patient_id": f"p{p:02d}", "image_path": f"p{p:02d}.nii.gz",
                         "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2], "split": split, "label": label})  # fmt: skip
        img = sitk.GetImageFromArray(vol)
        img.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(img, str(tmp_path / f"p{p:02d}.nii.gz"))
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path


FAST = {"fractions": (1.0, 0.5), "seeds": (0, 1), "n_boot": 50, "progress": False}


def test_import_is_light_and_the_api_is_lazy() -> None:
    code = "import sys, lesionbench; bad = [m for m in ('lesionbench.api', 'torch', 'mlflow', 'pandas') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    from lesionbench import api

    assert lesionbench.evaluate is api.evaluate and set(api.__all__) <= set(dir(lesionbench))
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        lesionbench.evaluat  # noqa: B018


def test_registries_as_tables() -> None:
    tasks = lesionbench.get_tasks()
    assert {"synthetic_malignancy", "luna16_malignancy"} <= set(tasks["name"])
    assert tasks.set_index("name").loc["synthetic_malignancy", "kind"] == "binary"
    encoders = lesionbench.get_encoders()
    assert {"radiomics", "fmcib", "fmcib-random-init", "ct-fm:tib"} <= set(encoders["name"])
    assert lesionbench.get_encoder("radiomics").meta.name == "radiomics"
    with pytest.raises(LesionbenchError, match="synthetic_malignancy"):  # did you mean
        lesionbench.get_task("synthetic_malignancy_")


def test_extract_evaluate_load_and_compare(blobs: Path, tmp_path: Path) -> None:
    task = BlobTask(data_dir=blobs)
    feats = lesionbench.extract_features(blobs / "manifest.csv", PatchStats(), progress=False, cache_dir=tmp_path / "cache")
    table = pd.read_csv(blobs / "manifest.csv")
    assert list(feats.columns) == [*table.columns, "pred_0", "pred_1", "pred_2"]
    assert (feats["image_path"] == table["image_path"]).all()  # the input columns as given (relative paths)
    assert feats.filter(like="pred_").to_numpy().dtype == np.float32

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "results"
    a = lesionbench.evaluate(task, PatchStats(), results=out, mlflow=uri, cache_dir=tmp_path / "cache", **FAST)
    b = lesionbench.evaluate(task, Blurred(), results=out, cache_dir=tmp_path / "cache", **FAST)
    saved = json.loads((out / "api_blobs" / "1" / "patch-stats" / "linear" / "result.json").read_text())
    assert saved["extra"]["environment"]["packages"]["numpy"] == np.__version__

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parents = client.search_runs([client.get_experiment_by_name("lesionbench").experiment_id], filter_string="tags.`lesionbench.level` = 'parent'")
    assert [p.data.tags["lesionbench.encoder"] for p in parents] == ["patch-stats"]  # mlflow= only where asked

    df = lesionbench.load_results(out)
    assert list(df.columns)[:13] == ["task", "task_version", "encoder", "probe", "protocol", "fraction", "shots", "seed", "n_train",
                                     "metric", "value", "ci_low", "ci_high"]  # fmt: skip
    assert len(df) == 2 * 4 * 2  # 2 encoders x 4 runs x 2 metrics
    row = df[(df.encoder == "patch-stats") & (df.fraction == 0.5) & (df.seed == 1) & (df.metric == "auc")].iloc[0]
    run = next(r for r in a.runs if r.fraction == 0.5 and r.seed == 1)
    assert row["value"] == pytest.approx(run.metrics["auc"].value) and row["ci_low"] == pytest.approx(run.metrics["auc"].ci_low)
    assert lesionbench.load_results([b, a]).drop(columns="path").equals(df.drop(columns="path"))  # folders sort patch-mean first

    (out / "api_blobs" / "1" / "broken").mkdir()
    (out / "api_blobs" / "1" / "broken" / "result.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken/result.json is not a readable"):
        assert len(lesionbench.load_results(out)) == len(df)

    cmp = lesionbench.compare(task, "patch-stats", "patch-mean", results=out, seed=None, n_boot=50, n_perm=50)
    assert sorted(cmp["seed"].unique()) == [0, 1] and set(cmp["metric"]) == {"auc", "average_precision"}
    auc = cmp[(cmp.seed == 0) & (cmp.metric == "auc")].iloc[0]
    assert auc["difference"] == pytest.approx(auc["value_a"] - auc["value_b"]) and auc["ci_low"] <= auc["difference"] <= auc["ci_high"]


def test_evaluate_takes_results_and_out_still_works_with_a_deprecation_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One name for the results folder, as compare() and load_results() and `--results` call it (issue 22)."""
    from lesionbench import api
    from lesionbench.benchmark.scoring import scorer

    given = []
    monkeypatch.setattr(scorer, "evaluate", lambda task, encoder, *, out_dir, **options: given.append(out_dir) or "result")
    monkeypatch.setattr(api, "_task", lambda task, data_dir=None: task)
    monkeypatch.setattr(api, "_encoder", lambda encoder: encoder)
    assert lesionbench.evaluate("t", "e", results=tmp_path / "new") == "result"
    with pytest.warns(DeprecationWarning, match=r"evaluate\(out=\.\.\.\) is deprecated.*results="):
        lesionbench.evaluate("t", "e", out=tmp_path / "old")
    assert given == [tmp_path / "new", tmp_path / "old"]
