"""examples/quickstart.ipynb runs top to bottom (nbclient, a fresh kernel) on a small synthetic cohort (issue 22).

The notebook extracts features, evaluates two cheap encoders (radiomics and the example plug-in), plots the
low-data curve, compares them and builds the page; here on 12 patients (QUICKSTART_PATIENTS), the smallest
cohort with seed 0 whose splits all hold both classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[test]')")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[test]')")
pytest.importorskip("lesionbench_example_encoder", reason="the example encoder is not installed (pip install ./examples/lesionbench-example-encoder)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUICKSTART_PATIENTS", "12")
    # the kernel is a new process: it imports this checkout's lesionbench, whatever is installed
    root = str(NOTEBOOK.parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    site = tmp_path / "quickstart-results" / "site"
    assert (site / "index.html").is_file() and (site / "leaderboard.json").is_file()
    assert (tmp_path / "quickstart-results" / "low_data_curve.png").stat().st_size > 1000
    page = (site / "index.html").read_text(encoding="utf-8")
    assert "radiomics" in page and "example-intensity-histogram" in page
