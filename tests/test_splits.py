"""Limited-label subsets (nesting, grouping, stratification, determinism) and the leakage audit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.scoring._fabricate import fabricate
from lesionbench.benchmark.scoring.endpoints import two_year_label
from lesionbench.benchmark.errors import SplitError
from lesionbench.benchmark.scoring.splits import (
    audit_leakage,
    draw_subset,
    draw_subsets,
    leaked_patients,
    patient_order,
    read_subset,
    split_hash,
)

FRACTIONS = (1.0, 0.5, 0.2, 0.1)


@pytest.fixture(scope="module")
def multiclass():
    task, _ = fabricate("multiclass", n_lesions=900, n_patients=400, n_classes=4, seed=3)
    return task.meta, task.manifest()


def test_nested_within_seed_and_sized(multiclass) -> None:
    meta, df = multiclass
    train = df[df["split"] == "train"]
    for seed in range(3):
        subs = draw_subsets(df, meta, fractions=FRACTIONS, seed=seed)
        assert set(subs[1.0].lesion_ids) == set(train["lesion_id"])
        for big, small in zip(FRACTIONS, FRACTIONS[1:]):
            assert set(subs[small].lesion_ids) < set(subs[big].lesion_ids)
        for f in FRACTIONS:
            n = subs[f].n_lesions
            assert n >= math.ceil(f * len(train)) - 1e-9
            # taking whole patients overshoots by less than one patient's lesions
            assert n < math.ceil(f * len(train)) + train.groupby("patient_id").size().max()


def test_grouped_by_patient(multiclass) -> None:
    meta, df = multiclass
    train = df[df["split"] == "train"]
    for f, sub in draw_subsets(df, meta, fractions=FRACTIONS, seed=1).items():
        chosen = set(sub.lesion_ids)
        inside = train["lesion_id"].isin(chosen)
        per_patient = inside.groupby(train["patient_id"]).agg(["min", "max"])
        assert (per_patient["min"] == per_patient["max"]).all(), f"a patient is split by the {f} subset"
        assert set(sub.patient_ids) == set(train.loc[inside, "patient_id"])


def test_stratified_by_label(multiclass) -> None:
    meta, df = multiclass
    train = df[df["split"] == "train"]
    overall = train["label"].value_counts(normalize=True).sort_index()
    for seed in range(3):
        sub = draw_subset(df, meta, 0.2, seed)
        share = train[train["lesion_id"].isin(sub.lesion_ids)]["label"].value_counts(normalize=True).sort_index()
        assert np.abs(share - overall).max() < 0.06, (share, overall)


def test_survival_stratified_by_event_and_time() -> None:
    task, _ = fabricate("survival", n_lesions=900, n_patients=900, seed=5)
    meta, df = task.meta, task.manifest()
    train = df[df["split"] == "train"]
    sub = train[train["lesion_id"].isin(draw_subset(df, meta, 0.2, 0).lesion_ids)]
    assert abs(sub["event"].mean() - train["event"].mean()) < 0.03
    edges = np.quantile(train["time"], [1 / 3, 2 / 3])
    tert = np.bincount(np.searchsorted(edges, sub["time"], side="right"), minlength=3) / len(sub)
    assert np.abs(tert - 1 / 3).max() < 0.04
    y2 = two_year_label(sub["time"].to_numpy(), sub["event"].to_numpy())
    assert {0.0, 1.0} <= set(y2[np.isfinite(y2)].tolist())


def test_deterministic_and_pure(multiclass) -> None:
    meta, df = multiclass
    a = draw_subsets(df, meta, fractions=FRACTIONS, seed=2)
    b = draw_subsets(df, meta, fractions=FRACTIONS, seed=2)
    assert all(a[f] == b[f] for f in FRACTIONS)
    # independent of which other fractions are asked for, and of the manifest's row order
    shuffled = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert set(draw_subset(shuffled, meta, 0.1, 2).lesion_ids) == set(a[0.1].lesion_ids)
    assert draw_subset(df, meta, 0.1, 2).hash == a[0.1].hash
    # other seeds and other task versions give other subsets
    assert draw_subset(df, meta, 0.1, 3).hash != a[0.1].hash
    other = dataclasses.replace(meta, version="2")
    assert draw_subset(df, other, 0.1, 2).hash != a[0.1].hash
    assert patient_order(df, meta, 2) == patient_order(shuffled, meta, 2)


def test_every_class_present_even_when_rare() -> None:
    task, _ = fabricate("multiclass", n_lesions=400, n_patients=400, n_classes=3, seed=7)
    meta, df = task.meta, task.manifest()
    train_idx = df.index[df["split"] == "train"]
    df.loc[train_idx, "label"] = 0
    df.loc[train_idx[:2], "label"] = 1  # two rare lesions of class 1, one of class 2
    df.loc[train_idx[2], "label"] = 2
    for seed in range(5):
        sub = draw_subset(df, meta, 0.1, seed)
        assert set(df.set_index("lesion_id").loc[list(sub.lesion_ids), "label"]) == {0, 1, 2}


def test_missing_class_is_an_error_naming_class_and_fraction() -> None:
    task, _ = fabricate("multiclass", n_lesions=200, n_patients=100, n_classes=3, seed=1)
    meta, df = task.meta, task.manifest()
    df.loc[(df["split"] == "train") & (df["label"] == 2), "label"] = 0
    with pytest.raises(SplitError, match="class 'class2' has no lesion in the train split"):
        draw_subsets(df, meta, fractions=(1.0,), seed=0)
    task, _ = fabricate("multiclass", n_lesions=200, n_patients=200, n_classes=3, seed=1)
    with pytest.raises(SplitError, match=r"the 1% training subset .* cannot contain class 'class\d'"):
        draw_subsets(task.manifest(), task.meta, fractions=(1.0, 0.01), seed=0)


def test_subset_file_round_trip(tmp_path, multiclass) -> None:
    meta, df = multiclass
    sub = draw_subset(df, meta, 0.2, 4)
    path = sub.write(tmp_path / "s.csv")
    back = read_subset(path)
    assert set(back.lesion_ids) == set(sub.lesion_ids) and back.hash == sub.hash
    table = pd.read_csv(path, dtype=str)
    table.loc[0, "lesion_id"] = "tampered"
    table.to_csv(path, index=False)
    with pytest.raises(SplitError, match="subset_hash"):
        read_subset(path)


def _leak(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Move one lesion of a multi-lesion training patient into the test split."""
    counts = df[df["split"] == "train"].groupby("patient_id").size()
    pid = counts.index[counts > 1][0]
    row = df.index[(df["patient_id"] == pid)][0]
    out = df.copy()
    out.loc[row, "split"] = "test"
    return out, pid


