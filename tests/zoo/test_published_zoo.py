"""Reference rows of the zoo's models: the FMCIB paper's Med3D / Models Genesis points and TIB's k-NN rows."""

from __future__ import annotations

from lesionbench.leaderboard.build import build_document
from lesionbench.leaderboard.published import PUBLISHED, TIB_SOURCE, published_for


def test_med3d_and_models_genesis_limited_label_points():
    def point(approach, task, metric, frac):
        rows = [p for p in published_for(task, fraction=frac) if p.approach == approach and metric in p.metrics]
        assert len(rows) == 1, (approach, task, metric, frac, rows)
        return rows[0].metrics[metric][0]

    assert [point("Models Genesis features", "deeplesion_site", "map", f) for f in (0.1, 0.2, 0.5, 1.0)] == [0.626, 0.674, 0.764, 0.791]
    assert [point("Med3D features", "deeplesion_site", "map", f) for f in (0.1, 0.2, 0.5, 1.0)] == [0.549, 0.597, 0.630, 0.659]
    assert [point("Med3D features", "luna16_malignancy", "auc", f) for f in (0.1, 0.2, 0.5)] == [0.703, 0.756, 0.771]
    assert point("FMCIB features + linear probe", "deeplesion_site", "balanced_accuracy", 0.1) == 0.706
    # one row per (approach, task, fraction): metrics of the same point are merged
    keys = [(p.approach, p.task, p.fraction) for p in PUBLISHED]
    assert len(keys) == len(set(keys))


def test_tib_rows_are_labelled_with_their_protocol_and_never_ranked():
    tib = [p for p in PUBLISHED if p.source == TIB_SOURCE]
    assert len(tib) == 27 and all("k-NN, pooled re-splits" in p.approach and p.fraction == 1.0 for p in tib)
    ct_fm = next(p for p in tib if p.approach.startswith("CT-FM") and p.task == "luna16_malignancy")
    assert ct_fm.metrics == {"auc": (0.654, 0.626, 0.683)}
    d = ct_fm.to_dict()
    assert "TumorImagingBench" in d["citation"] and "not comparable" in d["note"]
    doc = build_document([], n_boot=10, n_perm=10)  # no measured results: the reference rows stand apart, unranked
    assert doc["tasks"] == []
    luna = next(t for t in doc["reference_only"] if t["name"] == "luna16_malignancy")
    assert sum("TIB: k-NN, pooled re-splits" in r["approach"] for r in luna["reference"]) == 9
    assert all("rank" not in r for r in luna["reference"])
