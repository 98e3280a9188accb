"""The bad-input battery of issue 13 (weights, image headers, numbers and names on the command line, file
permissions, durability) and the fuzz test: random and truncated bytes as weights files and as manifests
give one clear error each, exit code 2 on the command line, and nothing written."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import ManifestError, WeightsError
from lesionbench.benchmark.host import atomic_write, current_umask
from lesionbench.cli import main


# ------------------------------------------------------------------------------ file permissions
@pytest.fixture
def umask():
    """Set the process umask for one test (and restore it)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_respects_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    out = atomic_write(tmp_path / "shared" / "meta.json", lambda tmp: tmp.write_text("{}"))
    assert out.stat().st_mode & 0o777 == mode  # mkstemp alone gives 0o600: colleagues could not read it


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, umask):
    umask(0o077)
    path = tmp_path / "table.csv"
    path.write_text("old")
    path.chmod(0o664)  # a lab made it group-writable on purpose
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o664


def test_reading_the_umask_never_changes_it_under_other_threads(umask):
    # os.umask() can only be read by setting it; current_umask reads /proc instead, so a thread
    # creating files meanwhile never sees a temporary mask
    umask(0o027)
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with open("/proc/self/status") as f:
                seen.update(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))

    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc here: the set-and-restore fallback is used")
    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(2000):
            assert current_umask() == 0o027
    finally:
        stop.set()
        t.join()
    assert seen == {0o027}


# ------------------------------------------------------------------------------------ durability
def test_result_json_is_written_atomically(tmp_path, monkeypatch):
    from lesionbench.benchmark.scoring import scorer

    class Result:
        def to_dict(self):
            return {"task": "t", "runs": [1, 2, 3]}

    (tmp_path / scorer.RESULT_FILE).write_text('{"earlier": "result"}')
    real = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        scorer.write_result(Result(), tmp_path)
    monkeypatch.undo()
    assert (tmp_path / scorer.RESULT_FILE).read_text() == '{"earlier": "result"}' and len(list(tmp_path.iterdir())) == 1
    scorer.write_result(Result(), tmp_path)
    assert '"runs"' in (tmp_path / scorer.RESULT_FILE).read_text()


# ---------------------------------------------------------------------- numbers on the command line
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--task", "synthetic_site", "--encoder", "radiomics", "--n-boot", "-5"], "argument --n-boot: -5 is too small; give a whole number >= 0"),
        (["compare", "--task", "t", "--encoder-a", "a", "--encoder-b", "b", "--n-perm", "-1"], "argument --n-perm: -1 is too small"),
        (["leaderboard", "build", "--out", "x", "--n-boot", "-1"], "argument --n-boot: -1 is too small"),
        (["run", "--task", "t", "--encoder", "e", "--n-boot", "1e400"], "argument --n-boot: '1e400' is out of range (not a finite number)"),
        (["run", "--task", "t", "--encoder", "e", "--fractions", "1e400"], "argument --fractions: '1e400' is out of range (not a finite number)"),
        (["compare", "--task", "t", "--encoder-a", "a", "--encoder-b", "b", "--fraction", "nan"], "argument --fraction: 'nan' is out of range"),
        (["run", "--task", "t", "--encoder", "e", "--seeds", "0", "1e400"], "argument --seeds: '1e400' is out of range (not a finite number); give a whole number"),
        (["run", "--task", "t", "--encoder", "e", "--jobs", "0"], "argument --jobs: 0 is too small; give a whole number >= 1"),
        (["run", "--task", "t", "--encoder", "e", "--n-boot", "2.5"], "argument --n-boot: '2.5' is not a whole number"),
        (["run", "--task", "t", "--encoder", "e", "--n-boot", "many"], "argument --n-boot: 'many' is not a number"),
        (["synth", "--patients", "1e30"], "argument --patients: '1e30' is out of range"),
        (["extract", "t.csv", "-o", "o.csv", "--batch-size", "-2"], "argument --batch-size: -2 is too small"),
    ],
)
def test_numbers_out_of_range_are_refused_at_parse_time(argv, message, capsys, tmp_path):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(Path.cwd().iterdir()) == []  # nothing written