def test_leakage_audit_own_split_is_an_error(multiclass) -> None:
    meta, df = multiclass
    assert audit_leakage(df, meta) == ()
    leaky, pid = _leak(df)
    assert leaked_patients(leaky) == (pid,)
    with pytest.raises(SplitError, match=rf"1 patient\(s\) have lesions in more than one .*{pid}"):
        audit_leakage(leaky, meta)


def test_leakage_audit_published_split_is_reported(multiclass) -> None:
    meta, df = multiclass
    leaky, pid = _leak(df)
    assert audit_leakage(leaky, dataclasses.replace(meta, published_split=True)) == (pid,)
    assert split_hash(leaky) != split_hash(df)
    assert split_hash(df.sample(frac=1.0, random_state=1)) == split_hash(df)


@pytest.mark.parametrize(
    ("fractions", "seeds", "message"),
    [
        ([1.0], [-1], r"Seeds must be non-negative integers; got \[-1\]"),
        ([1.0], [0, 0], r"Each seed may be given once; \[0\] repeated"),
        ([1.0, 1.0], [0], r"Each fraction may be given once; \[1.0\] repeated"),
        ([0.0], [0], r"fractions must lie in \(0, 1\]; got \[0.0\]"),
        ([float("nan")], [0], r"fractions must lie in \(0, 1\]"),
        ([], [0], "at least one training fraction"),
    ],
)
def test_bad_sweep_is_one_clear_error(fractions, seeds, message) -> None:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.scoring.splits import check_sweep

    with pytest.raises(ConfigurationError, match=message):
        check_sweep(fractions, seeds)


def test_negative_seed_in_draw_subsets_is_a_configuration_error(multiclass) -> None:
    from lesionbench.benchmark.errors import ConfigurationError

    meta, df = multiclass
    with pytest.raises(ConfigurationError, match="non-negative"):
        draw_subsets(df, meta, fractions=(1.0,), seed=-1)


# ---------------------------------------------------------------- validation subsets (issue 12, item 7)
def test_validation_subsets_are_nested_grouped_stratified_and_pure(multiclass) -> None:
    from lesionbench.benchmark.scoring.splits import draw_val_subsets, missing_classes

    meta, df = multiclass
    val = df[df["split"] == "val"]
    for seed in range(2):
        subs = draw_val_subsets(df, meta, fractions=FRACTIONS, seed=seed)
        assert set(subs[1.0].lesion_ids) == set(val["lesion_id"])  # 100%: the whole validation split
        for big, small in zip(FRACTIONS, FRACTIONS[1:]):
            assert set(subs[small].lesion_ids) <= set(subs[big].lesion_ids)
        for f, sub in subs.items():
            assert sub.split == "val" and sub.name == f"frac{f:g}_seed{seed}_val"
            assert sub.n_lesions >= math.ceil(f * len(val))
            chosen = val[val["patient_id"].isin(set(sub.patient_ids))]
            assert set(chosen["lesion_id"]) == set(sub.lesion_ids)  # whole patients
            assert missing_classes(df, meta, sub) == []
        # a pure function of (task version, fraction, seed): the same alone, shuffled, or among other fractions
        alone = draw_val_subsets(df.sample(frac=1.0, random_state=seed), meta, fractions=[0.2], seed=seed)[0.2]
        assert alone.hash == subs[0.2].hash
        # its own stream: not the training draw's patient order
        assert patient_order(df, meta, seed, split="val") != [p for p in patient_order(df, meta, seed) if p in set(val["patient_id"])]
    assert draw_val_subsets(df, meta, fractions=[0.1], seed=0)[0.1].hash != draw_val_subsets(df, meta, fractions=[0.1], seed=1)[0.1].hash
    assert draw_val_subsets(df[df["split"] != "val"], meta, fractions=[0.5], seed=0) == {}


def test_missing_classes_names_what_a_small_validation_subset_lacks(multiclass, tmp_path) -> None:
    from lesionbench.benchmark.scoring.splits import draw_val_subsets, missing_classes

    meta, df = multiclass
    tiny = draw_val_subsets(df, meta, fractions=[0.001], seed=0)[0.001]  # one patient
    lost = missing_classes(df, meta, tiny)
    assert tiny.n_patients == 1 and lost and set(lost) <= set(meta.class_names or [f"class{k}" for k in range(4)])
    back = read_subset(tiny.write(tmp_path / f"{tiny.name}.csv"))
    assert back == dataclasses.replace(tiny, n_train_total=0)
