"""The extra synthetic tasks: derived from lesions.csv, first three tasks untouched, labels as documented."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.encoders.plugins import get_task
from lesionbench.tasks import synthetic as S
from lesionbench.tasks.synthetic.extra import EXTRA_TASK_NAMES, extra_manifests, mutation_label, write_extra_manifests


def _lesions(n_patients: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        b = round(float(rng.standard_normal()), 4)
        for k in range(1 + p % 3):
            rows.append({
                "lesion_id": f"P{p:05d}_L{k + 1}", "patient_id": f"P{p:05d}", "image_path": f"images/P{p:05d}.nii.gz",
                "mask_path": f"masks/P{p:05d}_L{k + 1}.nii.gz", "coordX": 1.0, "coordY": 2.0, "coordZ": 3.0, "diameter_mm": 12.0,
                "split": ("train", "val", "test")[p % 3], "site": int(rng.integers(8)), "malignant": int(rng.integers(2)), "biology": b,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_abdominal_task_keeps_liver_and_kidney_lesions_with_their_malignancy() -> None:
    lesions = _lesions()
    ab = extra_manifests(lesions, 0)["synthetic_abdominal_malignancy"]
    want = lesions[lesions["site"].isin([S.LIVER, S.KIDNEY])]
    assert list(ab["lesion_id"]) == list(want["lesion_id"]) and list(ab["label"]) == list(want["malignant"])
    assert (S.LIVER, S.KIDNEY) == (3, 5) and ab["image_path"].str.startswith("../images/").all()


def test_mutation_is_per_patient_driven_by_biology_and_about_a_third() -> None:
    lesions = _lesions(2000)
    mut = extra_manifests(lesions, 0)["synthetic_mutation"]
    assert (mut.groupby("patient_id")["label"].nunique() == 1).all()
    per_patient = mut.groupby("patient_id")["label"].first()
    assert 0.25 < per_patient.mean() < 0.42
    b = lesions.groupby("patient_id")["biology"].first()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(per_patient, b.loc[per_patient.index]) > 0.9  # the hidden biology nearly determines it
    # the documented formula, reproducible from the seed and the patient index alone
    assert mut.loc[mut["patient_id"] == "P00007", "label"].iloc[0] == mutation_label(0, 7, float(b["P00007"]))
    assert mutation_label(0, 7, 0.0) == int(0.45 * np.random.default_rng([0, 7, 7]).standard_normal() > 0.4)
    other = extra_manifests(lesions, 1)["synthetic_mutation"]
    assert not other["label"].equals(mut["label"])  # another cohort seed, another noise draw


def test_missing_columns_are_one_clear_error() -> None:
    with pytest.raises(DataPreparationError, match=r"lacks column\(s\) \['biology'\]"):
        extra_manifests(_lesions(5).drop(columns="biology"), 0)


def test_an_existing_cohort_gains_the_extra_tasks_without_any_other_file_changing(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    S.generate_cohort(root, patients=3, seed=0, workers=1, progress=False)

    def digests() -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    made = digests()
    for t in EXTRA_TASK_NAMES:
        assert f"{t}/manifest.csv" in made
        (root / t / "manifest.csv").unlink()  # as a cohort generated before the extra tasks existed
    before = digests()
    assert S.ensure_cohort(root, patients=3, seed=0) == root
    after = digests()
    assert {k: v for k, v in after.items() if k in before} == before  # images, masks, the three manifests untouched
    assert after == made  # the extra manifests come back byte for byte
    assert write_extra_manifests(root, seed=0) == []
    for t in EXTRA_TASK_NAMES:
        m = get_task(t, data_dir=root / t).manifest()
        assert set(m["label"]) <= {0, 1} and m["image_path"].map(lambda p: Path(p).is_file()).all()
