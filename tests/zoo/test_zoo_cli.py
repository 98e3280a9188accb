"""The zoo on the command line: `encoders list`, --recipe / --random-init, and the demo's plan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionbench.baselines.zoo import _weights as _zoo_weights
from lesionbench.baselines.zoo.catalog import demo_plan, encoder_choice, rows
from lesionbench.baselines.zoo.ct_fm import MODEL as CTFM
from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.cli import main


def test_encoders_list_long_shows_recipe_dim_licence_and_weights_presence(capsys):
    assert main(["-q", "encoders", "list", "--long"]) == 0
    out = capsys.readouterr().out
    line = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "tib: 48x48x48 SPL" in line["ct-fm:tib"] and " 512 " in line["ct-fm:tib"]
    assert "absent: model.safetensors from https://huggingface.co/project-lighter/ct_fm_feature_extractor" in line["ct-fm"]
    assert "[NON-COMMERCIAL]" in line["vista3d"] and "[NON-COMMERCIAL]" not in line["ct-fm"]
    assert "not needed (seeded random weights)" in line["ct-fm-random-init"]
    assert "fmcib" in line and "radiomics" in line


def test_encoders_list_compact_and_json(capsys):
    import json

    assert main(["encoders", "list", "-q"]) == 0  # -q after the command too
    out = capsys.readouterr().out
    line = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:] if ln and not ln.startswith("--long")}
    assert line["ct-fm:tib"][:4] == ["ct-fm:tib", "ct-fm", "512", "absent"] and line["ct-fm-random-init"][3] == "random"
    assert "(non-commercial)" in " ".join(line["vista3d"]) and max(len(ln) for ln in out.splitlines()[:-1]) < 160
    assert line["fmcib"][:3] == ["fmcib", "fmcib", "4096"] and line["radiomics"][-1] == "built-in"
    assert main(["-q", "encoders", "list", "--json"]) == 0
    table = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert table["ct-fm"]["weights"].startswith("absent: model.safetensors") and table["ct-fm"]["weights_state"] == "absent"
    assert table["vista3d"]["non_commercial"] is True and table["fmcib"]["origin"] == "built-in"


def test_weights_in_the_cache_folder_count_as_present_without_hashing():
    dest = _zoo_weights.model_dir(CTFM) / CTFM.weights.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"x")
    row = next(r for r in rows() if r.name == "ct-fm")
    assert row.weights == f"present ({dest})"


def test_encoder_choice_maps_random_init_and_recipe():
    assert encoder_choice("ct-fm", recipe=None, random_init=False) == ("ct-fm", {})
    assert encoder_choice("ct-fm:tib", recipe=None, random_init=True) == ("ct-fm-random-init", {"recipe": "tib"})
    assert encoder_choice("ct-fm", recipe="tib", random_init=True) == ("ct-fm-random-init", {"recipe": "tib"})
    assert encoder_choice("fmcib", recipe=None, random_init=True) == ("fmcib-random-init", {})
    with pytest.raises(ConfigurationError, match="no random-init control"):
        encoder_choice("radiomics", recipe=None, random_init=True)
    with pytest.raises(ConfigurationError, match="leave out --weights"):
        encoder_choice("ct-fm", recipe=None, random_init=True, weights="w.pt")
    with pytest.raises(ConfigurationError, match="names the recipe 'tib' but --recipe is 'official'"):
        encoder_choice("ct-fm:tib", recipe="official", random_init=False)


def test_demo_skips_zoo_models_without_weights_with_one_line_and_runs_controls_only_when_full():
    run, skipped = demo_plan(full=False)
    assert "ct-fm" not in run and not any(n.endswith("-random-init") for n in run)
    assert "\n" not in skipped["ct-fm"] and "model.safetensors" in skipped["ct-fm"]
    run_full, _ = demo_plan(full=True)
    assert {"ct-fm-random-init", "vista3d-random-init"} <= set(run_full)


def test_extract_with_random_init_and_tib_recipe(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tib import write_volumes

    seeds = write_volumes(tmp_path).iloc[:2]
    seeds.to_csv(tmp_path / "seeds.csv", index=False)
    out = tmp_path / "f.csv"
    assert main(["-q", "extract", str(tmp_path / "seeds.csv"), "--encoder", "ct-fm", "--recipe", "tib", "--random-init", "--device", "cpu", "-o", str(out)]) == 0
    feats = pd.read_csv(out).filter(like="pred_").to_numpy()
    assert feats.shape == (2, 512) and np.isfinite(feats).all()
    assert main(["-q", "extract", str(tmp_path / "seeds.csv"), "--encoder", "radiomics", "--random-init", "-o", str(out)]) == 2


def test_demo_random_init_picks_the_controls(monkeypatch):
    from lesionbench.demo import demo_random_init

    assert demo_random_init(["ct-fm:tib", "fmcib", "ct-fm"]) == ["ct-fm-random-init", "fmcib-random-init"]
    everything = demo_random_init(None)
    assert everything[:2] == ["fmcib", "fmcib-random-init"] and {"ct-fm-random-init", "vista3d-random-init"} <= set(everything)
    seen = {}

    def fake_run_demo(**kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr("lesionbench.demo.run_demo", fake_run_demo)
    with pytest.raises(SystemExit):
        main(["-q", "demo", "--encoders", "vista3d", "--random-init"])
    assert seen["encoders"] == ["vista3d-random-init"]