def test_whole_numbers_and_finite_numbers_that_are_fine():
    from lesionbench.cli import build_parser

    args = build_parser().parse_args(["run", "--task", "t", "--encoder", "e", "--n-boot", "1e3", "--seeds", "0", "7", "--fractions", "0.5", "1"])
    assert args.n_boot == 1000 and args.seeds == [0, 7] and args.fractions == [0.5, 1.0]


# --------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("fmcib\u202egnp.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("evil\u2066name", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ("zero\u200bwidth", "U+200B (ZERO WIDTH SPACE)"),
        ("bell\x07", "U+0007"),
        ("line\nbreak", "U+000A"),
        ("x" * 65, "65 characters long, at most 64"),
        (" padded", "leading or trailing whitespace"),
    ],
)
def test_encoder_and_task_names_are_bounded_and_visible(name, why, monkeypatch, capsys):
    from lesionbench.benchmark.errors import ConfigurationError, UnknownNameError
    from lesionbench.benchmark.encoders.plugins import ENCODERS, TASKS, get_encoder
    from lesionbench.benchmark.encoders.registry import Registry

    reg: Registry = Registry("encoder", "lesionbench.no-such-group")
    with pytest.raises(ConfigurationError, match="Invalid encoder name: the name ") as err:
        reg.add(name, object)
    assert why in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        ENCODERS.get(name)
    assert why in str(err.value)
    assert main(["run", "--task", "synthetic_site", "--encoder", name, "--no-mlflow"]) == 2
    assert why in capsys.readouterr().err
    # a plug-in registered under a clean name whose meta.name is not clean
    from lesionbench.benchmark.types import EncoderMeta

    class Sly:
        meta = EncoderMeta(name=name, version="1", feature_dim=1)

    ENCODERS.names()
    monkeypatch.setattr(ENCODERS, "_factories", dict(ENCODERS._factories, sly=Sly))
    with pytest.raises(ConfigurationError, match="reports an invalid meta.name: the name ") as err:
        get_encoder("sly")
    assert why in str(err.value)
    assert TASKS.get("synthetic_site")  # clean names still work


def test_a_plugin_with_a_hostile_entry_point_name_is_skipped_unloaded(monkeypatch, caplog):
    from importlib import metadata

    from lesionbench.benchmark.encoders.registry import Registry

    ep = metadata.EntryPoint(name="ok\u202eevil", value="no_such_module_would_be_imported:Factory", group="lesionbench.test")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep])
    reg: Registry = Registry("encoder", "lesionbench.test")
    with caplog.at_level("WARNING"):
        assert reg.names() == []
    assert "Skipping encoder plug-in from entry point 'no_such_module_would_be_imported:Factory'" in caplog.text


def test_missing_synthetic_data_names_the_command_line_flag(tmp_path, capsys):
    assert main(["run", "--task", "synthetic_malignancy", "--encoder", "radiomics", "--data-dir", str(tmp_path / "nowhere"), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "`lesionbench synth --out DIR` and pass `--data-dir DIR/synthetic_malignancy`" in err and "pass data_dir=" not in err


# --------------------------------------------------------------------------------- image headers
def _mha(path: Path, *, spacing: str = "1 1 1", origin: str = "0 0 0", direction: str = "1 0 0 0 1 0 0 0 1", size=(12, 12, 12)) -> Path:
    """A MetaImage written by hand: its header is text, so values SimpleITK refuses to write can be put in."""
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n"
        f"TransformMatrix = {direction}\nOffset = {origin}\nElementSpacing = {spacing}\n"
        f"DimSize = {' '.join(map(str, size))}\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + np.zeros(size[::-1], np.int16).tobytes())
    return path


def _nifti_with(path: Path, edits: list[tuple[int, str, tuple]]) -> Path:
    """A NIfTI-1 file written by SimpleITK, then header fields overwritten (offset, struct format, values)."""
    import struct

    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 12, 12), np.int16)), str(path))
    raw = bytearray(path.read_bytes())
    for offset, fmt, values in edits:
        struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return path


