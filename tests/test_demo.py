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


def test_demo_that_scores_nothing_is_one_error_with_every_reason(tmp_path, monkeypatch):
    import lesionbench.tasks.synthetic as synthetic
    from lesionbench.benchmark.scoring import scorer
    from lesionbench.benchmark.errors import SplitError

    monkeypatch.setattr(synthetic, "ensure_cohort", lambda root, **kw: root)

    def fail(task, encoder, **kw):
        raise SplitError(f"no test lesions in {task.meta.name}")

    monkeypatch.setattr(scorer, "evaluate", fail)
    with pytest.raises(ConfigurationError) as err:
        run_demo(data_dir=tmp_path, out_dir=tmp_path / "out", encoders=["radiomics"], use_mlflow=False, progress=False)
    msg = str(err.value)
    assert msg.startswith("The demo scored nothing; every run failed:")
    for task in ("synthetic_site", "synthetic_malignancy", "synthetic_survival"):
        assert f"radiomics/{task}: no test lesions in {task}" in msg
    assert not (tmp_path / "out" / "leaderboard").exists()  # no empty page
