"""Fixtures for the leaderboard tests (helpers in ``_lb_fixtures``): a tiny real MLflow store and fast temp folders."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers module sits beside this file; make it importable under any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lb_fixtures import BINARY, MULTI, SURV, Store, log_to_mlflow, make_manifest, write_result

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def fast_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session folder in RAM when the machine has one: sqlite's fsyncs make MLflow ~5x slower on disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="lesionbench-tests-", dir=shm))
        yield root
        shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("fast")


@pytest.fixture(scope="session")
def empty_mlflow_db(fast_dir: Path) -> Path:
    """An initialised, empty MLflow sqlite database to copy (creating one runs every migration: seconds)."""
    from mlflow.tracking import MlflowClient

    db = fast_dir / "template" / "mlflow.db"
    db.parent.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def fresh_tracking_uri(empty_mlflow_db: Path, fast_dir: Path) -> str:
    """A new, empty MLflow store for one test."""
    folder = Path(tempfile.mkdtemp(prefix="store-", dir=fast_dir))
    shutil.copy(empty_mlflow_db, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def lb_store(fast_dir: Path, empty_mlflow_db: Path) -> Store:
    """A tiny real MLflow store (sqlite) plus the same results as local files."""
    from mlflow.tracking import MlflowClient

    root = fast_dir / "lb-store"
    root.mkdir()
    shutil.copy(empty_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("lesionbench", artifact_location=(root / "artifacts").as_uri())
    results = root / "results"
    qualities = {
        BINARY.name: {"fmcib": 1.5, "radiomics": 1.1, "supervised-cnn": 0.5},
        MULTI.name: {"fmcib": 1.6, "radiomics": 1.0},
        SURV.name: {"fmcib": 0.8, "radiomics": 0.3},
    }
    manifests, run_ids = {}, {}
    for i, meta in enumerate((BINARY, MULTI, SURV)):
        man = make_manifest(meta, seed=i)
        manifests[meta.name] = man
        for j, (enc, q) in enumerate(qualities[meta.name].items()):
            folder = write_result(meta, man, enc, q, results, seed=j, weights="ab" * 32 if enc == "fmcib" else "")
            # One encoder keeps its predictions on the child runs only (the loader must find them there).
            run_ids[(meta.name, enc)] = log_to_mlflow(folder, uri, exp, predictions_on_parent=enc != "radiomics")
    return Store(uri, results, manifests, qualities, run_ids)