NAN = float("nan")
#: NIfTI-1 header offsets: qoffset_x (268) and srow_x[3] (292) hold the origin; qform/sform codes at 252/254.
BAD_HEADERS = {  # case: (make the file, what validate says (header only), what extraction says (full read))
    "zero spacing": (lambda d: _mha(d / "zero.mha", spacing="0 1 1"), "spacing (0.0, 1.0, 1.0) (must be finite and non-zero)", "Zero-valued spacing is not supported"),
    "NaN spacing": (lambda d: _mha(d / "nan-spacing.mha", spacing="nan 1 1"), "(must be finite and non-zero)", "Zero-valued spacing"),
    "singular direction": (lambda d: _mha(d / "singular.mha", direction="1 0 0 1 0 0 0 0 1"), "(a singular matrix, not a rotation)", "determinant is 0"),
    "NaN origin": (
        lambda d: _nifti_with(d / "nan-origin.nii", [(268, "<f", (NAN,)), (292, "<f", (NAN,))]), "origin (nan, 0.0, 0.0) (must be finite)", "origin (nan, 0.0, 0.0) (must be finite)"
    ),
    "singular sform": (
        lambda d: _nifti_with(d / "singular-sform.nii", [(252, "<hh", (0, 1)), (280, "<4f", (1, 0, 0, 0)), (296, "<4f", (1, 0, 0, 0)), (312, "<4f", (0, 0, 1, 0))]),
        "orthonormal direction cosines",
        "orthonormal direction cosines",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_validate_names_an_unusable_header_with_the_file_and_the_fix(case, tmp_path, capsys):
    make, what, _ = BAD_HEADERS[case]
    image = make(tmp_path)
    table = tmp_path / "manifest.csv"
    pd.DataFrame([{"lesion_id": "L1", "patient_id": "P1", "image_path": str(image), "coordX": 5.0, "coordY": 5.0, "coordZ": 5.0, "split": "train"}]).to_csv(table, index=False)
    assert main(["validate", str(table)]) == 2  # was: a LinAlgError traceback, or "valid" for a NaN origin
    err = capsys.readouterr().err
    assert "row 1: " in err and str(image) in err and what in err and "Fix the header or re-convert the image" in err and "Traceback" not in err


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_extraction_names_an_unusable_header_with_the_file_and_the_fix(case, tmp_path):
    from lesionbench.benchmark.errors import ImageError
    from lesionbench.benchmark.encoders.features import extract_features
    from lesionbench.benchmark.types import EncoderMeta, PatchSpec

    class Ones:
        meta = EncoderMeta(name="ones", version="1", feature_dim=2, patch=PatchSpec(size=(8, 8, 8)))

        def encode(self, patches):
            return np.ones((len(patches), 2), np.float32)

    make, _, what = BAD_HEADERS[case]
    image = make(tmp_path)
    lesions = pd.DataFrame({"image_path": [str(image)], "coordX": [5.0], "coordY": [5.0], "coordZ": [5.0]})
    with pytest.raises(ImageError) as err:  # was: "internal: expected a RAS grid" for a NaN origin
        extract_features(lesions, Ones(), cache_dir=tmp_path / "cache", progress=False)
    assert str(image) in str(err.value) and what in str(err.value) and "Fix the header or re-convert the image" in str(err.value)
    assert "internal" not in str(err.value)


def _image_and_masks(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-500, 500, (20, 20, 20)).astype(np.int16))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    lesion = np.zeros((20, 20, 20), np.uint8)
    lesion[8:12, 8:12, 8:12] = 1
    masks = {}
    for name, change in {"on-grid": {}, "spacing": {"SetSpacing": (2.0, 2.0, 2.0)}, "origin": {"SetOrigin": (300.0, 0.0, 0.0)}, "size": {"crop": True}}.items():
        m = sitk.GetImageFromArray(lesion[:10] if change.get("crop") else lesion)
        for setter, value in change.items():
            if setter != "crop":
                getattr(m, setter)(value)
        masks[name] = tmp_path / f"mask-{name}.nii.gz"
        sitk.WriteImage(m, str(masks[name]))
    return tmp_path / "ct.nii.gz", masks


def test_a_mask_off_its_images_grid_is_named_by_validate_and_extraction(tmp_path, capsys):
    from lesionbench.benchmark.errors import ImageError
    from lesionbench.benchmark.encoders.features import extract_features
    from lesionbench.benchmark.encoders.plugins import get_encoder

    image, masks = _image_and_masks(tmp_path)
    rows = [
        {"lesion_id": name, "patient_id": "P", "image_path": str(image), "mask_path": str(path), "coordX": 10.0, "coordY": 10.0, "coordZ": 10.0, "split": "train"}
        for name, path in masks.items()
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    assert main(["validate", str(tmp_path / "m.csv")]) == 2  # was: "valid"
    err = capsys.readouterr().err
    assert "3 problems found" in err and "row 1" not in err
    assert f"row 2: mask_path {masks['spacing']} is not on the grid of its image ct.nii.gz (spacing (2.0, 2.0, 2.0) vs (1.0, 1.0, 1.0) mm)" in err
    assert f"row 3: mask_path {masks['origin']} is not on the grid of its image ct.nii.gz (origin (300.0, 0.0, 0.0) vs (0.0, 0.0, 0.0) mm)" in err
    assert "row 4: " in err and "(size (20, 20, 10) vs (20, 20, 20))" in err and "sitk.Resample(mask, image" in err
    # extraction: radiomics (whole image + mask) resampled such masks silently, now it names them
    with pytest.raises(ImageError) as caught:
        extract_features(pd.DataFrame(rows), get_encoder("radiomics"), cache=False, progress=False)
    msg = str(caught.value)
    assert "3 of 4 lesions failed" in msg and f"lesion mask {masks['spacing']} is not on the grid of its image" in msg and "lesion_id on-grid" not in msg


# ------------------------------------------------------------------------------------------ fuzz
def _fuzzed_weights(tmp_path: Path, n: int = 100, seed: int = 13) -> list[Path]:
    """``n`` seeded files that are not checkpoints: random bytes, text, and checkpoints (zip and legacy
    format) cut short at random points."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = {"conv1.weight": torch.randn(4, 1, 3, 3, 3), "bn1.running_mean": torch.randn(4), "bn1.num_batches_tracked": torch.tensor(3)}
    blobs = []
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save({"trunk_state_dict": state}, buf, _use_new_zipfile_serialization=not legacy)
        blobs.append(buf.getvalue())
    files = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data = rng.bytes(int(rng.integers(0, 5000)))
        elif kind == 3 and i % 8 == 3:
            data = ("weights = " + " ".join(str(v) for v in rng.normal(size=50)) + "\n").encode()
        else:
            blob = blobs[kind % 2]
            data = blob[: int(rng.integers(0, len(blob) - 1))]
        path = tmp_path / f"fuzz-{i:03d}.torch"
        path.write_bytes(data)
        files.append(path)
    return files


def test_fuzzed_weights_files_are_each_one_clear_weights_error(tmp_path):
    """Random and truncated bytes as weights: a WeightsError naming the file and what a checkpoint is, never
    torch's own IndexError / KeyError / struct.error (17 of 315 fuzzed files before)."""
    from lesionbench.baselines import fmcib as fm
    from lesionbench.benchmark.encoders.weights import VALID_CHECKPOINT, load_checkpoint, read_checkpoint

    for path in _fuzzed_weights(tmp_path):
        with pytest.raises(WeightsError) as err:
            fm.trunk_state_dict(load_checkpoint(path), source=str(path))  # a partial pickle that loads is no checkpoint either
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg, msg
        assert VALID_CHECKPOINT in msg or "not a checkpoint dictionary" in msg or "neither 'trunk_state_dict'" in msg, msg
        assert err.value.__cause__ is None and err.value.__suppress_context__  # one error, not a chained traceback
        with pytest.raises(WeightsError):
            fm.trunk_state_dict(read_checkpoint(path)[0], source=str(path))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("command", ["extract", "run"])
def test_fuzzed_weights_on_the_command_line_exit_2_and_write_nothing(tmp_path, capsys, command):
    image = tmp_path / "ct.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16)), str(image))
    seeds = tmp_path / "seeds.csv"
    pd.DataFrame({"image_path": [str(image)], "coordX": [10.0], "coordY": [10.0], "coordZ": [10.0]}).to_csv(seeds, index=False)
    (tmp_path / "w").mkdir()
    for weights in _fuzzed_weights(tmp_path / "w", n=4, seed=3):
        before = _files(tmp_path) | _files(Path.cwd())
        if command == "extract":
            argv = ["extract", str(seeds), "--encoder", "fmcib", "--weights", str(weights), "-o", str(tmp_path / "out.csv"), "--cache-dir", str(tmp_path / "cache")]
        else:
            argv = ["run", "--task", "synthetic_site", "--encoder", "fmcib", "--weights", str(weights), "--results", str(tmp_path / "results"), "--no-mlflow"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(weights) in err and "Traceback" not in err
        assert _files(tmp_path) | _files(Path.cwd()) == before  # nothing written: no output, no cache, no results


def _fuzzed_manifests(tmp_path: Path, n: int = 100, seed: int = 5) -> list[Path]:
    """``n`` seeded manifests: random bytes (as .csv and .parquet) and valid manifests cut short inside a row
    (a cut at a row boundary would be a valid, shorter manifest)."""
    import SimpleITK as sitk

    image = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20, 20), np.int16)), str(image))
    good = pd.DataFrame({
        "lesion_id": [f"L{i}" for i in range(6)], "patient_id": [f"P{i // 2}" for i in range(6)], "image_path": str(image),
        "coordX": 10.0, "coordY": 10.5, "coordZ": 9.25, "split": ["train", "train", "val", "val", "test", "test"], "label": [0, 1, 0, 1, 0, 1],
    })  # fmt: skip
    good.to_csv(tmp_path / "good.csv", index=False)
    good.to_parquet(tmp_path / "good.parquet")
    csv, parquet = (tmp_path / "good.csv").read_bytes(), (tmp_path / "good.parquet").read_bytes()
    header_commas = csv.split(b"\n")[0].count(b",")
    cuts = [c for c in range(1, len(csv)) if csv.split(b"\n")[0] not in csv[:c] or csv[:c].split(b"\n")[-1].count(b",") < header_commas]
    cuts = [c for c in cuts if csv[c - 1 : c] != b"\n"]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data, suffix = rng.bytes(int(rng.integers(0, 3000))), ".csv"
        elif kind == 1:
            data, suffix = rng.bytes(int(rng.integers(0, 3000))), ".parquet"
        elif kind == 2:
            data, suffix = csv[: int(rng.choice(cuts))], ".csv"
        else:
            data, suffix = parquet[: int(rng.integers(0, len(parquet) - 1))], ".parquet"
        path = tmp_path / f"fuzz-{i:03d}{suffix}"
        path.write_bytes(data)
        files.append(path)
    return files


