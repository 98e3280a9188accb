"""The synthetic cohort's test-retest twin: same lesions and labels, a new noise draw, a small rigid shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import ConfigurationError, ManifestError
from lesionbench.benchmark.robustness.retest import read_retest_manifest, retest_pairs
from lesionbench.tasks import synthetic as S
from lesionbench.tasks.synthetic.retest import RETEST_SHIFT_MM, ensure_retest_twin


def test_twin_is_the_same_patient_rescanned(tmp_path: Path) -> None:
    import SimpleITK as sitk

    cohort = S.generate_cohort(tmp_path / "c", patients=1, seed=0, progress=False)
    manifest = ensure_retest_twin(cohort, splits=("train", "val", "test"))
    first, second = retest_pairs(read_retest_manifest(manifest))
    lesions = pd.read_csv(cohort / "lesions.csv")
    assert first["lesion_id"].tolist() == lesions["lesion_id"].tolist()
    moved = np.linalg.norm(second[["coordX", "coordY", "coordZ"]].to_numpy() - first[["coordX", "coordY", "coordZ"]].to_numpy(), axis=1)
    assert np.all((moved >= RETEST_SHIFT_MM[0] - 1e-3) & (moved <= RETEST_SHIFT_MM[1] + 1e-3))
    assert np.allclose(moved, moved[0], atol=1e-3)  # one rigid shift per patient
    a, b = (sitk.ReadImage(p) for p in (first.at[0, "image_path"], second.at[0, "image_path"]))
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
    va, vb = sitk.GetArrayFromImage(a).astype(float), sitk.GetArrayFromImage(b).astype(float)
    assert not np.array_equal(va, vb)
    assert np.corrcoef(va.ravel(), vb.ravel())[0, 1] > 0.9  # the same anatomy
    for row in second.to_dict("records"):  # each moved seed still lies in its moved mask
        mask = sitk.ReadImage(row["mask_path"])
        assert mask.GetPixel(mask.TransformPhysicalPointToIndex((row["coordX"], row["coordY"], row["coordZ"]))) == 1
    # seeded: a second call finds the twin; the cohort itself is untouched
    stamp = Path(manifest).stat().st_mtime_ns
    assert ensure_retest_twin(cohort, splits=("test", "val", "train")) == manifest and Path(manifest).stat().st_mtime_ns == stamp
    assert pd.read_csv(cohort / "lesions.csv").equals(lesions)


def test_twin_needs_a_cohort_and_known_splits(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="lesionbench synth"):
        ensure_retest_twin(tmp_path)
    (tmp_path / "cohort.json").write_text('{"seed": 0, "patients": 1}')
    with pytest.raises(ConfigurationError, match="choose from train, val, test"):
        ensure_retest_twin(tmp_path, splits=("testing",))
