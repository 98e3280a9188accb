"""End to end: evaluate() on fabricated tasks, every number re-derived from the saved files and from MLflow."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
from lesionbench.benchmark.errors import ConfigurationError, SplitError
from lesionbench.benchmark.scoring.metrics import bootstrap_ci
from lesionbench.benchmark.scoring.run_one import attach_labels
from lesionbench.benchmark.scoring.scorer import compare_saved, evaluate, evaluate_features, load_result, read_predictions, result_dir
from lesionbench.benchmark.types import EncoderMeta, PatchSpec, TaskResult

FAST = {"fractions": (1.0, 0.5), "seeds": (0, 1), "n_boot": 60, "c_grid": (1e-2, 1.0), "refine": False, "progress": False}


def _sk_metric(name: str, pred: pd.DataFrame) -> float:
    """The metric straight from scikit-learn / lifelines on a saved predictions table (test rows)."""
    test = pred[pred["split"] == "test"]
    if "risk" in test:
        if name == "c_index":
            return concordance_index(test["time"], -test["risk"], test["event"])
        # auc_2y: scikit-survival's IPCW cumulative/dynamic AUC at 730 days (censoring from the test rows)
        from sksurv.metrics import cumulative_dynamic_auc
        from sksurv.util import Surv

        surv = Surv.from_arrays(test["event"].to_numpy().astype(bool), test["time"].to_numpy(float))
        return float(cumulative_dynamic_auc(surv, surv, test["score"].to_numpy(), [730.0])[0][0])
    y = test["label"].to_numpy()
    if "score" in test:
        p = test["score"].to_numpy()
        return {
            "auc": lambda: roc_auc_score(y, p),
            "average_precision": lambda: average_precision_score(y, p),
            "balanced_accuracy": lambda: balanced_accuracy_score(y, (p > 0.5).astype(int)),
        }[name]()
    P = test[[c for c in test.columns if c.startswith("score_")]].to_numpy()
    return {
        "balanced_accuracy": lambda: balanced_accuracy_score(y, P.argmax(1)),
        "map": lambda: np.mean([average_precision_score(y == k, P[:, k]) for k in range(P.shape[1])]),
        "auc": lambda: roc_auc_score(y, P, multi_class="ovr"),
    }[name]()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    res = {}
    for kind in ("multiclass", "binary", "survival"):
        task, X = fabricate(kind, n_lesions=240, feature_dim=12, seed=11)
        res[kind] = (task, X, evaluate_features(task.manifest(), X, task.meta, encoder=fabricated_encoder_meta(12), out_dir=out, **FAST))
    return out, res


@pytest.mark.parametrize("kind", ["multiclass", "binary", "survival"])
def test_every_number_agrees_with_sklearn_on_saved_predictions(results, kind) -> None:
    out, res = results
    task, X, result = res[kind]
    rdir = result_dir(out, task.meta.name, task.meta.version, "fabricated", "linear")
    back = TaskResult.from_dict(json.loads((rdir / "result.json").read_text()))
    assert back == result
    assert len(result.runs) == 4 and {(r.fraction, r.seed) for r in result.runs} == {(1.0, 0), (1.0, 1), (0.5, 0), (0.5, 1)}
    for run in result.runs:
        pred = pd.read_csv(rdir / run.predictions_path, dtype={"lesion_id": str, "patient_id": str})
        assert list(pred.columns[:3]) == ["lesion_id", "patient_id", "split"] and len(pred) == len(task.manifest())
        pred = attach_labels(pred, task.manifest(), task.meta.kind)  # the saved file holds no labels
        for name, mv in run.metrics.items():
            assert mv.value == pytest.approx(_sk_metric(name, pred), abs=1e-9), name
            assert mv.ci_low <= mv.value <= mv.ci_high
        # the CIs too: the resamples are seeded by (seed, fraction) and drawn by patient
        test, y, scores = read_predictions(rdir / run.predictions_path, task.meta.kind, task.manifest())
        again = bootstrap_ci(task.meta.kind, y, scores, list(run.metrics), n_boot=FAST["n_boot"],
                             seed=[run.seed, int(round(run.fraction * 1_000_000))], groups=test["patient_id"])  # fmt: skip
        assert again == run.metrics
        sub = pd.read_csv(rdir / run.subset_path, dtype=str)
        assert len(sub) == run.n_train and sub["subset_hash"].iloc[0] == run.params["subset_hash"]
        assert run.params["C"] in (1e-2, 1.0)
    assert set(result.summary()) == {1.0, 0.5} and result.extra["bootstrap_unit"] == "patient"


def test_survival_extras_recomputed(results) -> None:
    out, res = results
    task, _, result = res["survival"]
    df = task.manifest()
    rdir = result_dir(out, task.meta.name, task.meta.version, "fabricated", "linear")
    for run in result.runs:
        pred = attach_labels(pd.read_csv(rdir / run.predictions_path), df, task.meta.kind)
        test = pred[pred["split"] == "test"]
        sub = set(pd.read_csv(rdir / run.subset_path, dtype=str)["lesion_id"])
        train = pred[pred["lesion_id"].astype(str).isin(sub)]
        assert run.params["km_risk_threshold"] == pytest.approx(np.median(train["risk"]))
        # one row per patient (its lesions share a time and an event), at the patient's mean risk
        per = test.groupby("patient_id").agg(time=("time", "first"), event=("event", "first"), risk=("risk", "mean"))
        high = per["risk"] > run.params["km_risk_threshold"]
        p = logrank_test(per["time"][high], per["time"][~high], per["event"][high], per["event"][~high]).p_value
        assert run.params["logrank_p"] == pytest.approx(p)
        assert run.params["km_n_high"] + run.params["km_n_low"] == test["patient_id"].nunique()
        early = ((test["time"] < 730) & (test["event"] == 0)).sum()
        assert run.params["n_censored_2y_excluded_test"] == early > 0
        assert run.params["n_censored_2y_excluded_train"] == ((train["time"] < 730) & (train["event"] == 0)).sum()
    assert result.extra["n_censored_2y"]["test"] == int(((df["split"] == "test") & (df["time"] < 730) & (df["event"] == 0)).sum())


def test_leaks_refused_for_own_split_and_reported_for_published(tmp_path) -> None:
    task, X = fabricate("binary", n_lesions=150, feature_dim=6, seed=3)
    df = task.manifest()
    counts = df[df["split"] == "train"].groupby("patient_id").size()
    pid = counts.index[counts > 1][0]
    df.loc[df.index[df["patient_id"] == pid][0], "split"] = "test"
    with pytest.raises(SplitError, match=pid):
        evaluate_features(df, X, task.meta, encoder=fabricated_encoder_meta(6), out_dir=tmp_path, **FAST)
    meta = dataclasses.replace(task.meta, published_split=True)
    r = evaluate_features(df, X, meta, encoder=fabricated_encoder_meta(6), out_dir=tmp_path, **FAST)
    assert r.leaked_patients == (pid,)
    assert json.loads((result_dir(tmp_path, meta.name, meta.version, "fabricated", "linear") / "result.json").read_text())["leaked_patients"] == [pid]


def test_feature_shape_checked(tmp_path) -> None:
    task, X = fabricate("binary", n_lesions=60, feature_dim=4)
    with pytest.raises(ConfigurationError, match="manifest order"):
        evaluate_features(task.manifest(), X[:-1], task.meta, encoder=fabricated_encoder_meta(4), out_dir=tmp_path, **FAST)


class _SpyEncoder:
    """A trainable encoder whose patches carry their manifest row index, so fit() calls can be audited."""

    calls: list = []  # fit() calls of this process

    def __init__(self, dim: int):
        self.meta = EncoderMeta("spy", "1", dim, patch=PatchSpec(size=(2, 2, 2)), trainable=True)
        self.fitted_rows: list[np.ndarray] = []
        self.weights = None

    def fit(self, patches, labels, *, val=None):
        rows = patches[:, 0, 0, 0, 0].astype(int)
        _SpyEncoder.calls.append((rows, np.asarray(labels), None if val is None else val[0][:, 0, 0, 0, 0].astype(int)))
        self.weights = np.linspace(1, 2, self.meta.feature_dim)
        x = patches[:, 1, 0, 0, 0]
        self.sign = np.sign(x[labels == 1].mean() - x[labels == 0].mean())
        return self

    def encode(self, patches):
        return (patches[:, 1, 0, 0, 0:1] * self.weights[None, :]).astype(np.float32)

    def predict_proba(self, patches):
        s = 1 / (1 + np.exp(-self.sign * patches[:, 1, 0, 0, 0]))
        return np.column_stack([1 - s, s])


def test_trainable_encoder_never_sees_test_labels(tmp_path) -> None:
    task, X = fabricate("binary", n_lesions=200, feature_dim=1, signal=6.0, seed=8)
    df = task.manifest()
    n = len(df)
    patches = np.zeros((n, 2, 2, 2, 2), np.float32)
    patches[:, 0] = np.arange(n)[:, None, None, None]
    patches[:, 1] = X[:, :1, None, None]
    _SpyEncoder.calls = []
    enc = _SpyEncoder(4)
    result = evaluate(task, enc, out_dir=tmp_path, patches=patches, **FAST)
    assert enc.weights is None  # the scorer fitted deep copies, never the caller's encoder
    assert len(_SpyEncoder.calls) == len(result.runs)
    split = df["split"].to_numpy()
    for (rows, labels, val_rows), run in zip(_SpyEncoder.calls, result.runs):
        assert set(split[rows]) == {"train"} and len(rows) == run.n_train
        np.testing.assert_array_equal(labels, df["label"].to_numpy()[rows])
        assert set(split[val_rows]) == {"val"} and len(val_rows) == run.params["n_val"]  # early stopping on the run's validation subset
        assert len(val_rows) == (split == "val").sum() if run.fraction == 1.0 else len(val_rows) < (split == "val").sum()
        assert run.params["head_metrics"]["auc"]["value"] > 0.7
        head = pd.read_csv(result_dir(tmp_path, task.meta.name, task.meta.version, "spy", "linear") / run.params["head_predictions_path"])
        head = attach_labels(head, df, task.meta.kind)
        assert run.params["head_metrics"]["auc"]["value"] == pytest.approx(_sk_metric("auc", head))


def test_compare_saved(results, tmp_path) -> None:
    task, X, _ = results[1]["binary"]
    rng = np.random.default_rng(0)
    noisy = X + rng.normal(scale=5.0, size=X.shape).astype(np.float32)
    for name, feats in (("good", X), ("noisy", noisy)):
        evaluate_features(task.manifest(), feats, task.meta, encoder=fabricated_encoder_meta(X.shape[1], name), out_dir=tmp_path, **FAST)
    rows = compare_saved(tmp_path, task.meta.name, "good", "noisy", fraction=1.0, seed=0, n_boot=100, n_perm=100, labels=task.manifest())
    by = {r.metric: r for r in rows}
    good = load_result(result_dir(tmp_path, task.meta.name, task.meta.version, "good", "linear")).runs[0].metrics["auc"].value
    assert by["auc"].value_a == pytest.approx(good) and by["auc"].difference > 0 and by["auc"].p_value < 0.05
    with pytest.raises(ConfigurationError, match="Encoders with results for this task version: good, noisy"):
        compare_saved(tmp_path, task.meta.name, "good", "nope", labels=task.manifest())
    with pytest.raises(ConfigurationError, match="no run with fraction 0.1"):
        compare_saved(tmp_path, task.meta.name, "good", "noisy", fraction=0.1, labels=task.manifest())


def _metrics_of(result: TaskResult) -> dict:
    return {(r.fraction, r.seed): {k: v.to_dict() for k, v in r.metrics.items()} for r in result.runs}


def test_a_killed_sweep_resumes_and_more_seeds_reuse_finished_runs(tmp_path, monkeypatch) -> None:
    import lesionbench.benchmark.scoring.run_one as run_one

    task, X = fabricate("binary", n_lesions=160, feature_dim=8, seed=5)
    enc = fabricated_encoder_meta(8)
    opts = {**FAST, "seeds": (0, 1, 2)}
    whole = evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "whole", **opts)

    fits, kill_at = [], [4]
    real_fit = run_one.fit_predict

    class Killed(Exception):
        """Stands for a kill (Ctrl-C, OOM) in the middle of the sweep."""

    def dies_on_the_fourth_fit(*a, **k):
        fits.append(1)
        if kill_at and len(fits) == kill_at[0]:
            raise Killed
        return real_fit(*a, **k)

    monkeypatch.setattr(run_one, "fit_predict", dies_on_the_fourth_fit)
    with pytest.raises(Killed):
        evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "killed", **opts)
    assert not (result_dir(tmp_path / "killed", task.meta.name, task.meta.version, enc.name, "linear") / "result.json").exists()
    fits.clear()
    kill_at.clear()
    again = evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "killed", **opts)
    assert len(fits) == 6 - 3  # the three finished runs are reused, only the rest is fitted
    assert _metrics_of(again) == _metrics_of(whole)
    # adding seeds reuses the done ones; other features, or resume=False, recompute everything
    fits.clear()
    more = evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "killed", **{**opts, "seeds": (0, 1, 2, 3)})
    assert len(fits) == 2 and {k: v for k, v in _metrics_of(more).items() if k[1] < 3} == _metrics_of(whole)
    # fewer seeds than the result already there would replace it: refused (remove the folder's result to replace it)
    rdir = result_dir(tmp_path / "killed", task.meta.name, task.meta.version, enc.name, "linear")
    with pytest.raises(ConfigurationError, match="fewer seeds"):
        evaluate_features(task.manifest(), X + 1.0, task.meta, encoder=enc, out_dir=tmp_path / "killed", **opts)
    (rdir / "result.json").unlink()
    fits.clear()
    evaluate_features(task.manifest(), X + 1.0, task.meta, encoder=enc, out_dir=tmp_path / "killed", **opts)
    assert len(fits) == 6
    fits.clear()
    evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "killed", resume=False, **opts)
    assert len(fits) == 6
    # a run killed after its prediction files were replaced is never resumed with another run's metrics
    fits.clear()
    kill_at.append(2)
    with pytest.raises(Killed):
        evaluate_features(task.manifest(), X + 1.0, task.meta, encoder=enc, out_dir=tmp_path / "killed", **opts)
    kill_at.clear()
    fits.clear()
    evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "killed", **opts)
    assert len(fits) == 1  # only the run whose files the killed sweep replaced is redone


def test_task_versions_keep_separate_results(tmp_path) -> None:
    task, X = fabricate("binary", n_lesions=120, feature_dim=6, seed=2)
    enc = fabricated_encoder_meta(6)
    for version in ("1.0-fold0", "1.0-fold1"):
        meta = dataclasses.replace(task.meta, version=version)
        evaluate_features(task.manifest(), X, meta, encoder=enc, out_dir=tmp_path, **FAST)
    folders = sorted(p.parent.parent.parent.name for p in tmp_path.rglob("result.json"))
    assert folders == ["1.0-fold0", "1.0-fold1"]
    with pytest.raises(ConfigurationError, match="several versions.*1.0-fold0, 1.0-fold1.*--task-version"):
        compare_saved(tmp_path, task.meta.name, enc.name, enc.name)
    assert compare_saved(tmp_path, task.meta.name, enc.name, enc.name, version="1.0-fold1", n_boot=20, n_perm=20, labels=task.manifest())[0].difference == 0


def test_a_test_split_with_one_class_warns_that_ranking_metrics_are_undefined(tmp_path, caplog) -> None:
    task, X = fabricate("binary", n_lesions=120, feature_dim=6, seed=2)
    man = task.manifest().copy()
    man.loc[man["split"] == "test", "label"] = 1
    with caplog.at_level("WARNING", logger="lesionbench.benchmark.scoring.scorer"):
        res = evaluate_features(man, X, task.meta, encoder=fabricated_encoder_meta(6), out_dir=tmp_path, **FAST)
    assert np.isnan(res.runs[0].metrics["auc"].value)
    assert "auc" in caplog.text and "undefined (NaN) on the test split" in caplog.text and "labels are {1:" in caplog.text


def test_parallel_runs_give_the_same_results_in_the_same_order(tmp_path) -> None:
    task, X = fabricate("multiclass", n_lesions=200, feature_dim=10, seed=4)
    enc = fabricated_encoder_meta(10)
    one = evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "one", **FAST)
    two = evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "two", jobs=2, **FAST)
    assert [(r.fraction, r.seed) for r in two.runs] == [(r.fraction, r.seed) for r in one.runs]
    assert _metrics_of(two) == _metrics_of(one)
    for r in one.runs:
        a = pd.read_csv(result_dir(tmp_path / "one", task.meta.name, task.meta.version, enc.name, "linear") / r.predictions_path)
        b = pd.read_csv(result_dir(tmp_path / "two", task.meta.name, task.meta.version, enc.name, "linear") / r.predictions_path)
        pd.testing.assert_frame_equal(a, b)
    # a trainable encoder is trained in the workers: same runs, same numbers
    btask, bX = fabricate("binary", n_lesions=120, feature_dim=1, signal=6.0, seed=8)
    patches = np.zeros((len(bX), 2, 2, 2, 2), np.float32)
    patches[:, 0] = np.arange(len(bX))[:, None, None, None]
    patches[:, 1] = bX[:, :1, None, None]
    _SpyEncoder.calls = []
    seq = evaluate(btask, _SpyEncoder(4), out_dir=tmp_path / "seq", patches=patches, **FAST)
    par = evaluate(btask, _SpyEncoder(4), out_dir=tmp_path / "par", patches=patches, jobs=2, **FAST)
    assert _metrics_of(par) == _metrics_of(seq) and [r.params["head_metrics"] for r in par.runs] == [r.params["head_metrics"] for r in seq.runs]
    with pytest.raises(ConfigurationError, match="jobs must be"):
        evaluate_features(task.manifest(), X, task.meta, encoder=enc, out_dir=tmp_path / "bad", jobs=0, **FAST)


# ---------------------------------------------------------------- validation policy (issue 12, item 7)
def test_limited_label_runs_are_tuned_on_a_validation_subset_of_their_fraction(tmp_path, monkeypatch) -> None:
    """Before: every run chose C on the whole validation split, however few training labels it had."""
    import math

    import lesionbench.benchmark.scoring.run_one as run_one
    from lesionbench.benchmark.scoring.splits import read_subset

    task, X = fabricate("binary", n_lesions=300, feature_dim=8, seed=3)
    df, enc = task.manifest(), fabricated_encoder_meta(8)
    val_rows = set(df.index[df["split"] == "val"])
    n_val = len(val_rows)
    seen: list[tuple[float, set]] = []
    real_fit = run_one.fit_predict

    def spy(est, kind, manifest, X, train, val, groups):
        seen.append((int(train.sum()), set(np.flatnonzero(val))))
        return real_fit(est, kind, manifest, X, train, val, groups)

    monkeypatch.setattr(run_one, "fit_predict", spy)
    opts = {**FAST, "fractions": (1.0, 0.2)}
    res = evaluate_features(df, X, task.meta, encoder=enc, out_dir=tmp_path, **opts)
    rdir = result_dir(tmp_path, task.meta.name, task.meta.version, enc.name, "linear")
    assert res.extra["validation"] == "fraction" and len(seen) == 4
    for run, (n_train, rows) in zip(res.runs, seen):
        assert run.n_train == n_train and rows <= val_rows and len(rows) == run.params["n_val"]
        sub = read_subset(rdir / run.params["val_subset_path"])
        assert sub.split == "val" and set(df.index[df["lesion_id"].isin(sub.lesion_ids)]) == rows
        assert run.params["validation"] == "fraction" and run.params["val_subset_hash"] == sub.hash
        if run.fraction == 1.0:
            assert len(rows) == n_val
        else:
            assert math.ceil(0.2 * n_val) <= len(rows) < 0.5 * n_val
    # val="full" keeps the paper's protocol; it is another setting, so no saved run of the other policy is resumed
    seen.clear()
    full = evaluate_features(df, X, task.meta, encoder=enc, out_dir=tmp_path, val="full", **opts)
    assert len(seen) == 4 and all(rows == val_rows for _, rows in seen)
    assert full.extra["validation"] == "full" and {r.params["validation"] for r in full.runs} == {"full"}
    seen.clear()
    evaluate_features(df, X, task.meta, encoder=enc, out_dir=tmp_path, **opts)
    assert len(seen) == 4
    with pytest.raises(ConfigurationError, match="val must be 'fraction'.*or 'full'"):
        evaluate_features(df, X, task.meta, encoder=enc, out_dir=tmp_path, val="half", **opts)


def test_a_validation_subset_missing_a_class_falls_back_to_cross_validation(tmp_path, caplog) -> None:
    task, X = fabricate("binary", n_lesions=300, feature_dim=8, seed=3)
    df = task.manifest()
    val = df["split"] == "val"
    # all validation positives in one patient, the negatives in two: a small validation subset holds only the positives' patient
    df.loc[val & (df["label"] == 1), "patient_id"] = "VALPOS"
    neg = df.index[val & (df["label"] == 0)]
    df.loc[neg[: len(neg) // 2], "patient_id"] = "VALNEG1"
    df.loc[neg[len(neg) // 2 :], "patient_id"] = "VALNEG2"
    assert (val & (df["label"] == 1)).sum() >= 0.2 * val.sum()
    with caplog.at_level("WARNING"):
        res = evaluate_features(df, X, task.meta, encoder=fabricated_encoder_meta(8), out_dir=tmp_path, **{**FAST, "fractions": (1.0, 0.2)})
    small = [r for r in res.runs if r.fraction == 0.2]
    assert all(r.params["validation"] == "cv" and r.params["c_selection"] == "cv" and r.params["n_val"] == 0 for r in small)
    assert "validation subset" in small[0].params["validation_note"] and "--val full" in small[0].params["validation_note"]
    assert "cross-validation on the training subset" in caplog.text
    assert caplog.text.count("choose C by cross-validation") == 1 and "20% (seeds 0, 1)" in caplog.text, caplog.text
    assert all(r.params["validation"] == "fraction" and r.params["c_selection"] == "val" for r in res.runs if r.fraction == 1.0)


# ---------------------------------------------------------------- seed summaries (issue 12, item 9)
def test_seed_summary_is_over_defined_seeds_and_has_no_sd_where_every_seed_drew_the_same_subset() -> None:
    from lesionbench.benchmark.types import MetricValue, SubsetResult

    def run(frac, seed, value, subset):
        return SubsetResult(frac, seed, 10, {"auc": MetricValue(value)}, {"subset_hash": subset, "val_subset_hash": "v" + subset})

    task, _ = fabricate("binary", n_lesions=30, feature_dim=2)
    runs = (run(1.0, 0, 0.8, "all"), run(1.0, 1, 0.8, "all"), run(0.5, 0, 0.6, "a"), run(0.5, 1, float("nan"), "b"), run(0.5, 2, 0.7, "c"))
    res = TaskResult(task.meta, fabricated_encoder_meta(2), "linear", runs, "x", "now")
    stats = res.seed_stats()
    assert np.isnan(stats[1.0]["auc"]["sd"]) and stats[1.0]["auc"]["sd_note"] == "every seed drew the same subset"
    assert stats[0.5]["auc"]["mean"] == pytest.approx(0.65) and stats[0.5]["auc"]["n_defined"] == 2 and stats[0.5]["auc"]["n_seeds"] == 3
    assert stats[0.5]["auc"]["sd"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert res.summary()[0.5]["auc"] == (stats[0.5]["auc"]["mean"], stats[0.5]["auc"]["sd"])


def test_a_default_c_is_said_once_per_sweep(tmp_path, caplog) -> None:
    """Each class's training lesions come from two patients: a 50% subset holds one per class, no grouped fold
    can be made, and the 50% validation subsets miss classes, so C is undefined everywhere at 50%. The runs
    record it (c_selection = 'default'); the log says it once for the sweep, naming the runs (not once per run)."""
    task, X = fabricate("multiclass", n_lesions=240, n_classes=4, feature_dim=6, seed=1)
    df = task.manifest()
    for split, per in (("train", 2), ("val", 1)):
        for c in df["label"].unique():
            rows = df.index[(df["split"] == split) & (df["label"] == c)]
            df.loc[rows, "patient_id"] = [f"{split}-{c}-{i % per}" for i in range(len(rows))]
    with caplog.at_level("WARNING"):
        res = evaluate_features(df, X, task.meta, encoder=fabricated_encoder_meta(6), out_dir=tmp_path, **{**FAST, "seeds": (0, 1, 2)})
    assert [r.params["c_selection"] for r in res.runs if r.fraction == 0.5] == ["default"] * 3
    said = [r.getMessage() for r in caplog.records if "undefined for every C" in r.getMessage()]
    assert len(said) == 1 and "in 3 of 6 runs: f=0.5 (seeds 0, 1, 2)" in said[0] and "c_selection = 'default'" in said[0]
