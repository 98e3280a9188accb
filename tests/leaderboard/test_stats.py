"""One resampling unit (patients) in the scorer, submissions and the page; Holm without NaN surprises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _lb_fixtures import BINARY, make_manifest, write_result
from lesionbench.benchmark.errors import LesionbenchError
from lesionbench.benchmark.scoring import metrics
from lesionbench.leaderboard import _stats
from lesionbench.leaderboard.build import build_document
from lesionbench.leaderboard.collect import collect_results
from lesionbench.leaderboard.submissions.submit import score_predictions


def test_holm_leaves_nan_out_of_the_family() -> None:
    assert _stats.holm([np.nan, 0.01]) == pytest.approx([np.nan, 0.01], nan_ok=True)
    assert _stats.holm([0.01, np.nan, 0.04]) == pytest.approx([0.02, np.nan, 0.04], nan_ok=True)
    assert np.isnan(_stats.holm([np.nan, np.nan])).all() and _stats.holm([]) == []


def test_holm_over_a_larger_family() -> None:
    """Two tests picked (against the data's top) from the three pairs of three entries."""
    assert _stats.holm([0.01, 0.02], family=3) == pytest.approx([0.03, 0.04])
    assert _stats.holm([0.04, 0.01], family=1) == pytest.approx([0.04, 0.02])  # never smaller than the tests given
    assert _stats.holm([np.nan, 0.01], family=3) == pytest.approx([np.nan, 0.03], nan_ok=True)


def test_versus_top_is_two_sided_and_holm_over_all_pairs() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(90) < 0.4).astype(int)
    scores = {k: y * q + rng.normal(size=90) for k, q in (("a", 2.0), ("b", 1.0), ("c", 0.0))}
    got = _stats.versus_top(BINARY.kind, y, scores, "auc", top="a", n_boot=0, n_perm=500, seed=1, correction="holm")
    assert list(got) == ["b", "c"]
    raw = {k: _stats.paired_comparison(BINARY.kind, y, scores["a"], scores[k], "auc", n_boot=0, n_perm=500, seed=1) for k in got}
    assert {k: c.p_value for k, (c, _) in got.items()} == {k: c.p_value for k, c in raw.items()}
    assert [p for _, p in got.values()] == pytest.approx(_stats.holm([raw["b"].p_value, raw["c"].p_value], family=3))
    assert all(c.alternative == "two-sided" for c, _ in got.values())


def test_versus_top_uses_stepdown_maxt_from_three_entries() -> None:
    """The default from K = 3: the same comparisons, p adjusted by max-T over all three pairs (the scorer's)."""
    from lesionbench.benchmark.scoring.maxt import family_maxt

    rng = np.random.default_rng(4)
    y = (rng.random(90) < 0.4).astype(int)
    scores = {k: y * q + rng.normal(size=90) for k, q in (("a", 2.0), ("b", 1.0), ("c", 0.0))}
    got = _stats.versus_top(BINARY.kind, y, scores, "auc", top="a", n_boot=0, n_perm=500, seed=1)
    fam = family_maxt(y, list(scores.values()), "auc", kind="binary", n_perm=500, seed=1)
    assert [p for _, p in got.values()] == [fam.p_for(0, 1), fam.p_for(0, 2)]
    holm = _stats.versus_top(BINARY.kind, y, scores, "auc", top="a", n_boot=0, n_perm=500, seed=1, correction="holm")
    assert [c.p_value for c, _ in got.values()] == [c.p_value for c, _ in holm.values()]  # the shown raw tests are Holm's
    assert _stats.correction_for(2) == "holm" and _stats.correction_for(3) == "maxt" and _stats.correction_for(9, "holm") == "holm"
    with pytest.raises(LesionbenchError, match="correction must be one of auto, maxt, holm; got 'bonferroni'"):
        _stats.correction_for(3, "bonferroni")


