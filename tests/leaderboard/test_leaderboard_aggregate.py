"""The benchmark-level table: mean rank, Borda, joint patient bootstrap, tiers, overlaps, page and Markdown."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from _lb_fixtures import BINARY, MULTI, SURV, make_manifest, write_result

from lesionbench.benchmark.scoring.metrics import compute_metrics, resampled_values, weighted_values
from lesionbench.benchmark.types import TaskKind
from lesionbench.leaderboard.aggregate import TaskScores, aggregate_ranks, joint_weights, overlap


def _binary(name: str, qualities: dict[str, float], n: int, seed: int, patients: np.ndarray | None = None) -> TaskScores:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    scores = {e: q * (2 * y - 1) + rng.normal(0, 1, n) for e, q in qualities.items()}
    return TaskScores(name, TaskKind.BINARY, "auc", y, scores, patients)


def test_weighted_values_agree_with_the_plain_metric_and_the_bootstrap() -> None:
    t = _binary("t", {"a": 1.0}, 60, 0)
    ones = weighted_values(TaskKind.BINARY, t.y, t.scores["a"], "auc", np.ones((1, 60)))
    assert ones[0] == pytest.approx(compute_metrics(TaskKind.BINARY, t.y, t.scores["a"], ["auc"])["auc"])
    from lesionbench.benchmark.scoring.metrics import bootstrap_weights

    w = bootstrap_weights(60, 50, 3)
    np.testing.assert_allclose(weighted_values(TaskKind.BINARY, t.y, t.scores["a"], "auc", w), resampled_values(TaskKind.BINARY, t.y, t.scores["a"], "auc", n_boot=50, seed=3))


def test_mean_rank_and_borda_by_hand() -> None:
    # task 1: a > b > c; task 2: b > a > c; task 3 (c absent): a > b
    y = np.array([0, 0, 0, 1, 1, 1], float)
    perfect, half, worst = np.array([0, 1, 2, 3, 4, 5.0]), np.array([0, 3, 2, 1, 4, 5.0]), np.array([5, 4, 3, 2, 1, 0.0])
    tasks = [
        TaskScores("t1", TaskKind.BINARY, "auc", y, {"a": perfect, "b": half, "c": worst}),
        TaskScores("t2", TaskKind.BINARY, "auc", y, {"a": half, "b": perfect, "c": worst}),
        TaskScores("t3", TaskKind.BINARY, "auc", y, {"a": perfect, "b": half}),
    ]
    agg = aggregate_ranks(tasks, n_boot=0)
    rows = {r.encoder: r for r in agg.rows}
    assert rows["a"].mean_rank == pytest.approx((1 + 2 + 1) / 3) and rows["b"].mean_rank == pytest.approx((2 + 1 + 2) / 3)
    assert rows["c"].mean_rank == 3.0 and dict(rows["c"].task_ranks) == {"t1": 3.0, "t2": 3.0}
    assert (rows["a"].borda, rows["b"].borda, rows["c"].borda) == (2 + 1 + 1, 1 + 2 + 0, 0)
    assert [r.encoder for r in agg.rows] == ["a", "b", "c"] and [r.rank for r in agg.rows] == [1, 2, 3]
    # without resamples nothing is separable
    assert {r.tier for r in agg.rows} == {1} and all(r.rank_interval is None for r in agg.rows)


def test_joint_bootstrap_draws_a_shared_patient_alike_in_every_task() -> None:
    pa = np.array(["P1", "P1", "P2", "P3"])
    pb = np.array(["P3", "P4", "P1"])
    ta = TaskScores("a", TaskKind.BINARY, "auc", np.zeros(4), {"x": np.zeros(4)}, pa)
    tb = TaskScores("b", TaskKind.BINARY, "auc", np.zeros(3), {"x": np.zeros(3)}, pb)
    wa, wb = joint_weights([ta, tb], 200, 0)
    assert wa.shape == (200, 4) and wb.shape == (200, 3)
    np.testing.assert_array_equal(wa[:, 0], wa[:, 1])  # two lesions of P1 in task a
    np.testing.assert_array_equal(wa[:, 0], wb[:, 2])  # P1 across tasks
    np.testing.assert_array_equal(wa[:, 3], wb[:, 0])  # P3 across tasks
    assert np.all(wa.sum(axis=1) + wb[:, 1] == pytest.approx(wa[:, [0, 2, 3]].sum(axis=1) + wa[:, 1] + wb[:, 1]))
    assert not np.array_equal(wa[:, 2], wb[:, 1])  # P2 and P4 are drawn independently


def test_tiers_separate_a_clear_ordering_and_keep_equal_encoders_together() -> None:
    tasks = [_binary(f"t{i}", {"strong": 2.0, "weak": 0.0, "weak2": 0.0}, 300, i) for i in range(5)]
    agg = aggregate_ranks(tasks, n_boot=300, seed=0)
    tiers = {r.encoder: r.tier for r in agg.rows}
    assert agg.rows[0].encoder == "strong" and tiers["strong"] == 1
    assert tiers["weak"] == tiers["weak2"] == 2
    assert agg.rows[0].rank_interval == (1, 1)
    # equal encoders (the same signal, independent noise): one tier
    equal = [_binary(f"t{i}", {"a": 0.5, "b": 0.5, "c": 0.5}, 120, 10 + i) for i in range(5)]
    assert {r.tier for r in aggregate_ranks(equal, n_boot=300, seed=0).rows} == {1}


def test_overlap_marks_unknown_when_undeclared() -> None:
    assert overlap(frozenset({"DeepLesion"}), ("DeepLesion",)) == "yes"
    assert overlap(frozenset({"deeplesion"}), ("LUNA16", "LIDC-IDRI")) == "no"
    assert overlap(None, ("LUNA16",)) == "unknown"
    assert overlap(frozenset(), None) == "unknown"


def test_document_page_and_markdown_carry_the_aggregate(tmp_path) -> None:
    from jsonschema import validate

    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import load_local_results
    from lesionbench.leaderboard.render import render_html, render_markdown
    from lesionbench.leaderboard.schema import LEADERBOARD_SCHEMA

    qualities = {"fmcib": 2.0, "models-genesis": 1.0, "third-party": 0.2}
    for meta in (BINARY, MULTI, SURV):
        man = make_manifest(meta)
        for i, (enc, q) in enumerate(qualities.items()):
            write_result(meta, man, enc, q, tmp_path, seed=i, fractions=(1.0,))
    doc = build_document(load_local_results(tmp_path), n_boot=100, n_perm=50, include_published=False)
    validate(json.loads(json.dumps(doc)), LEADERBOARD_SCHEMA)
    agg = doc["aggregate"]
    assert [pb["protocol"] for pb in agg["protocols"]] == ["linear"]
    linear = agg["protocols"][0]
    assert [t["name"] for t in linear["tasks"]] == ["luna16_malignancy", "synthetic_site", "synthetic_survival"]
    main = linear["tables"][0]
    assert [r["encoder"] for r in main["rows"]][0] == "fmcib" and main["rows"][0]["borda"] == 6
    # fmcib was pre-trained on DeepLesion (no overlap here), Models Genesis on LUNA16 / LIDC-IDRI
    marks = {m["encoder"]: m["overlaps"] for m in agg["encoders"]}
    assert marks["models-genesis"]["luna16_malignancy"] == "yes" and marks["fmcib"]["luna16_malignancy"] == "no"
    assert marks["third-party"]["synthetic_site"] == "unknown" and marks["fmcib"]["synthetic_site"] == "no"
    clean = linear["tables"][1]
    assert clean["name"] == "non_overlapping" and clean["excluded_tasks"] == ["luna16_malignancy"]
    assert clean["tasks"] == ["synthetic_site", "synthetic_survival"] and clean["unknown_tasks"] == ["synthetic_site", "synthetic_survival"]
    html, md = render_html(doc), render_markdown(doc)
    assert 'id="aggregate-linear-all"' in html and 'id="aggregate-linear-non_overlapping"' in html and "overlap</b>" in html
    # the page names the tasks each table ranked on and those it left out
    assert "Ranked on: synthetic_site, synthetic_survival. Left out (an encoder was pre-trained on their data): luna16_malignancy." in html
    assert "## All tasks — one ranking per protocol" in md and "| 1 | 1 | fmcib |" in md and "Ranked on: synthetic\\_site, synthetic\\_survival." in md


def test_k_shot_ranks_the_seed_mean() -> None:
    # seed 0 alone ranks a first; over both seeds b is better (a's second seed is reversed)
    y = np.array([0, 0, 0, 1, 1, 1], float)
    good, fair, bad = np.array([0, 1, 2, 3, 4, 5.0]), np.array([0, 3, 2, 1, 4, 5.0]), np.array([5, 4, 3, 2, 1, 0.0])
    alone = TaskScores("t", TaskKind.BINARY, "auc", y, {"a": good, "b": fair})
    both = dataclasses.replace(alone, seed_scores={"a": (bad,), "b": (fair,)})
    assert [r.encoder for r in aggregate_ranks([alone, alone], n_boot=0).rows] == ["a", "b"]
    assert [r.encoder for r in aggregate_ranks([both, both], n_boot=0).rows] == ["b", "a"]


def test_each_protocol_gets_its_own_ranking(tmp_path) -> None:
    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import load_local_results
    from lesionbench.leaderboard.render import render_html, render_markdown

    # linear probe: a > models-genesis > c on every task; fine-tuned: c > models-genesis > a; a third task only in the linear protocol
    for meta in (BINARY, MULTI, SURV):
        man = make_manifest(meta)
        for i, (enc, q) in enumerate({"a": 2.0, "models-genesis": 1.0, "c": 0.2}.items()):
            write_result(meta, man, enc, q, tmp_path, seed=i, fractions=(1.0,))
            if meta is not SURV:
                write_result(meta, man, enc, 2.2 - q, tmp_path, seed=i, fractions=(1.0,), extra={"protocol": "finetune"},
                             folder=tmp_path / meta.name / meta.version / enc / "finetune-linear")
    doc = build_document(load_local_results(tmp_path), n_boot=50, n_perm=20, include_published=False)
    blocks = {pb["protocol"]: pb for pb in doc["aggregate"]["protocols"]}
    assert list(blocks) == ["linear", "finetune-linear"]
    assert [t["name"] for t in blocks["linear"]["tasks"]] == ["luna16_malignancy", "synthetic_site", "synthetic_survival"]
    assert [t["name"] for t in blocks["finetune-linear"]["tasks"]] == ["luna16_malignancy", "synthetic_site"]
    assert [r["encoder"] for r in blocks["linear"]["tables"][0]["rows"]] == ["a", "models-genesis", "c"]
    tune = blocks["finetune-linear"]["tables"][0]
    assert [r["encoder"] for r in tune["rows"]] == ["c", "models-genesis", "a"] and tune["rows"][0]["borda"] == 4  # never mixed with the linear rows
    assert tune["n_used"] > 0 and all(r["rank_interval"] for r in tune["rows"])  # the joint bootstrap runs per protocol
    html, md = render_html(doc), render_markdown(doc)
    assert 'id="aggregate-finetune-linear-all"' in html and '<details class="aggregate-protocol" id="aggregate-linear" open>' in html
    assert '<details class="aggregate-protocol" id="aggregate-finetune-linear">' in html  # folded
    assert "### fine-tuned, linear probe: All tasks" in md
    # its filtered table: Models Genesis was pre-trained on LUNA16's data, so one task is left: no ranking
    assert blocks["finetune-linear"]["tables"][1]["tasks"] == ["synthetic_site"] and blocks["finetune-linear"]["tables"][1]["rows"] == []
    assert "Tasks left (too few to rank): synthetic_site. Left out (an encoder was pre-trained on their data): luna16_malignancy." in html


def test_k_shot_sections_rank_on_the_seed_mean_across_tasks(tmp_path) -> None:
    from _lb_fixtures import SEEDS

    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import load_local_results

    shots = {10: 20 / 60, 5: 10 / 60}  # k and its share of the training split
    for meta in (BINARY, MULTI):
        man = make_manifest(meta)
        for i, (enc, q) in enumerate({"a": 2.0, "b": 0.6}.items()):
            folder = write_result(meta, man, enc, q, tmp_path, seed=i, fractions=tuple(shots.values()),
                                  folder=tmp_path / meta.name / meta.version / enc / "k-shot-linear")  # fmt: skip
            path = folder / "result.json"
            doc = json.loads(path.read_text())
            for run in doc["runs"]:
                run["shots"] = next(k for k, f in shots.items() if abs(f - run["fraction"]) < 1e-9)
            doc["extra"].update(protocol="k-shot", shots=sorted(shots), shots_per="class")
            path.write_text(json.dumps(doc))
    doc = build_document(load_local_results(tmp_path), n_boot=30, n_perm=20, include_published=False)
    (block,) = doc["aggregate"]["protocols"]
    assert block["protocol"] == "k-shot-linear" and block["shots_per"] == "class"
    assert [(t["name"], t["shots"], t["n_seeds"]) for t in block["tasks"]] == [(BINARY.name, 10, len(SEEDS)), (MULTI.name, 10, len(SEEDS))]
    sections = {t["name"]: t for t in doc["tasks"]}
    for row in block["tables"][0]["rows"]:  # each task's rank is its section's (ranked on the seed mean at k = 10)
        for task, rank in row["task_ranks"].items():
            assert rank == next(e["rank"] for e in sections[task]["entries"] if e["encoder"] == row["encoder"])


def test_no_aggregate_with_a_single_task(tmp_path) -> None:
    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import load_local_results

    man = make_manifest(BINARY)
    for i, enc in enumerate(("a", "b")):
        write_result(BINARY, man, enc, 1.0 + i, tmp_path, seed=i, fractions=(1.0,))
    doc = build_document(load_local_results(tmp_path), n_boot=20, n_perm=20, include_published=False)
    assert doc["aggregate"] is None
    assert pd.Series([t["name"] for t in doc["tasks"]]).tolist() == ["luna16_malignancy"]


def test_a_task_whose_metric_is_undefined_is_left_out_not_fatal(tmp_path) -> None:
    from lesionbench.leaderboard.build import build_document
    from lesionbench.leaderboard.collect import load_local_results

    for meta in (BINARY, MULTI, SURV):
        man = make_manifest(meta)
        for i, enc in enumerate(("a", "b")):
            folder = write_result(meta, man, enc, 1.0 + i, tmp_path, seed=i, fractions=(1.0,))
    # b's saved predictions cover only the positive test lesions: the lesions both entries share hold one class
    for f in (tmp_path / BINARY.name / BINARY.version / "b" / "linear" / "predictions").glob("*.csv"):
        p = pd.read_csv(f)
        p[p["label"] == 1].to_csv(f, index=False)
    assert folder.exists()
    doc = build_document(load_local_results(tmp_path), n_boot=50, n_perm=20, include_published=False)
    binary = next(t for t in doc["tasks"] if t["name"] == BINARY.name)
    # both listed in their own section (b unranked there: its stated value disagrees with its truncated predictions)
    assert len(binary["entries"]) + len(binary["unranked"]) == 2
    assert [t["name"] for t in doc["aggregate"]["protocols"][0]["tasks"]] == ["synthetic_site", "synthetic_survival"]
