"""The conformance suites catch broken plug-ins (and pass good ones)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.data.manifest import ManifestTask
from lesionbench.benchmark.encoders.testing import check_encoder, check_task
from lesionbench.benchmark.types import EncoderMeta, PatchSpec, TaskKind, TaskMeta


class Centre:
    def __init__(self, dtype=np.float32, shuffle=False, stateful=False):
        self.meta = EncoderMeta(name="centre", version="1", feature_dim=3, patch=PatchSpec())
        self.dtype, self.shuffle, self.stateful, self.calls = dtype, shuffle, stateful, 0

    def encode(self, patches):
        self.calls += 1
        p = patches[:, 0]
        f = np.stack([p[:, 25, 25, 25], p.mean((1, 2, 3)), p[:, 20:30, 20:30, 20:30].max((1, 2, 3))], axis=1)
        if self.stateful:
            f = f + self.calls
        if self.shuffle:
            f = np.sort(f, axis=0)
        if self.dtype == "batchnorm":  # depends on the other patches of the batch
            return (f - f.mean(0)).astype(np.float32)
        return f.astype(self.dtype)


def test_check_encoder_catches_broken_encoders():
    check_encoder(Centre())
    with pytest.raises(AssertionError, match="float32"):
        check_encoder(Centre(dtype=np.float64))
    with pytest.raises(AssertionError, match="not deterministic"):
        check_encoder(Centre(stateful=True))
    with pytest.raises(AssertionError, match="order"):
        check_encoder(Centre(shuffle=True))
    with pytest.raises(AssertionError, match="batch composition"):
        check_encoder(Centre(dtype="batchnorm"))


class TinyTask(ManifestTask):
    meta = TaskMeta(name="tiny", version="1", kind=TaskKind.BINARY, description="test", main_metric="auc", metrics=("auc", "ap"))


def _tiny(tmp_path, far: bool = False):
    img = sitk.GetImageFromArray(np.zeros((20, 30, 30), dtype=np.int16))
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    rows = []
    for i in range(8):
        rows.append({"lesion_id": f"L{i}", "patient_id": f"P{i // 2}", "image_path": "ct.nii.gz", "coordX": 5.0 + 2 * i, "coordY": 10.0,
                     "coordZ": 500.0 if (far and i == 3) else 12.0, "split": ["train", "train", "val", "test"][i % 4], "label": i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return TinyTask(data_dir=tmp_path)


def test_check_task(tmp_path):
    df = check_task(_tiny(tmp_path))
    assert len(df) == 8


def test_check_task_finds_seed_outside_image(tmp_path):
    with pytest.raises(AssertionError, match="1 seed\\(s\\) outside their image: L3"):
        check_task(_tiny(tmp_path, far=True))
