"""The bring-your-own-model example: an installed package joins through the entry point alone."""

from __future__ import annotations

from importlib import metadata

import pytest

from lesionbench.benchmark.encoders.plugins import ENCODERS, get_encoder
from lesionbench.benchmark.encoders.testing import check_encoder

NAME = "example-intensity-histogram"


def _installed() -> bool:
    return any(ep.name == NAME for ep in metadata.entry_points(group="lesionbench.encoders"))


@pytest.mark.skipif(
    not _installed(),
    reason="the example plug-in is not installed: pip install ./examples/lesionbench-example-encoder",
)
def test_example_encoder_found_through_entry_point_and_conforms():
    assert NAME in ENCODERS.names()
    assert ENCODERS.origin(NAME).startswith("entry point lesionbench_example_encoder")
    enc = get_encoder(NAME)
    assert enc.meta.feature_dim == 24
    check_encoder(enc)


def test_example_encoder_module_conforms_without_installing():
    # the one-file encoder itself, loaded from the examples folder
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "lesionbench-example-encoder" / "lesionbench_example_encoder.py"
    spec = importlib.util.spec_from_file_location("lesionbench_example_encoder_file", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    check_encoder(mod.IntensityHistogramEncoder())