def test_fuzzed_manifests_are_each_one_clear_error_with_exit_2(tmp_path, capsys):
    from lesionbench.benchmark.data.manifest import load_manifest

    files = _fuzzed_manifests(tmp_path)
    assert main(["validate", str(tmp_path / "good.csv")]) == 0 and main(["validate", str(tmp_path / "good.parquet")]) == 0
    capsys.readouterr()
    before = _files(tmp_path)
    for path in files:
        with pytest.raises(ManifestError) as err:
            load_manifest(path, check_images=True)
        assert str(path) in str(err.value)
        assert main(["validate", str(path)]) == 2
        err_text = capsys.readouterr().err
        assert err_text.startswith(f"error: {path}: ") and "Traceback" not in err_text
    # extraction refuses the random and the cut Parquet files before any work (a CSV cut after a row's
    # coordinates is still a valid seed table for extraction, which needs no split or label)
    for path in [f for i, f in enumerate(files[:12]) if i % 4 != 2]:
        assert main(["extract", str(path), "--encoder", "radiomics", "-o", str(tmp_path / "out.csv")]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert _files(tmp_path) == before  # nothing written


def test_synth_elsewhere_says_how_to_point_run_at_it(tmp_path, capsys):
    assert main(["-q", "synth", "--out", str(tmp_path / "cohort"), "--patients", "1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"--data-dir {tmp_path / 'cohort' / 'synthetic_site'}" in out and f"(--data-dir {tmp_path / 'cohort'}/<task>)" in out
