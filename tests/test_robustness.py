"""The robustness protocol: ICC(3,1) against Shrout & Fleiss, perturbations, and end to end with tiny encoders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.robustness.perturb import PerturbationSettings, check_perturbations, crop_around, lesion_rng, perturb_lesion
from lesionbench.benchmark.robustness import evaluate_robustness, load_robustness, robustness_path, summary_table
from lesionbench.benchmark.robustness.stability import cosine_to_reference, icc_3_1, icc_a_1, stability_block
from lesionbench.benchmark.types import EncoderMeta, PatchSpec, TaskKind, TaskMeta

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their Table 4 gives ICC(3,1) = 0.71
# (0.7148 unrounded) and ICC(1,1) = 0.17, ICC(2,1) = 0.29.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)


def test_icc_3_1_matches_shrout_fleiss_table() -> None:
    assert float(icc_3_1(SHROUT_FLEISS)) == pytest.approx(0.7148, abs=5e-4)
    # vectorised over features: the same table twice, and a shifted copy (consistency ignores judge offsets)
    stacked = np.stack([SHROUT_FLEISS, SHROUT_FLEISS + np.array([0, 10, -3, 1])], axis=2)
    assert icc_3_1(stacked) == pytest.approx([0.7148, 0.7148], abs=5e-4)


def test_icc_a_1_matches_shrout_fleiss_table_and_counts_a_common_shift() -> None:
    """ICC(2,1), absolute agreement, is Shrout & Fleiss's 0.29 on their table; a 2 SD shift of every lesion's
    feature leaves ICC(3,1) near 1 but halves absolute agreement, and the stability block leads with it."""
    assert float(icc_a_1(SHROUT_FLEISS)) == pytest.approx(0.2898, abs=5e-4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    shifted = np.concatenate([x, x + 2.0 + 0.1 * rng.normal(size=(200, 1))], axis=1)
    assert float(icc_3_1(shifted)) > 0.98 and float(icc_a_1(shifted)) < 0.4
    block = stability_block(x, [x + 2.0 + 0.1 * rng.normal(size=(200, 1))], np.ones((1, 200)), None, n_boot=0, seed=[0])
    assert block["icc"]["median"] < 0.4 < 0.98 < block["icc_consistency"]["median"]
    assert block["icc"]["type"] == "ICC(2,1) absolute agreement"
    assert np.isnan(icc_a_1(np.full((5, 3), 7.0)))


def test_icc_edge_cases() -> None:
    same = np.repeat(np.arange(5.0)[:, None], 3, axis=1)
    assert float(icc_3_1(same)) == pytest.approx(1.0)
    assert np.isnan(icc_3_1(np.full((5, 3), 7.0)))  # no variance at all: undefined, not 0 or 1
    with pytest.raises(ConfigurationError, match="2 targets"):
        icc_3_1(np.ones((1, 3)))


def test_cosine_identical_and_zero_rows() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    assert cosine_to_reference(a, b).tolist() == pytest.approx([1.0, 1.0, -1.0])


def test_unknown_perturbation_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="choose from shift, rotate, spacing, noise"):
        check_perturbations(["shift", "blur"])
    with pytest.raises(ConfigurationError, match="noise_hu"):
        PerturbationSettings(noise_hu=-1).check()


# ------------------------------------------------------------------ a tiny image cohort and tiny encoders
SPEC = PatchSpec(size=(12, 12, 12), spacing_mm=(2.0, 2.0, 2.0))


def _meta(name: str, dim: int) -> EncoderMeta:
    return EncoderMeta(name=name, version="1", feature_dim=dim, patch=SPEC)


class ConstantEncoder:
    """Ignores its input."""

    meta = _meta("constant", 4)

    def encode(self, patches: np.ndarray) -> np.ndarray:
        return np.tile(np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32), (len(patches), 1))


class SmoothEncoder:
    """Means of the centre and of eight octant blocks: averages out noise."""

    meta = _meta("smooth", 9)

    def encode(self, patches: np.ndarray) -> np.ndarray:
        p = patches[:, 0]
        c = p[:, 3:9, 3:9, 3:9].mean(axis=(1, 2, 3))
        octs = [p[:, z:z + 6, y:y + 6, x:x + 6].mean(axis=(1, 2, 3)) for z in (0, 6) for y in (0, 6) for x in (0, 6)]
        return np.stack([c, *octs], axis=1).astype(np.float32) * 100


class NoiseAmplifier:
    """The same centre mean plus differences of neighbouring voxels at a high gain: mostly noise."""

    meta = _meta("noisy", 9)

    def encode(self, patches: np.ndarray) -> np.ndarray:
        p = patches[:, 0]
        c = p[:, 3:9, 3:9, 3:9].mean(axis=(1, 2, 3))
        diffs = [(p[:, 6, 6, 3 + i] - p[:, 6, 6, 2 + i]) for i in range(8)]
        return np.stack([c * 100, *[d * 5000 for d in diffs]], axis=1).astype(np.float32)


@dataclass
class TinyTask:
    meta: TaskMeta
    table: pd.DataFrame

    def manifest(self) -> pd.DataFrame:
        return self.table.copy()


def tiny_cohort(root: Path, n_patients: int = 20) -> TinyTask:
    """Small CT-like volumes (1.5 mm, 40^3) with one ball per patient; malignant balls are brighter."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    for i in range(n_patients):
        label = i % 2
        centre = 20 + rng.integers(-3, 4, size=3)
        r = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) ** 0.5 * 1.5
        vol = np.where(r < 7.5, 40.0 + 60.0 * label + rng.normal(0, 15), -50.0 + rng.normal(0, 40)) + rng.normal(0, 10, r.shape)
        img = sitk.GetImageFromArray(vol.astype(np.int16))
        img.SetSpacing((1.5, 1.5, 1.5))
        img.SetOrigin((-30.0, 10.0, -100.0))
        path = root / f"p{i}.nii.gz"
        sitk.WriteImage(img, str(path))
        pt = img.TransformContinuousIndexToPhysicalPoint([float(centre[2]), float(centre[1]), float(centre[0])])
        # pairs of patients (one benign, one malignant) share a split: every split holds both classes
        split = ("train", "train", "val", "test", "train", "test", "train", "val", "test", "train")[(i // 2) % 10]
        rows.append({"lesion_id": f"L{i}", "patient_id": f"P{i}", "image_path": str(path), "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2],
                     "split": split, "label": label})  # fmt: skip
    meta = TaskMeta(name="tiny_malignancy", version="1", kind=TaskKind.BINARY, description="tiny", main_metric="auc",
                    metrics=("auc", "balanced_accuracy"), class_names=("benign", "malignant"))  # fmt: skip
    return TinyTask(meta, pd.DataFrame(rows))


FAST = {"n_boot": 50, "progress": False}


def test_perturbations_are_seeded_and_do_what_they_say(tmp_path: Path) -> None:
    import SimpleITK as sitk

    task = tiny_cohort(tmp_path / "img", n_patients=1)
    rec = task.table.iloc[0].to_dict()
    image = sitk.ReadImage(rec["image_path"])
    seed = (rec["coordX"], rec["coordY"], rec["coordZ"])
    crop = crop_around(image, seed, 12.0)
    s = PerturbationSettings()
    a, ra = perturb_lesion(crop, rec, "shift", lesion_rng(s, "shift", 0, "L0"), s, tmp_path, {})
    b, rb = perturb_lesion(crop, rec, "shift", lesion_rng(s, "shift", 0, "L0"), s, tmp_path, {})
    moved = np.linalg.norm(np.subtract([ra["coordX"], ra["coordY"], ra["coordZ"]], seed))
    assert 1.0 <= moved <= 5.0 and ra == rb and a is crop
    noisy, _ = perturb_lesion(crop, rec, "noise", lesion_rng(s, "noise", 0, "L0"), s, tmp_path, {})
    diff = sitk.GetArrayFromImage(noisy) - sitk.GetArrayFromImage(crop)
    assert diff.std() == pytest.approx(20.0, rel=0.1)
    coarse, _ = perturb_lesion(crop, rec, "spacing", lesion_rng(s, "spacing", 0, "L0"), s, tmp_path, {})
    assert 1.0 <= coarse.GetSpacing()[0] <= 1.5 and coarse.GetSpacing()[2] == 1.5
    turned, _ = perturb_lesion(crop, rec, "rotate", lesion_rng(s, "rotate", 0, "L0"), s, tmp_path, {})
    centre = crop.TransformPhysicalPointToIndex(seed)
    # about the seed: the ball's centre keeps its value, the image elsewhere changes
    assert turned.GetPixel(centre) == pytest.approx(crop.GetPixel(centre), abs=30)
    assert not np.array_equal(sitk.GetArrayFromImage(turned), sitk.GetArrayFromImage(crop))


def test_constant_encoder_is_perfectly_stable_and_noise_amplifier_is_worse(tmp_path: Path) -> None:
    task = tiny_cohort(tmp_path / "img")
    settings = PerturbationSettings(repeats=2)
    const = evaluate_robustness(task, ConstantEncoder(), settings=settings, out_dir=tmp_path / "res", cache_dir=tmp_path / "cache", **FAST)
    for block in const.perturbations.values():
        assert block["icc"]["n_defined"] == 0 and block["icc"]["n_undefined"] == 4  # no variance: undefined
        assert block["cosine"]["value"] == 1.0
        assert block["prediction_change"]["value"] == 0.0 and block["metric_drop"]["value"] == 0.0
    smooth = evaluate_robustness(task, SmoothEncoder(), settings=settings, out_dir=tmp_path / "res", cache_dir=tmp_path / "cache", **FAST)
    noisy = evaluate_robustness(task, NoiseAmplifier(), settings=settings, out_dir=tmp_path / "res", cache_dir=tmp_path / "cache", **FAST)
    for k in ("noise", "shift"):
        assert noisy.perturbations[k]["icc"]["median"] < smooth.perturbations[k]["icc"]["median"] - 0.2
        assert noisy.perturbations[k]["cosine"]["value"] < smooth.perturbations[k]["cosine"]["value"]
    assert smooth.perturbations["noise"]["icc"]["median"] > 0.9
    assert noisy.perturbations["noise"]["prediction_change"]["value"] > smooth.perturbations["noise"]["prediction_change"]["value"]
    assert noisy.perturbations["noise"]["metric_drop"]["value"] > smooth.perturbations["noise"]["metric_drop"]["value"]
    # written atomically where the leaderboard will look, and readable back
    path = robustness_path(tmp_path / "res", "tiny_malignancy", "1", "smooth")
    saved = load_robustness(path)
    assert saved["perturbations"]["noise"]["icc"]["median"] == pytest.approx(smooth.perturbations["noise"]["icc"]["median"])
    assert saved["bootstrap_unit"] == "patient" and saved["n_test"] == 6
    table = summary_table([saved, noisy])
    assert set(table["perturbation"]) == {"shift", "rotate", "spacing", "noise"} and len(table) == 8
    lo, hi = saved["perturbations"]["noise"]["cosine"]["ci_low"], saved["perturbations"]["noise"]["cosine"]["ci_high"]
    assert lo <= saved["perturbations"]["noise"]["cosine"]["value"] <= hi
    # the same seed gives the same numbers
    again = evaluate_robustness(task, NoiseAmplifier(), settings=settings, out_dir=tmp_path / "res2", cache_dir=tmp_path / "cache", **FAST)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(noisy.to_dict(), sort_keys=True)


# ------------------------------------------------------------------ test-retest
def _retest_table(task: TinyTask, root: Path) -> pd.DataFrame:
    """Second scans of the tiny cohort: the same volume with a new noise draw, written as other files."""
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    rows = []
    for rec in task.table.to_dict("records"):
        img = sitk.ReadImage(rec["image_path"])
        arr = sitk.GetArrayFromImage(img).astype(float) + rng.normal(0, 10, img.GetSize()[::-1])
        again = sitk.GetImageFromArray(arr.astype(np.int16))
        again.CopyInformation(img)
        path = root / f"again_{rec['lesion_id']}.nii.gz"
        sitk.WriteImage(again, str(path))
        rows.append({**rec, "scan": "test"})
        rows.append({**rec, "scan": "retest", "image_path": str(path)})
    return pd.DataFrame(rows)


def test_retest_manifest_lists_every_problem(tmp_path: Path) -> None:
    from lesionbench.benchmark.errors import ManifestError
    from lesionbench.benchmark.robustness.retest import read_retest_manifest, retest_pairs

    good = pd.DataFrame({"lesion_id": ["a", "a", "b", "b"], "patient_id": ["p", "p", "q", "q"], "scan": ["test", "retest", "retest", "test"],
                         "image_path": ["/x1", "/x2", "/y2", "/y1"], "coordX": 1.0, "coordY": 2.0, "coordZ": 3.0})  # fmt: skip
    first, second = retest_pairs(read_retest_manifest(good))
    assert first["lesion_id"].tolist() == second["lesion_id"].tolist() == ["a", "b"]
    assert second["image_path"].tolist() == ["/x2", "/y2"]
    bad = good.copy()
    bad.loc[1, "scan"] = "rescan"          # a has no retest row, and row 3 is no scan
    bad.loc[2, "patient_id"] = "other"     # b's scans name two patients
    bad.loc[3, "image_path"] = "/y2"       # b's scans are one file
    bad.loc[0, "coordX"] = float("nan")
    with pytest.raises(ManifestError) as err:
        read_retest_manifest(bad)
    text = str(err.value)
    for part in ("row 3: scan 'rescan'", "lesion 'a': no 'retest' scan", "lesion 'b': its two scans name different patients",
                 "lesion 'b': both scans point at the same image file", "row 2 (lesion 'a'): the seed point"):  # fmt: skip
        assert part in text
    with pytest.raises(ManifestError, match="lacks the column"):
        read_retest_manifest(good.drop(columns=["scan"]))


def test_retest_block_end_to_end_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lesionbench.cli import main

    task = tiny_cohort(tmp_path / "img")
    pairs = _retest_table(task, tmp_path / "img")
    res = evaluate_robustness(task, SmoothEncoder(), perturbations=["noise", "retest"], retest=pairs, settings=PerturbationSettings(repeats=1),
                              out_dir=tmp_path / "res", cache_dir=tmp_path / "cache", **FAST)  # fmt: skip
    block = res.perturbations["retest"]
    assert block["n_pairs"] == 6 and block["icc"]["median"] > 0.9 and block["prediction_change"]["value"] <= 0.5
    assert list(res.perturbations) == ["noise", "retest"] and res.settings["perturbations"] == ["noise", "retest"]
    with pytest.raises(ConfigurationError, match="no test-retest data"):
        evaluate_robustness(task, SmoothEncoder(), perturbations=["retest"], out_dir=tmp_path / "res", **FAST)
    # the RIDER-layout task kind on its own, through the CLI: feature stability only
    folder = tmp_path / "rider"
    folder.mkdir()
    pairs.drop(columns=["split", "label"]).to_csv(folder / "manifest.csv", index=False)
    rc = main(["-q", "robustness", "--retest-manifest", str(folder / "manifest.csv"), "--encoder", "radiomics", "--n-boot", "20",
               "--results", str(tmp_path / "out"), "--no-mlflow", "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    saved = load_robustness(tmp_path / "out" / "rider" / "retest" / "radiomics" / "robustness.json")
    assert saved["perturbations"]["retest"]["n_pairs"] == 20 and saved["perturbations"]["retest"]["prediction_change"] is None
    assert "retest" in capsys.readouterr().out


def test_mlflow_run_is_tagged_and_invisible_to_the_ranking(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from lesionbench.benchmark.robustness import log_robustness, robustness_metrics

    task = tiny_cohort(tmp_path / "img", n_patients=20)
    res = evaluate_robustness(task, SmoothEncoder(), perturbations=["noise"], settings=PerturbationSettings(repeats=1),
                              out_dir=tmp_path / "res", cache_dir=tmp_path / "cache", **FAST)  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rid = log_robustness(res, robustness_path(tmp_path / "res", "tiny_malignancy", "1", "smooth"), tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(rid)
    assert run.data.tags["lesionbench.protocol"] == "robustness" and "lesionbench.level" not in run.data.tags
    assert run.data.metrics["noise.icc_median"] == pytest.approx(res.perturbations["noise"]["icc"]["median"])
    assert set(robustness_metrics(res)) <= set(run.data.metrics) | {k for k, v in robustness_metrics(res).items() if v != v}
    assert [a.path for a in client.list_artifacts(rid)] == ["robustness.json"]
    # a broken store warns and keeps the local file
    with pytest.warns(UserWarning, match="MLflow logging"):
        assert log_robustness(res, tmp_path / "res" / "robustness.json", tracking_uri="bogus://nowhere") is None


def test_the_probe_call_per_task_kind() -> None:
    from lesionbench.benchmark.robustness.stability import classes_of

    assert classes_of(TaskKind.BINARY, np.array([[0.6, 0.4], [0.4, 0.6]])).tolist() == [0, 1]
    assert classes_of(TaskKind.MULTICLASS, np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])).tolist() == [1, 0]
    assert classes_of(TaskKind.SURVIVAL, {"risk": np.array([0.1, 2.0]), "score": np.zeros(2)}, 1.0).tolist() == [0, 1]


# ------------------------------------------------------------------ lesion masks go with the crop (issue 22)
def _with_masks(task: TinyTask, root: Path, *, pad: int = 0) -> TinyTask:
    """The tiny cohort with a mask file per lesion: the ball, label 1, on its image's grid (both padded by
    ``pad`` voxels of air on every side: larger than a radiomics crop)."""
    import SimpleITK as sitk

    rows = []
    for rec in task.table.to_dict("records"):
        img = sitk.ReadImage(rec["image_path"])
        if pad:
            img = sitk.ConstantPad(img, [pad] * 3, [pad] * 3, -1024)
            rec["image_path"] = str(root / f"padded_{rec['lesion_id']}.nii.gz")
            sitk.WriteImage(img, rec["image_path"])
        centre = np.array(img.TransformPhysicalPointToIndex((rec["coordX"], rec["coordY"], rec["coordZ"])))[::-1]
        zz, yy, xx = np.mgrid[: img.GetSize()[2], : img.GetSize()[1], : img.GetSize()[0]]
        ball = (((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) ** 0.5 * 1.5 < 7.5).astype(np.uint8)
        mask = sitk.GetImageFromArray(ball)
        mask.CopyInformation(img)
        path = root / f"mask_{rec['lesion_id']}.nii.gz"
        sitk.WriteImage(mask, str(path))
        rows.append({**rec, "mask_path": str(path)})
    return TinyTask(task.meta, pd.DataFrame(rows))


def test_mask_is_cut_turned_and_resampled_with_the_crop(tmp_path: Path) -> None:
    """Every perturbed image comes with its mask on the same voxel grid (the README's radiomics example failed)."""
    import SimpleITK as sitk

    task = _with_masks(tiny_cohort(tmp_path / "img", n_patients=1), tmp_path / "img")
    rec = task.table.iloc[0].to_dict()
    image = sitk.ReadImage(rec["image_path"])
    crop = crop_around(image, (rec["coordX"], rec["coordY"], rec["coordZ"]), 12.0)
    assert crop.GetSize() != image.GetSize()
    s, masks = PerturbationSettings(), {}
    n_whole = int(sitk.GetArrayFromImage(sitk.ReadImage(rec["mask_path"])).sum())
    for kind in ("none", "shift", "rotate", "spacing", "noise"):
        img, prec = perturb_lesion(crop, rec, kind, lesion_rng(s, kind, 0, "L0"), s, tmp_path, masks)
        mask = sitk.ReadImage(prec["mask_path"])
        assert prec["mask_path"] != rec["mask_path"]
        assert mask.GetSize() == img.GetSize() and mask.GetOrigin() == pytest.approx(img.GetOrigin())
        assert mask.GetSpacing() == pytest.approx(img.GetSpacing())
        voxels = int(sitk.GetArrayFromImage(mask).sum())
        volume = voxels * float(np.prod(mask.GetSpacing()))
        assert volume == pytest.approx(n_whole * 1.5**3, rel=0.15), kind  # the whole ball, on every grid
    assert rec["mask_path"].endswith(".nii.gz")  # the caller's record is left alone


def test_radiomics_robustness_with_masks_runs_and_the_crop_changes_nothing(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from lesionbench.baselines.radiomics import RadiomicsEncoder
    from lesionbench.benchmark.encoders.features import read_image
    from lesionbench.benchmark.robustness.perturb import perturbed_features

    task = _with_masks(tiny_cohort(tmp_path / "img", n_patients=2), tmp_path / "img", pad=30)
    enc = RadiomicsEncoder()
    test = task.table.reset_index(drop=True)
    assert read_image(test["image_path"][0]).GetSize() == (100, 100, 100)  # 150 mm: the crop (2 x 53 mm) is smaller
    ref = perturbed_features(test, enc, "none", 0, PerturbationSettings())
    # the whole image as float32, as every crop is (resampling an int16 image rounds)
    whole = np.concatenate([enc.encode_lesions(sitk.Cast(read_image(p), sitk.sitkFloat32), test.iloc[[i]]) for i, p in enumerate(test["image_path"])])
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(ref, whole, rtol=1e-4, atol=1e-4)  # the crop (and its mask) is what the whole image gives
    turned = perturbed_features(test, enc, "rotate", 0, PerturbationSettings())
    assert np.isfinite(turned).all() and not np.allclose(turned, ref)
