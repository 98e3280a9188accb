"""Protocols beyond the linear probe: k-NN probe, k-shot sets, fine-tuning (issue 15 items 1-3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lesionbench.baselines.finetune import finetune
from lesionbench.benchmark.scoring._fabricate import FabricatedTask, fabricate, fabricated_encoder_meta
from lesionbench.benchmark.errors import ConfigurationError, SplitError
from lesionbench.benchmark.scoring.probes.knn import KNNProbe, fold_threshold, k_grid
from lesionbench.benchmark.scoring.scorer import evaluate, evaluate_features, result_dir
from lesionbench.benchmark.scoring.shots import draw_shots, draw_val_shots
from lesionbench.benchmark.types import EncoderMeta, PatchSpec, TaskResult

FAST = {"seeds": (0, 1), "n_boot": 30, "progress": False}


def _flip_test_labels(task: FabricatedTask) -> FabricatedTask:
    df = task.manifest()
    test = df["split"] == "test"
    if "label" in df:
        df.loc[test, "label"] = (df.loc[test, "label"] + 1) % max(2, int(df["label"].max()) + 1)
    else:
        df.loc[test, "event"] = 1 - df.loc[test, "event"]
        df.loc[test, "time"] = df.loc[test, "time"][::-1].to_numpy()
    return FabricatedTask(task.meta, df)


def _scores(rdir, run) -> pd.DataFrame:
    df = pd.read_csv(rdir / run.predictions_path)
    return df[[c for c in df.columns if c.startswith("score") or c == "risk"]]


# ------------------------------------------------------------------------------------------ k-NN
def test_knn_grid_and_threshold_fold_are_monotone() -> None:
    assert k_grid(100) == (1, 3, 5, 7, 9) and k_grid(1) == (1,) and k_grid(3) == (1,)
    p = np.array([0.0, 0.2, 0.4, 0.6, 1.0])
    s = fold_threshold(p, 0.4)
    assert np.all(np.diff(s) > 0) and s[2] == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "survival"])
def test_knn_chosen_k_and_scores_do_not_depend_on_test_labels(tmp_path, kind) -> None:
    task, X = fabricate(kind, n_lesions=180, feature_dim=8, signal=2.0, seed=5)
    meta = fabricated_encoder_meta(8)
    a = evaluate_features(task.manifest(), X, task.meta, encoder=meta, probe="knn", fractions=(1.0, 0.5), out_dir=tmp_path / "a", **FAST)
    flipped = _flip_test_labels(task)
    b = evaluate_features(flipped.manifest(), X, task.meta, encoder=meta, probe="knn", fractions=(1.0, 0.5), out_dir=tmp_path / "b", **FAST)
    assert [r.params["k"] for r in a.runs] == [r.params["k"] for r in b.runs]
    assert {r.params["k_selection"] for r in a.runs} == {"val"}
    for ra, rb in zip(a.runs, b.runs, strict=True):
        pd.testing.assert_frame_equal(_scores(result_dir(tmp_path / "a", task.meta.name, "1", "fabricated", "knn"), ra),
                                      _scores(result_dir(tmp_path / "b", task.meta.name, "1", "fabricated", "knn"), rb))  # fmt: skip
    assert a.probe == "knn" and a.extra["protocol"] == "knn"
    chance = {"binary": 0.5, "multiclass": 0.25, "survival": 0.5}[kind]
    assert a.runs[0].metrics[task.meta.main_metric].value > chance + 0.1  # the planted signal is found


def test_knn_scores_rank_and_k_follows_validation() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 0.8 * rng.normal(size=200) > 0).astype(int)
    probe = KNNProbe(metric="auc", n_classes=2).fit(X[:120], y[:120], X_val=X[120:160], y_val=y[120:160])
    p = probe.predict_proba(X[160:])[:, 1]
    assert len(np.unique(p)) > 5  # vote shares, not hard labels: AUC and AP are defined
    assert probe.selection_ == "val" and probe.k_ in probe.grid_ and probe.k_ > 1  # noisy labels: more than one neighbour
    assert probe.threshold_selection_ == "val"


# ---------------------------------------------------------------------------------------- k-shot
@pytest.mark.parametrize("kind", ["multiclass", "binary", "survival"])
def test_shots_are_nested_one_per_patient_and_pure(kind) -> None:
    task, _ = fabricate(kind, n_lesions=400, n_patients=150, feature_dim=2, seed=2)
    df = task.manifest()
    draws = draw_shots(df, task.meta, shots=(1, 5, 10), seed=3)
    ids = {k: set(s.lesion_ids) for k, s in draws.items()}
    assert ids[1] < ids[5] < ids[10]  # nested
    n_classes = 2 if kind != "multiclass" else 4
    for k, s in draws.items():
        assert s.n_lesions == k * n_classes and s.n_patients == s.n_lesions  # one shot per patient
        assert set(df.set_index("lesion_id").loc[list(s.lesion_ids), "split"]) == {"train"}
        assert s.fraction == pytest.approx(s.n_lesions / (df["split"] == "train").sum()) and s.name == f"shots{k}_seed3"
    if kind != "survival":
        per_class = df.set_index("lesion_id").loc[list(draws[5].lesion_ids), "label"].value_counts()
        assert set(per_class) == {5}
    # a pure function of (task version, k, seed): other k asked for, row order, test labels change nothing
    alone = draw_shots(df.sample(frac=1.0, random_state=1), task.meta, shots=(5,), seed=3)[5]
    assert set(alone.lesion_ids) == ids[5]
    flipped = draw_shots(_flip_test_labels(task).manifest(), task.meta, shots=(1, 5, 10), seed=3)
    assert {k: set(s.lesion_ids) for k, s in flipped.items()} == ids
    assert set(draw_shots(df, task.meta, shots=(5,), seed=4)[5].lesion_ids) != ids[5]
    val = draw_val_shots(df, task.meta, shots=(1, 5), seed=3)
    assert set(val[1].lesion_ids) < set(val[5].lesion_ids) and set(df.set_index("lesion_id").loc[list(val[5].lesion_ids), "split"]) == {"val"}


def test_shot_budget_is_nested_and_balanced_and_too_many_shots_fail() -> None:
    task, _ = fabricate("multiclass", n_lesions=300, n_patients=120, feature_dim=2, seed=4)
    df = task.manifest()
    budget = draw_shots(df, task.meta, shots=(8, 12), seed=0, mode="total")
    assert set(budget[8].lesion_ids) < set(budget[12].lesion_ids) and budget[12].name == "budget12_seed0"
    counts = df.set_index("lesion_id").loc[list(budget[12].lesion_ids), "label"].value_counts()
    assert set(counts) == {3}  # 12 shots over 4 classes
    with pytest.raises(SplitError, match="cannot be drawn"):
        draw_shots(df, task.meta, shots=(500,), seed=0)
    with pytest.raises(ConfigurationError, match="whole numbers"):
        draw_shots(df, task.meta, shots=(0,), seed=0)


def test_kshot_sweep_writes_its_own_results_tuned_on_validation_shots(tmp_path) -> None:
    task, X = fabricate("binary", n_lesions=240, n_patients=240, feature_dim=8, signal=2.0, seed=7)
    meta = fabricated_encoder_meta(8)
    frozen = evaluate_features(task.manifest(), X, task.meta, encoder=meta, fractions=(1.0,), out_dir=tmp_path, **FAST)
    for probe in ("linear", "knn"):
        res = evaluate_features(task.manifest(), X, task.meta, encoder=meta, probe=probe, shots=(1, 5, 10), out_dir=tmp_path, **FAST)
        rdir = result_dir(tmp_path, task.meta.name, "1", "fabricated", f"k-shot-{probe}")
        saved = TaskResult.from_dict(json.loads((rdir / "result.json").read_text()))
        assert saved.extra["protocol"] == "k-shot" and saved.extra["shots"] == [10, 5, 1] and saved.extra["shots_per"] == "class"
        assert sorted((r.shots, r.seed) for r in saved.runs) == [(k, s) for k in (1, 5, 10) for s in (0, 1)]
        for r in res.runs:
            assert r.n_train == 2 * r.shots and r.params["validation"] == "shots" and r.params["n_val"] == 2 * r.shots
            sub = pd.read_csv(rdir / r.subset_path)
            assert len(sub) == r.n_train and set(sub["shots"]) == {r.shots}
            assert (rdir / r.params["val_subset_path"]).is_file()
    # the frozen linear result is still where it was, untouched by the k-shot runs
    assert json.loads((result_dir(tmp_path, task.meta.name, "1", "fabricated", "linear") / "result.json").read_text())["created"] == frozen.created
    with pytest.raises(ConfigurationError, match="not both"):
        evaluate_features(task.manifest(), X, task.meta, encoder=meta, shots=(1,), shots_total=(4,), out_dir=tmp_path / "x", **FAST)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ fine-tuning
class _TorchToy:
    """A tiny adaptable encoder: conv, batch norm, pooled features."""

    def __init__(self, seed: int = 0, width: int = 4, name: str = "toy_torch"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.meta = EncoderMeta(name, "1", width, patch=PatchSpec(size=(6, 6, 6), spacing_mm=(2.0, 2.0, 2.0)), weights_sha256="1" * 64)

    def torch_module(self) -> nn.Module:
        return self.net

    def encode(self, patches: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net.eval()(torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))).numpy()


def _patch_task(n: int = 90, seed: int = 0):
    task, X = fabricate("binary", n_lesions=n, n_patients=n, feature_dim=1, signal=3.0, seed=seed)
    rng = np.random.default_rng(seed)
    patches = (rng.normal(size=(n, 1, 6, 6, 6)) + X[:, 0, None, None, None, None]).astype(np.float32)
    return task, patches


FT = {"epochs": 2, "batch_size": 16, "lr": 3e-2, "patience": 3, "threads": 1}


def test_finetune_trains_a_copy_leaves_the_original_and_repeats_exactly(tmp_path) -> None:
    task, patches = _patch_task()
    enc = _TorchToy()
    before = {k: v.clone() for k, v in enc.net.state_dict().items()}
    # the reference augmentations are on (FT leaves augment at its default): seeded, so still repeatable
    kw = {"patches": patches, "fractions": (1.0,), "seeds": (0,), "n_boot": 30, "progress": False, "adapt": "finetune", "trainer": finetune, "adapt_options": FT}
    a = evaluate(task, enc, out_dir=tmp_path / "a", **kw)
    assert all(torch.equal(before[k], v) for k, v in enc.net.state_dict().items())  # the frozen original did not change
    b = evaluate(task, enc, out_dir=tmp_path / "b", **kw)
    rdir = result_dir(tmp_path / "a", task.meta.name, "1", "toy_torch", "finetune-linear")
    assert a.extra["protocol"] == "finetune" and a.encoder.trainable and ("adapt", "finetune") in a.encoder.settings
    for ra, rb in zip(a.runs, b.runs, strict=True):  # same seed, same numbers and files on CPU
        assert ra.metrics == rb.metrics and "head_metrics" in ra.params
        pd.testing.assert_frame_equal(_scores(rdir, ra), _scores(result_dir(tmp_path / "b", task.meta.name, "1", "toy_torch", "finetune-linear"), rb))

    # the fine-tuned network's weights moved away from the pre-trained ones

    tuned = finetune(enc, **{**FT, "augment": False})
    y = task.manifest()["label"].to_numpy()
    train = (task.manifest()["split"] == "train").to_numpy()
    tuned.fit(patches[train], y[train])
    after = tuned._trunk.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert all(torch.equal(before[k], v) for k, v in enc.net.state_dict().items())
    frozen = enc.encode(patches[:5])
    assert not np.allclose(tuned.encode(patches[:5]), frozen)


def test_finetune_refuses_encoders_without_a_network_and_kshot(tmp_path) -> None:
    task, patches = _patch_task(40)

    class _NoNet:
        meta = fabricated_encoder_meta(2)

        def encode(self, p):
            return np.zeros((len(p), 2), np.float32)

    with pytest.raises(ConfigurationError, match="torch_module"):
        evaluate(task, _NoNet(), patches=patches, adapt="finetune", trainer=finetune, out_dir=tmp_path, **FAST)
    with pytest.raises(ConfigurationError, match="k-shot"):
        evaluate(task, _TorchToy(), patches=patches, adapt="finetune", trainer=finetune, shots=(1,), out_dir=tmp_path, **FAST)
    with pytest.raises(ConfigurationError, match="Unknown adaptation"):
        evaluate(task, _TorchToy(), patches=patches, adapt="lora", out_dir=tmp_path, **FAST)


def test_finetune_fmcib_random_init_on_cpu(tmp_path) -> None:
    """FMCIB's 3D ResNet-50 fine-tunes through the same path; tiny 16^3 patches and one epoch keep it to seconds on CPU."""
    from lesionbench.baselines.fmcib import fmcib_random_init

    task, X = fabricate("binary", n_lesions=16, n_patients=16, feature_dim=1, signal=3.0, seed=1)
    rng = np.random.default_rng(0)
    patches = (rng.normal(size=(16, 1, 16, 16, 16)) * 0.05 + 0.1 * X[:, 0, None, None, None, None]).astype(np.float32)
    enc = fmcib_random_init(device="cpu", threads=1)  # one thread: on a loaded 2-core machine two were 5x slower
    first = next(iter(enc.torch_module().parameters())).detach().clone()
    res = evaluate(task, enc, patches=patches, fractions=(1.0,), seeds=(0,), n_boot=10, progress=False, out_dir=tmp_path,
                   adapt="finetune", trainer=finetune, adapt_options={"epochs": 1, "batch_size": 8, "augment": False, "threads": 1})  # fmt: skip
    assert res.extra["protocol"] == "finetune" and res.encoder.name == "fmcib-random-init" and res.encoder.feature_dim == 4096
    assert torch.equal(next(iter(enc.torch_module().parameters())), first)
    assert (result_dir(tmp_path, task.meta.name, "1", "fmcib-random-init", "finetune-linear") / "result.json").is_file()


def test_training_batches_never_end_in_a_batch_of_one() -> None:
    """Batch norm in training mode cannot normalise one sample whose deepest maps are one voxel (FMCIB on small patches)."""
    from lesionbench.baselines._training import batches as _batches

    for n in (1, 2, 16, 17, 33, 40):
        sizes = [len(b) for b in _batches(np.arange(n), 16)]
        assert sum(sizes) == n and (min(sizes) > 1 or n == 1)
    assert [len(b) for b in _batches(np.arange(17), 16)] == [17]
