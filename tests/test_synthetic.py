"""The synthetic CT cohort: geometry, seeds inside lesions, determinism, manifests, splits, tasks, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionbench.benchmark.errors import ConfigurationError, ManifestError, UnknownNameError
from lesionbench.benchmark.data.manifest import read_manifest, validate_manifest
from lesionbench.benchmark.paths import data_root
from lesionbench.benchmark.encoders.plugins import TASKS, get_task
from lesionbench.benchmark.types import TaskKind
from lesionbench.cli import main
from lesionbench.tasks import synthetic as S

N_PATIENTS = 5


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cohort made with two worker processes (the determinism test remakes part of it with one)."""
    return S.generate_cohort(tmp_path_factory.mktemp("synth") / "cohort", patients=N_PATIENTS, seed=0, workers=2, progress=False)


def _manifest(cohort: Path, task: str) -> pd.DataFrame:
    return read_manifest(cohort / task / "manifest.csv")


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("variant", range(len(S._DIRECTION_VARIANTS)))
def test_geometry_stores_world_positions_faithfully(variant: int, tmp_path: Path) -> None:
    """Each canonical voxel, looked up at its world position through SimpleITK, is found again after a NIfTI round trip."""
    perm, signs = S._DIRECTION_VARIANTS[variant]
    geo = S.Geometry(size=(5, 6, 7), spacing=(0.75, 0.75, 2.5), lo=(-10.5, 20.25, -300.0), perm=perm, signs=signs)
    canon = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    path = tmp_path / "g.nii.gz"
    sitk.WriteImage(geo.to_sitk(canon), str(path))
    img = sitk.ReadImage(str(path))
    assert img.GetSize() == geo.image_size()
    np.testing.assert_allclose(img.GetDirection(), geo.direction(), atol=1e-6)
    x, y, z = geo.coords()
    for i, j, k in [(0, 0, 0), (4, 5, 6), (1, 4, 2), (3, 0, 5)]:
        idx = img.TransformPhysicalPointToIndex((float(x[i]), float(y[j]), float(z[k])))
        assert img.GetPixel(idx) == canon[i, j, k]
        assert tuple(float(v) for v in idx) == geo.image_index((i, j, k))


def test_volumes_read_back_with_varied_geometry(cohort: Path) -> None:
    images = sorted((cohort / "images").glob("*.nii.gz"))
    assert len(images) == N_PATIENTS
    directions, slice_spacings = set(), set()
    for path in images:
        img = sitk.ReadImage(str(path))
        assert img.GetPixelID() == sitk.sitkInt16
        arr = sitk.GetArrayViewFromImage(img)
        assert -1024 <= arr.min() and arr.max() <= 3071
        assert (arr < -900).mean() > 0.1 and (arr > 200).any()  # air around the body, bone inside
        sp = np.array(img.GetSpacing())
        d = np.array(img.GetDirection()).reshape(3, 3)
        z_axis = int(np.argmax(np.abs(d[2])))  # the index axis that runs along world z
        assert 1.25 <= sp[z_axis] <= 5.0
        assert all(0.6 <= sp[a] <= 0.9 for a in range(3) if a != z_axis)
        assert np.any(np.abs(img.GetOrigin()) > 1.0)
        directions.add(tuple(np.round(d.ravel()).astype(int)))
        slice_spacings.add(sp[z_axis])
    identity = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert len(directions - {identity}) >= 2, directions
    assert len(slice_spacings) >= 2


def test_every_seed_voxel_lies_inside_its_own_lesion(cohort: Path) -> None:
    """The seed, mapped through the image's own world-to-index transform, hits its lesion's mask and no other."""
    df = _manifest(cohort, "synthetic_site")
    assert len(df) >= N_PATIENTS
    for pid, rows in df.groupby("patient_id"):
        img = sitk.ReadImage(rows["image_path"].iloc[0])
        masks = {r.lesion_id: sitk.ReadImage(r.mask_path) for r in rows.itertuples()}
        total = sum(sitk.GetArrayFromImage(m).astype(int) for m in masks.values())
        assert total.max() == 1, f"{pid}: lesions overlap"
        for r in rows.itertuples():
            m = masks[r.lesion_id]
            assert m.GetSize() == img.GetSize() and m.GetDirection() == img.GetDirection()
            np.testing.assert_allclose(m.GetOrigin(), img.GetOrigin())
            idx = img.TransformPhysicalPointToIndex((r.coordX, r.coordY, r.coordZ))
            assert m.GetPixel(idx) == 1, f"{r.lesion_id}: seed voxel {idx} outside its mask"
            for other, om in masks.items():
                if other != r.lesion_id:
                    assert om.GetPixel(idx) == 0
            # the nominal diameter matches the mask's size (lobulated/spiculated margins differ a little)
            vox = float(np.prod(m.GetSpacing())) * sitk.GetArrayViewFromImage(m).sum()
            eq_d = 2 * (3 * vox / (4 * np.pi)) ** (1 / 3)
            assert 0.6 * r.diameter_mm < eq_d < 1.6 * r.diameter_mm, (r.lesion_id, eq_d, r.diameter_mm)


def test_lesions_sit_in_their_anatomical_context(cohort: Path) -> None:
    lesions = pd.read_csv(cohort / "lesions.csv")
    checked = 0
    for r in lesions.itertuples():
        img = sitk.ReadImage(str(cohort / r.image_path))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / r.mask_path))).astype(bool)
        arr = sitk.GetArrayFromImage(img)
        dil = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.ReadImage(str(cohort / r.mask_path)), [2, 2, 1])).astype(bool)
        shell = arr[dil & ~mask]
        if r.site == S.LUNG:
            # mostly aerated lung around it (large nodules may abut the pleura or mediastinum)
            assert np.median(shell) < -350, r.lesion_id
        elif r.site == S.BONE:
            assert np.mean(shell > 200) > 0.3, r.lesion_id
        else:
            assert np.median(shell) > -300, r.lesion_id
        checked += 1
    assert checked == len(lesions)


# --------------------------------------------------------------------------------- determinism
def test_same_seed_same_cohort_other_seed_differs(cohort: Path, tmp_path: Path) -> None:
    """Re-made with one worker and fewer patients, through the CLI: identical files (prefix-stable); seed 1 differs."""
    again = tmp_path / "again"
    assert main(["-q", "synth", "--out", str(again), "--patients", "2", "--seed", "0", "--workers", "1"]) == 0
    for pid in ("P00000", "P00001"):
        a = sitk.ReadImage(str(cohort / "images" / f"{pid}.nii.gz"))
        b = sitk.ReadImage(str(again / "images" / f"{pid}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing() and a.GetDirection() == b.GetDirection()
        assert _sha(cohort / "images" / f"{pid}.nii.gz") == _sha(again / "images" / f"{pid}.nii.gz")
    for task in S.TASK_NAMES:
        full = pd.read_csv(cohort / task / "manifest.csv", dtype=str)
        part = pd.read_csv(again / task / "manifest.csv", dtype=str)
        pd.testing.assert_frame_equal(full[full["patient_id"].isin(["P00000", "P00001"])].reset_index(drop=True), part)
    for mask in (again / "masks").glob("*.nii.gz"):
        assert _sha(mask) == _sha(cohort / "masks" / mask.name)

    # Seed 1 over the same folder: another cohort, and the previous one's extra patient is gone.
    other = S.generate_cohort(again, patients=1, seed=1, progress=False)
    assert not (other / "images" / "P00001.nii.gz").exists() and not list((other / "masks").glob("P00001_*"))
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / "images" / "P00000.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(other / "images" / "P00000.nii.gz")))
    assert a.shape != b.shape or not np.array_equal(a, b)
    m0 = pd.read_csv(cohort / "synthetic_site" / "manifest.csv").iloc[0]
    m1 = pd.read_csv(other / "synthetic_site" / "manifest.csv").iloc[0]
    assert (m0.coordX, m0.coordY, m0.coordZ) != (m1.coordX, m1.coordY, m1.coordZ)
    assert json.loads((other / "cohort.json").read_text())["seed"] == 1


# ---------------------------------------------------------------------------------- manifests
def test_three_manifests_are_valid_and_share_lesions(cohort: Path) -> None:
    frames = {}
    for task in S.TASK_NAMES:
        t = get_task(task, data_dir=cohort / task)
        df = t.manifest()  # validates against the task's meta, files included
        assert validate_manifest(df, meta=t.meta, source=task) is not None
        assert df["mask_path"].map(lambda p: Path(p).is_file()).all()
        assert (df["diameter_mm"] >= S.MIN_DIAMETER_MM).all()
        frames[task] = df
    shared = ["lesion_id", "patient_id", "image_path", "mask_path", "coordX", "coordY", "coordZ", "diameter_mm", "split"]
    base = frames["synthetic_site"][shared]
    for task in S.TASK_NAMES[1:]:
        pd.testing.assert_frame_equal(frames[task][shared], base)
    assert frames["synthetic_site"]["label"].between(0, 7).all()
    assert set(frames["synthetic_malignancy"]["label"]) <= {0, 1}
    surv = frames["synthetic_survival"]
    assert (surv["time"] > 0).all() and set(surv["event"]) <= {0, 1}
    # survival is per patient: every lesion of a patient carries the same time and event
    assert (surv.groupby("patient_id")[["time", "event"]].nunique() == 1).all().all()
    per_patient = base.groupby("patient_id").size()
    assert per_patient.between(1, 4).all()
    info = json.loads((cohort / "cohort.json").read_text())
    assert info["patients"] == N_PATIENTS and info["seed"] == 0 and info["lesions"] == len(base)
    assert info["generator_version"] == S.GENERATOR_VERSION


def test_splits_are_patient_level(cohort: Path) -> None:
    df = _manifest(cohort, "synthetic_site")
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()


def test_default_cohort_split_is_stratified_and_about_60_20_20() -> None:
    """Computed without images: every site appears in every split; proportions near 60/20/20."""
    for seed in (0, 1, 7):
        first_site = [S._block_choice(seed, 2, i) for i in range(S.DEFAULT_PATIENTS)]
        split = [S._split_of(seed, i) for i in range(S.DEFAULT_PATIENTS)]
        tab = pd.crosstab(pd.Series(first_site, name="site"), pd.Series(split, name="split"))
        assert tab.shape == (8, 3) and (tab.to_numpy() >= 1).all(), tab
    split = pd.Series([S._split_of(0, i) for i in range(400)]).value_counts(normalize=True)
    assert abs(split["train"] - 0.6) < 0.03 and abs(split["val"] - 0.2) < 0.03 and abs(split["test"] - 0.2) < 0.03


def test_malignancy_is_balanced_and_independent_of_site_within_each_split() -> None:
    """Every lesion number covers all sites in each block of 8, and in train, val and test alike each
    (lesion number, site) stratum is half malignant (up to one lesion): no split's site pattern
    mirrors another's, so a probe that learns the site gains nothing on test."""
    for seed in (0, 3):
        rows = []
        for slot in range(4):
            sites = [S._site_design(seed, i, slot) for i in range(200)]
            for start in range(0, 200, 8):
                assert sorted(sites[start:start + 8]) == list(range(8))
            rows += [(slot, sites[i], S._split_of(seed, i), S._malignancy_design(seed, i, slot, sites[i])) for i in range(200)]
        df = pd.DataFrame(rows, columns=["slot", "site", "split", "y"])
        strata = df.groupby(["split", "slot", "site"])["y"].agg(["sum", "count"])
        assert ((strata["count"] - 2 * strata["sum"]).abs() <= 1).all(), strata
        assert set(df["split"]) == {"train", "val", "test"}
    # not a fixed pattern: the labels differ between seeds
    a = [S._malignancy_design(0, i, 0, S._site_design(0, i, 0)) for i in range(96)]
    b = [S._malignancy_design(1, i, 0, S._site_design(1, i, 0)) for i in range(96)]
    assert a != b and 0.4 < np.mean(a) < 0.6


def test_aggressiveness_given_label_follows_the_model() -> None:
    """Drawn given (b, label) with the label at its model probability, a has the model's law
    a = rho b + sqrt(1 - rho^2) e, and P(label | a) is the model's noisy threshold."""
    from scipy.special import ndtr

    rng = np.random.default_rng(0)
    n = 6000
    b = rng.standard_normal(n)
    p1 = ndtr(S._RHO * b / np.sqrt(1 - S._RHO**2 + S._LABEL_NOISE**2))
    y = (rng.random(n) < p1).astype(int)
    a = np.array([S._aggressiveness(rng, float(bi), int(yi)) for bi, yi in zip(b, y, strict=True)])
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.04
    assert abs(np.corrcoef(a, b)[0, 1] - S._RHO) < 0.04
    resid = a - S._RHO * b
    assert abs(resid.std() - np.sqrt(1 - S._RHO**2)) < 0.04 and abs(np.corrcoef(resid, b)[0, 1]) < 0.04
    bins = np.digitize(a, [-0.5, 0.5])
    for k, expected in ((0, ndtr(-0.9 / S._LABEL_NOISE)), (2, ndtr(0.9 / S._LABEL_NOISE))):
        # mid-bin check with generous tolerance: the label is a noisy threshold of a at 0
        assert abs(y[bins == k].mean() - expected) < 0.12, (k, y[bins == k].mean(), expected)


def test_labels_carry_signal_with_noise() -> None:
    """At the generative level: appearance predicts malignancy well but not perfectly (label noise)."""
    from sklearn.metrics import roc_auc_score

    anat = S._Anatomy(hu=np.zeros((1, 1, 1), np.float32), region=np.zeros((1, 1, 1), np.uint8), liver_hu=60.0, kidney_hu=150.0)
    rng = np.random.default_rng(0)
    plans = [S._plan_lesion(rng, int(rng.integers(8)), anat, float(rng.standard_normal()), int(rng.integers(2))) for _ in range(3000)]
    y = np.array([p.malignant for p in plans])
    score = np.array([p.spiculation + 3 * p.lobulation + p.texture_hu / 10 + p.edge_mm + np.log(p.diameter_mm) for p in plans])
    auc = roc_auc_score(y, score)
    assert 0.72 < auc < 0.95, auc
    oracle = roc_auc_score(y, [p.aggressiveness for p in plans])
    assert 0.8 < oracle < 0.95, oracle  # the label itself is noisy, so even the hidden variable is not perfect
    # benign-looking kinds are mostly benign; no cue reads the label directly
    kinds = pd.DataFrame({"kind": [p.kind for p in plans], "y": y})
    prev = kinds.groupby("kind")["y"].mean()
    assert prev["cyst"] < 0.25 and prev["calcified"] < 0.25 and 0.3 < prev["solid"] < 0.7, prev


def test_malignancy_is_visible_in_the_image_around_the_seed() -> None:
    """Lesions painted as the generator paints them, at 1 mm in a noisy block of their site's
    background: features computed from the image alone (the HU interquartile range inside the eroded
    lesion mask, the mask's volume), blind to every hidden property, rank malignant above benign
    clearly, but far from perfectly (the label is noisy)."""
    from scipy.ndimage import binary_erosion
    from sklearn.metrics import roc_auc_score

    geo = S.Geometry(size=(72, 72, 72), spacing=(1.0, 1.0, 1.0), lo=(0.0, 0.0, 0.0), perm=(0, 1, 2), signs=(1, 1, 1))
    background = {S.BONE: 300.0, S.LUNG: -850.0, S.LIVER: 100.0, S.KIDNEY: 150.0}
    anat = S._Anatomy(hu=np.zeros((1, 1, 1), np.float32), region=np.zeros((1, 1, 1), np.uint8), liver_hu=100.0, kidney_hu=150.0)
    rng = np.random.default_rng(0)
    y, iqr, vol = [], [], []
    for i in range(160):
        site, malignant = i % 8, (i // 8) % 2
        plan = S._plan_lesion(rng, site, anat, float(rng.standard_normal()), malignant)
        hu = np.full(geo.size, background.get(site, -90.0), dtype=np.float32)
        labels = np.zeros(geo.size, dtype=np.uint8)
        S._paint_lesion(rng, plan, np.array([36.0, 36.0, 36.0]), geo, hu, labels, 1)
        hu += rng.standard_normal(geo.size).astype(np.float32) * np.float32(15.0)
        mask = labels == 1
        core = binary_erosion(mask) if binary_erosion(mask).sum() > 10 else mask
        q1, q3 = np.percentile(hu[core], [25, 75])
        y.append(malignant)
        iqr.append(q3 - q1)
        vol.append(mask.sum())
    auc_iqr, auc_vol = roc_auc_score(y, iqr), roc_auc_score(y, vol)
    assert 0.62 < auc_iqr < 0.95, auc_iqr
    assert 0.65 < auc_vol < 0.95, auc_vol


def test_survival_is_censored_and_informative_but_not_trivially() -> None:
    from sklearn.metrics import roc_auc_score

    from lesionbench.benchmark.scoring.endpoints import two_year_label

    rng = np.random.default_rng(0)
    n = 4000
    agg = [list(rng.standard_normal(int(rng.integers(1, 5)))) for _ in range(n)]
    out = np.array([S._survival(rng, a, 15.0) for a in agg])
    time, event = out[:, 0], out[:, 1]
    assert (time >= 1).all()
    assert 0.2 < 1 - event.mean() < 0.4  # about 30% censored
    y = two_year_label(time, event)
    known = ~np.isnan(y)
    assert 0.35 < y[known].mean() < 0.7
    # the patient's mean aggressiveness predicts 2-year death well, a single lesion's less so
    auc_mean = roc_auc_score(y[known], np.array([np.mean(a) for a in agg])[known])
    auc_one = roc_auc_score(y[known], np.array([a[0] for a in agg])[known])
    assert 0.7 < auc_mean < 0.95 and 0.62 < auc_one < auc_mean, (auc_one, auc_mean)


# ------------------------------------------------------------------------------ tasks and CLI
def test_tasks_are_registered_with_full_meta() -> None:
    expected = {
        "synthetic_site": (TaskKind.MULTICLASS, "balanced_accuracy", 8),
        "synthetic_malignancy": (TaskKind.BINARY, "auc", 2),
        "synthetic_survival": (TaskKind.SURVIVAL, "auc_2y", 0),
    }
    for name, (kind, metric, n_classes) in expected.items():
        meta = TASKS.get(name).meta
        assert meta.name == name and meta.kind == kind and meta.main_metric == metric
        assert meta.main_metric in meta.metrics and meta.n_classes == n_classes
        assert meta.licence == "synthetic, CC0" and meta.label_derivation and meta.description
    assert TASKS.get("synthetic_site").meta.class_names[4] == "lung"
    with pytest.raises(UnknownNameError, match="synthetic_site"):
        get_task("synthetic_sit")


def test_default_data_dir_and_missing_data_message() -> None:
    task = get_task("synthetic_malignancy")
    assert task.data_dir == data_root() / "synthetic" / "synthetic_malignancy"
    with pytest.raises(ManifestError, match="lesionbench synth"):
        task.manifest()


def test_ensure_cohort_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = S.ensure_cohort(patients=1, workers=1, progress=False)
    assert root == data_root() / "synthetic"
    assert get_task("synthetic_survival").manifest().shape[0] >= 1
    stamp = (root / "cohort.json").stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a cohort that was already there")

    monkeypatch.setattr(S.cohort, "generate_cohort", fail)  # ensure_cohort calls the one in its own module
    assert S.ensure_cohort(patients=1) == root
    assert (root / "cohort.json").stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="regenerated"):
        S.ensure_cohort(patients=2)  # another size is another cohort


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="patients"):
        S.generate_cohort(tmp_path, patients=0)
    with pytest.raises(ConfigurationError, match="workers"):
        S.generate_cohort(tmp_path, patients=1, workers=0)


def test_cli_synth_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["-q", "synth", "--out", str(out), "--patients", "1", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    for task in S.TASK_NAMES:
        assert str(out / task / "manifest.csv") in printed
        assert main(["validate", str(out / task / "manifest.csv"), "--task", task]) == 0
    assert main(["synth", "--out", str(out), "--patients", "0"]) == 2


def test_task_version_names_the_cohort(cohort: Path, tmp_path: Path) -> None:
    """Cohorts of another size or seed hold other lesions, so their results carry another task version."""
    from lesionbench.benchmark.encoders.plugins import get_task

    versions = {get_task(t, data_dir=cohort / t).meta.version for t in S.TASK_NAMES}
    assert versions == {f"synth-{S.GENERATOR_VERSION}+p{N_PATIENTS}s0"}
    other = S.generate_cohort(tmp_path / "other", patients=1, seed=3, progress=False)
    assert get_task("synthetic_site", data_dir=other / "synthetic_site").meta.version == f"synth-{S.GENERATOR_VERSION}+p1s3"
    # the registered class keeps the generator's version (what `lesionbench tasks list` shows)
    from lesionbench.benchmark.encoders.plugins import TASKS

    assert TASKS.get("synthetic_site").meta.version == f"synth-{S.GENERATOR_VERSION}"


# ------------------------------------------------------------------- fast paths, same voxels
def test_torso_fast_paths_give_the_voxels_of_the_whole_volume_formulas() -> None:
    """The torso's costliest steps are computed on part of the volume only (the bone voxels, the rib band, the
    slices an organ spans); each must give bit for bit what the whole-volume formula gives, so that the cohort
    (and every result on it) stays the same data."""
    from lesionbench.tasks.synthetic.anatomy import _on_rib, _slab_le1, _smooth_field

    rng = np.random.default_rng(7)
    geo = S._draw_geometry(rng, 3)
    whole = _smooth_field(np.random.default_rng(1), geo, 5.0)
    at = np.nonzero(np.random.default_rng(2).random(geo.size) < 0.05)
    np.testing.assert_array_equal(_smooth_field(np.random.default_rng(1), geo, 5.0, at=at), whole[at])

    x, y, z = geo.coords()
    in_plane = (((x - x.mean()) / 40.0) ** 2).reshape(-1, 1, 1) + (((y - y.mean()) / 30.0) ** 2).reshape(1, -1, 1)
    t = ((z - z[0]) / (z[-1] - z[0])).reshape(1, 1, -1)
    for centre, half in ((0.5, 0.17), (0.02, 0.09), (1.3, 0.1)):  # inside, at the edge, outside the volume
        along_z = ((t - centre) / half) ** 2
        np.testing.assert_array_equal(_slab_le1(in_plane, along_z), (in_plane + along_z) <= 1.0)

    ang = np.arctan2((x - x.mean()).reshape(-1, 1, 1), -(y - y.mean()).reshape(1, -1, 1))
    zmm = (z - z[0]).reshape(1, 1, -1)
    shell = (np.abs(in_plane - 1.0) < 0.1) & (t > 0.3)
    expected = (np.mod(zmm + 10.0 * np.abs(ang) + 3.7, 18.0) < 18.0 * 0.35) & shell
    ribs = _on_rib(shell, zmm, ang, 3.7, 18.0)
    assert ribs.any() and not ribs.all()
    np.testing.assert_array_equal(ribs, expected)
