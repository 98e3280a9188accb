"""Shared fixtures. Every test runs in an empty working directory of its own, with its data and cache
roots in a temporary folder and MLflow offline, so the CLI's defaults (./lesionbench-results,
./mlflow.db, $MLFLOW_TRACKING_URI) never meet a user's results, e.g. the demo's in the checkout."""

from __future__ import annotations

import locale
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: ../shared beside the checkout: read-only reference data and tools (never copied into the project).
#: LESIONBENCH_SHARED overrides it (a worktree elsewhere than beside ../shared).
SHARED = Path(os.environ.get("LESIONBENCH_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


#: Each test's outcome by phase, so that a passing test's folders can go (as tmp_path_retention_policy does for tmp_path).
_PASSED = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    item.stash.setdefault(_PASSED, {})[report.when] = report.passed
    return report


@pytest.fixture(autouse=True)
def _isolated_roots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The folder is emptied after a passing test (kept after a failing one, to look at): the suite must fit on a
    CI machine's disk (it left 14 GB behind when every test's folders were kept)."""
    root = tmp_path_factory.mktemp("lesionbench-home")
    monkeypatch.setenv("LESIONBENCH_DATA", str(root / "data"))
    monkeypatch.setenv("LESIONBENCH_CACHE", str(root / "cache"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (root / "cwd").mkdir()
    monkeypatch.chdir(root / "cwd")
    yield
    if request.node.stash.get(_PASSED, {}).get("call", False):
        # the contents go, the working directory stays: a process started during the test (a Dask worker a
        # nanny restarted) keeps it as its own, and one whose working directory vanished dies (exit 2)
        for child in [root / "data", root / "cache", *(root / "cwd").iterdir()]:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _locale_restored():
    """GDCM's DICOM writer (SimpleITK, in the partial-reading tests' fixtures) sets the process locale to "C",
    after which every locale-encoded text read or subprocess in that xdist worker decodes as ASCII."""
    before = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != before:
        locale.setlocale(locale.LC_ALL, before)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED
