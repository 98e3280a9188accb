from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError
from lesionbench.benchmark.encoders.registry import Registry


def test_register_get_and_did_you_mean() -> None:
    reg: Registry[object] = Registry("task", "lesionbench.tests-none")

    @reg.register("lidc_malignancy")
    def make() -> str:
        return "x"

    assert reg.get("lidc_malignancy") is make
    assert "lidc_malignancy" in reg and reg.names() == ["lidc_malignancy"]
    with pytest.raises(UnknownNameError) as ei:
        reg.get("lidc_malig")
    assert "Unknown task 'lidc_malig'. Did you mean 'lidc_malignancy'? Available: lidc_malignancy" in str(ei.value)
    assert isinstance(ei.value, KeyError)
    with pytest.raises(UnknownNameError) as ei:
        reg.get("zzz")
    assert "Did you mean" not in str(ei.value)


def test_duplicate_registration_is_an_error() -> None:
    reg: Registry[object] = Registry("encoder", "lesionbench.tests-none")
    reg.add("a", lambda: 1)
    with pytest.raises(ConfigurationError, match="registered twice"):
        reg.add("a", lambda: 2)
    reg.add("a", lambda: 3, replace=True)
    assert reg.get("a")() == 3


def test_entry_points_are_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution on sys.path that declares an entry point joins the registry; a broken one is skipped."""
    (tmp_path / "lb_plugin_mod.py").write_text("def make():\n    return 'plugged'\n")
    dist = tmp_path / "lb_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lb-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [lesionbench.tests-ep]
            my_task = lb_plugin_mod:make
            broken = lb_plugin_mod:does_not_exist
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[object] = Registry("task", "lesionbench.tests-ep")
    assert reg.get("my_task")() == "plugged"
    assert "broken" not in reg.names()
    assert "entry point" in reg.origin("my_task")
    sys.modules.pop("lb_plugin_mod", None)
