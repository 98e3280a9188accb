"""A zoo encoder's model card travels with its result: result.json, MLflow params, the page's provenance."""

from __future__ import annotations

import dataclasses
import json
import os

from lesionbench.baselines.zoo.vista3d import MODEL
from lesionbench.benchmark.scoring._fabricate import fabricate, fabricated_encoder_meta
from lesionbench.benchmark.scoring.scorer import evaluate_features, result_dir
from lesionbench.benchmark.tracking.mlflow_sink import log_result

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
FAST = {"fractions": (1.0,), "seeds": (0,), "n_boot": 20, "c_grid": (1.0,), "refine": False, "progress": False}


def test_card_in_result_json_mlflow_params_and_page(tmp_path):
    task, X = fabricate("binary", n_lesions=120, feature_dim=4, seed=1)
    card = MODEL.card_items("tib", weights_sha256="ab" * 32, tensors_loaded=83)
    meta = dataclasses.replace(fabricated_encoder_meta(4, name="vista3d:tib"), card=card)
    out = tmp_path / "out"
    r = evaluate_features(task.manifest(), X, task.meta, encoder=meta, out_dir=out, **FAST)
    rdir = result_dir(out, task.meta.name, task.meta.version, meta.name, "linear")
    saved = json.loads((rdir / "result.json").read_text())
    assert dict(saved["encoder"]["card"])["non_commercial"] == "yes"
    assert dict(map(tuple, saved["encoder"]["card"]))["tensors_loaded"] == "83"

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pid = log_result(r, rdir, tracking_uri=uri)
    from mlflow.tracking import MlflowClient

    params = MlflowClient(uri).get_run(pid).data.params
    assert params["encoder.card.parameters"] == "174,951,120" and params["encoder.feature_dim"] == "4"
    assert params["encoder.card.recipe"].startswith("tib: 48x48x48 RAS") and "NON-COMMERCIAL" in params["encoder.card.weights_licence"]

    from lesionbench.leaderboard import build_leaderboard

    page = build_leaderboard(out=tmp_path / "lb", results_dir=out, n_boot=20, n_perm=20).read_text(encoding="utf-8")
    assert "parameters: 174,951,120" in page and "(NON-COMMERCIAL)" in page and "11,454 CT volumes" in page
