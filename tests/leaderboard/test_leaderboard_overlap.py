"""Pre-training overlap: every shipped encoder declares its sets, one alias table, the marks on a board."""

from __future__ import annotations

import dataclasses

import pytest
from _lb_fixtures import BINARY, MULTI, make_manifest, write_result

from lesionbench.tasks._sources import overlap, related


def test_every_registered_encoder_declares_its_pretraining_sets() -> None:
    from lesionbench.baselines.zoo.catalog import pretraining_sets
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    # the encoders lesionbench ships (entry-point plug-ins of other packages declare theirs in their cards)
    names = [n for n in ENCODERS.names() if getattr(ENCODERS.get(n), "__module__", "").startswith("lesionbench.")]
    assert {"fmcib", "radiomics", "supervised-cnn", "models-genesis", "ct-fm", "suprem", "merlin"} <= set(names)
    undeclared = [n for n in names if pretraining_sets(n) is None]
    assert undeclared == [], f"encoders without declared pre-training sets: {undeclared}"
    assert pretraining_sets("radiomics") == frozenset() and pretraining_sets("supervised-cnn") == frozenset()
    assert pretraining_sets("fmcib") == frozenset({"DeepLesion"}) and pretraining_sets("ct-fm-random-init") == frozenset()
    assert "LUNA16" in pretraining_sets("models-genesis:tib")


@pytest.mark.parametrize(
    ("pretraining", "sources", "mark"),
    [
        (("LUNA16",), ("LIDC-IDRI",), "yes"),  # LUNA16's scans are LIDC-IDRI's
        (("lidc_idri",), ("LUNA16",), "yes"),  # spelling
        (("MSD Task06 Lung",), ("NSCLC-Radiogenomics",), "yes"),  # the Decathlon's lung task
        (("TCIA NSCLC Radiomics",), ("NSCLC-Radiomics",), "yes"),
        (("KiTS23",), ("C4KC-KiTS",), "yes"),
        (("Imaging Data Commons",), ("NSCLC-Radiomics",), "yes"),  # a pool holding the collection
        (("IDC",), ("DeepLesion",), "no"),  # DeepLesion is not a TCIA/IDC collection
        (("PreCT-160K",), ("LUNA16", "LIDC-IDRI"), "yes"),
        (("PreCT-160K",), ("NSCLC-Radiomics",), "unknown"),  # members not enumerated: never "no"
        (("DeepLesion",), ("LUNA16", "LIDC-IDRI"), "no"),
        ((), ("DeepLesion",), "no"),  # declares no pre-training data
        (None, ("DeepLesion",), "unknown"),
        (("DeepLesion",), None, "unknown"),
    ],
)
def test_overlap_through_the_alias_table(pretraining, sources, mark) -> None:
    assert overlap(pretraining, sources) == mark


def test_related_names_are_spelling_free() -> None:
    assert related("LUNA16") == related("luna 16".replace(" ", "")) == frozenset({"luna16", "lidc-idri"})
    assert related("Task06_Lung") == frozenset({"task06-lung", "nsclc-radiogenomics"})


def test_board_marks_fmcib_deeplesion_models_genesis_luna16_and_radiomics(tmp_path) -> None:
    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import load_local_results
    from lesionbench.leaderboard.render import render_html

    deeplesion = dataclasses.replace(MULTI, name="deeplesion_site")
    for meta in (BINARY, deeplesion):
        man = make_manifest(meta)
        for i, (enc, q) in enumerate({"fmcib": 2.0, "models-genesis": 1.0, "radiomics": 0.5}.items()):
            write_result(meta, man, enc, q, tmp_path, seed=i, fractions=(1.0,))
    doc = build_document(load_local_results(tmp_path), n_boot=20, n_perm=20, include_published=False)
    agg = doc["aggregate"]
    marks = {m["encoder"]: m["overlaps"] for m in agg["encoders"]}
    assert marks["fmcib"] == {"deeplesion_site": "yes", "luna16_malignancy": "no"}
    assert marks["models-genesis"] == {"deeplesion_site": "no", "luna16_malignancy": "yes"}
    assert marks["radiomics"] == {"deeplesion_site": "no", "luna16_malignancy": "no"}
    clean = agg["protocols"][0]["tables"][1]
    assert clean["excluded_tasks"] == ["deeplesion_site", "luna16_malignancy"] and clean["rows"] == []
    html = render_html(doc)
    assert "pre-trained: no public set" in html and "pre-trained: DeepLesion" in html