def _clustered_manifest(patients: int = 60, lesions: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A binary task with ``patients`` x ``lesions`` test lesions whose labels and scores are correlated
    within the patient, and one model's predictions of them."""
    rng = np.random.default_rng(seed)
    train = make_manifest(BINARY, n_test=0, seed=seed)
    u = rng.normal(size=(patients, 1))
    z = 0.9 * u + 0.45 * rng.normal(size=(patients, lesions))
    label = (z + 0.3 * rng.normal(size=z.shape) > 0.3).astype(int).ravel()
    score = 1 / (1 + np.exp(-(z + 0.9 * rng.normal(size=(patients, 1)) + 0.3 * rng.normal(size=z.shape)).ravel()))
    n = patients * lesions
    test = pd.DataFrame(
        {
            "lesion_id": [f"T{i:04d}" for i in range(n)],
            "patient_id": [f"TP{i // lesions:03d}" for i in range(n)],
            "image_path": "/data/x.nii.gz", "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0,
            "split": "test", "label": label,
        }
    )  # fmt: skip
    return pd.concat([train, test], ignore_index=True), pd.DataFrame({"lesion_id": test["lesion_id"], "score": score})


def test_submission_ci_resamples_patients_like_the_scorer() -> None:
    """60 patients x 5 correlated lesions: the submission's CI is the scorer's patient-bootstrap CI
    (resample for resample with the same seed); a lesion bootstrap would be about half as wide."""
    manifest, preds = _clustered_manifest()
    test = manifest[manifest["split"] == "test"]
    y, s, g = test["label"].to_numpy(), preds["score"].to_numpy(), test["patient_id"].to_numpy()
    sub = score_predictions(BINARY, manifest, preds, n_boot=1000, seed=0).overall["auc"]
    scorer = metrics.bootstrap_ci("binary", y, s, ["auc"], n_boot=1000, seed=0, groups=g)["auc"]
    assert (sub.value, sub.ci_low, sub.ci_high) == pytest.approx((scorer.value, scorer.ci_low, scorer.ci_high), abs=1e-12)
    # the scorer's own seed for the 100% run: another draw of resamples, the same width up to noise
    run_seed = metrics.bootstrap_ci("binary", y, s, ["auc"], n_boot=1000, seed=[0, 1_000_000], groups=g)["auc"]
    lesion = metrics.bootstrap_ci("binary", y, s, ["auc"], n_boot=1000, seed=0)["auc"]
    width = sub.ci_high - sub.ci_low
    assert width == pytest.approx(run_seed.ci_high - run_seed.ci_low, rel=0.15)
    assert lesion.ci_high - lesion.ci_low < 0.75 * width
    lesion_sub = score_predictions(BINARY, manifest, preds, n_boot=1000, seed=0, bootstrap_unit="lesion").overall["auc"]
    assert (lesion_sub.ci_low, lesion_sub.ci_high) == pytest.approx((lesion.ci_low, lesion.ci_high), abs=1e-12)


@pytest.fixture(scope="module")
def page_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("stats-page")
    manifest, _ = _clustered_manifest(seed=1)
    for j, (enc, q) in enumerate({"fmcib": 1.0, "radiomics": 0.9, "supervised-cnn": 0.3}.items()):
        write_result(BINARY, manifest, enc, q, root, seed=j)
    return root, manifest


def test_page_statistics_resample_patients(page_results: tuple[Path, pd.DataFrame]) -> None:
    """The page's paired CI, p and rank intervals are the scorer's with patients as the unit."""
    root, manifest = page_results
    doc = build_document(collect_results(results_dir=root), n_boot=300, n_perm=300, seed=0, include_published=False)
    (task,) = doc["tasks"]
    assert task["statistics"]["bootstrap_unit"] == "patient" and task["statistics"]["alternative"] == "two-sided"
    entries = task["entries"]
    pred = {e["encoder"]: pd.read_csv(root / BINARY.name / BINARY.version / e["encoder"] / "linear" / "predictions/f1_s0.csv", dtype={"patient_id": str}) for e in entries}
    top = pred[entries[0]["encoder"]].sort_values("lesion_id")
    groups = top["patient_id"].to_numpy()
    assert len(set(groups)) == 60
    for e in entries[1:]:
        other = pred[e["encoder"]].sort_values("lesion_id")
        ref = metrics.paired_comparison(top["label"].to_numpy(), top["score"].to_numpy(), other["score"].to_numpy(), "auc", kind="binary", n_boot=300, n_perm=300, seed=0, groups=groups)
        c = e["comparison"]
        assert (c["difference"], c["ci_low"], c["ci_high"]) == pytest.approx((-ref.difference, -ref.ci_high, -ref.ci_low), abs=1e-9)
        assert c["p_value"] == pytest.approx(ref.p_value) and c["n_lesions"] == 300
    scores = {str(i): pred[e["encoder"]].sort_values("lesion_id")["score"].to_numpy() for i, e in enumerate(entries)}
    ranks = _stats.bootstrap_rank_intervals(BINARY.kind, top["label"].to_numpy(), scores, "auc", n_boot=300, seed=0, groups=groups)
    assert [e["rank_interval"] for e in entries] == [list(ranks[str(i)]) for i in range(len(entries))]


def test_no_permutations_mark_nothing_significant(page_results: tuple[Path, pd.DataFrame]) -> None:
    """``leaderboard build --n-perm 0``: no test was run, so no p, no Holm p and nothing significant."""
    root, _ = page_results
    doc = build_document(collect_results(results_dir=root), n_boot=20, n_perm=0, include_published=False)
    comps = [e["comparison"] for e in doc["tasks"][0]["entries"][1:]]
    assert comps and all(c["p_value"] is None and c["p_holm"] is None and c["significant"] is False for c in comps)
    assert all(c["ci_low"] is not None for c in comps)  # the bootstrap CI is still there
