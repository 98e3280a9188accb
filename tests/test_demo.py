"""The demo's up-front checks: bad options fail at once, and an existing cohort is never overwritten."""

from __future__ import annotations

import json

import pytest

from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError
from lesionbench.demo import run_demo


def test_typo_and_bad_sweep_fail_before_the_cohort_is_generated(tmp_path):
    root = tmp_path / "synthetic"
    with pytest.raises(UnknownNameError, match="Did you mean 'radiomics'"):
        run_demo(data_dir=root, encoders=["radiomic"], use_mlflow=False, progress=False)
    with pytest.raises(ConfigurationError, match=r"Seeds must be non-negative integers; got \[-1\]"):
        run_demo(data_dir=root, encoders=["radiomics"], seeds=[-1], use_mlflow=False, progress=False)
    with pytest.raises(ConfigurationError, match=r"fractions must lie in \(0, 1\]; got \[1.5\]"):
        run_demo(data_dir=root, encoders=["radiomics"], fractions=[1.5], use_mlflow=False, progress=False)
    assert not root.exists()  # nothing generated for a command that cannot run


def test_existing_cohort_of_another_size_is_not_overwritten(tmp_path):
    root = tmp_path / "synthetic"
    root.mkdir()
    record = {"generator": "lesionbench.tasks.synthetic", "patients": 16, "seed": 0}
    (root / "cohort.json").write_text(json.dumps(record))
    with pytest.raises(ConfigurationError, match=r"already holds a synthetic cohort of 16 patients; --patients 64 would overwrite"):
        run_demo(data_dir=root, encoders=["radiomics"], patients=64, use_mlflow=False, progress=False)
    assert json.loads((root / "cohort.json").read_text()) == record
