from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.benchmark.errors import LesionbenchError, ManifestError
from lesionbench.benchmark.data.manifest import load_manifest, read_manifest, validate_manifest
from lesionbench.benchmark.types import TaskKind, TaskMeta
from lesionbench.cli import main


def _good(tmp_path: Path, n: int = 4) -> pd.DataFrame:
    import SimpleITK as sitk

    img = tmp_path / "ct.nii.gz"
    ct = sitk.GetImageFromArray(np.zeros((4, 4, 24), np.int16))
    ct.SetOrigin((-12.0, -1.0, -302.0))  # holds the seeds below: validate reads the header
    sitk.WriteImage(ct, str(img))
    return pd.DataFrame(
        {
            "lesion_id": [f"L{i}" for i in range(n)],
            "patient_id": [f"P{i // 2}" for i in range(n)],
            "image_path": [str(img)] * n,
            "coordX": np.linspace(-10, 10, n),
            "coordY": 1.0,
            "coordZ": -300.5,
            "split": ["train", "train", "val", "test"][:n],
            "label": [0, 1, 2, 1][:n],
        }
    )


META = TaskMeta(name="t", version="1", kind=TaskKind.MULTICLASS, description="", main_metric="balanced_accuracy",
                metrics=("balanced_accuracy",), class_names=("a", "b", "c"))


def test_valid_manifest_passes_and_normalises(tmp_path: Path) -> None:
    df = _good(tmp_path)
    df.loc[0, "split"] = " TRAIN "
    out = validate_manifest(df, meta=META)
    assert out["split"].tolist() == ["train", "train", "val", "test"]
    assert out["label"].dtype.kind == "i"


def test_one_error_lists_every_problem(tmp_path: Path) -> None:
    df = _good(tmp_path)
    df.loc[1, "lesion_id"] = "L0"                         # duplicate id
    df.loc[2, "image_path"] = str(tmp_path / "nope.nii")  # missing file
    df.loc[3, "coordY"] = np.nan                          # non-finite coordinate
    df.loc[0, "split"] = "training"                       # unknown split
    df.loc[2, "label"] = np.nan                           # NaN label
    df.loc[3, "label"] = 7                                # out of range
    with pytest.raises(ManifestError) as ei:
        validate_manifest(df, meta=META, source="bad.csv")
    msg = str(ei.value)
    assert msg.startswith("bad.csv: 6 problems")
    assert "rows 1, 2: duplicate lesion_id ['L0']" in msg
    assert "row 3: image_path file not found" in msg and "nope.nii" in msg
    assert "row 4: coordY is not a finite number" in msg
    assert "row 1: unknown split value (got 'training'" in msg
    assert "row 3: label is missing" in msg
    assert "row 4: label outside 0..2 (got 7" in msg
    assert isinstance(ei.value, LesionbenchError) and isinstance(ei.value, ValueError)


def test_missing_column_named(tmp_path: Path) -> None:
    df = _good(tmp_path).drop(columns=["coordZ"])
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['coordZ'\]"):
        validate_manifest(df, kind=TaskKind.BINARY)


def test_misnamed_column_gets_a_rename_hint(tmp_path: Path) -> None:
    df = _good(tmp_path).rename(columns={"coordX": "coordx", "image_path": "image"})
    with pytest.raises(ManifestError) as err:
        validate_manifest(df, kind=TaskKind.BINARY)
    assert "Rename column 'image' to 'image_path', 'coordx' to 'coordX'" in str(err.value)
    # an unrelated column is not suggested
    with pytest.raises(ManifestError) as err:
        validate_manifest(_good(tmp_path).drop(columns=["split"]), kind=TaskKind.BINARY)
    assert "Rename" not in str(err.value)


class _NeverCalled:
    """An encoder that must not be reached: the table is rejected first."""

    from lesionbench.benchmark.types import EncoderMeta, PatchSpec

    meta = EncoderMeta(name="never", version="1", feature_dim=1, patch=PatchSpec())

    def encode(self, patches):
        raise AssertionError("encode called on a rejected table")


def test_extract_names_the_table_file_and_the_rename(tmp_path: Path) -> None:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.features import extract_features

    path = tmp_path / "seeds.csv"
    _good(tmp_path).rename(columns={"coordY": "coord_y"}).to_csv(path, index=False)
    with pytest.raises(ConfigurationError, match=r"seeds\.csv lacks column\(s\) \['coordY'\].*Rename column 'coord_y' to 'coordY'"):
        extract_features(read_manifest(path), _NeverCalled(), cache=False, progress=False)


def test_survival_rules(tmp_path: Path) -> None:
    df = _good(tmp_path).drop(columns=["label"])
    df["time"] = [100.0, -5.0, np.nan, 30.0]
    df["event"] = [1, 0, 1, 2]
    with pytest.raises(ManifestError) as ei:
        validate_manifest(df, kind=TaskKind.SURVIVAL)
    msg = str(ei.value)
    assert "row 2: negative survival time" in msg
    assert "row 3: time is missing" in msg
    assert "row 4: event is not 0 or 1" in msg


def test_relative_paths_resolve_against_manifest_folder(tmp_path: Path) -> None:
    df = _good(tmp_path)
    df["image_path"] = "ct.nii.gz"
    df.to_csv(tmp_path / "m.csv", index=False)
    out = load_manifest(tmp_path / "m.csv", meta=META)
    assert out["image_path"].iloc[0] == str((tmp_path / "ct.nii.gz").resolve())


def test_ids_stay_strings(tmp_path: Path) -> None:
    df = _good(tmp_path)
    df["patient_id"] = ["0001", "0001", "0002", "0002"]
    df.to_parquet(tmp_path / "m.parquet")
    df.to_csv(tmp_path / "m.csv", index=False)
    assert read_manifest(tmp_path / "m.csv")["patient_id"].iloc[0] == "0001"
    assert read_manifest(tmp_path / "m.parquet")["patient_id"].iloc[0] == "0001"


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = _good(tmp_path)
    df.to_csv(tmp_path / "ok.csv", index=False)
    assert main(["validate", str(tmp_path / "ok.csv")]) == 0
    df.loc[1, "lesion_id"] = "L0"
    df.loc[2, "split"] = "dev"
    df.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["validate", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "duplicate lesion_id" in err and "unknown split value (got 'dev'" in err
    assert main(["validate", str(tmp_path / "absent.csv")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_validate_reads_image_headers_seeds_outside_and_broken_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import SimpleITK as sitk

    df = _good(tmp_path)  # first: it writes its own ct.nii.gz
    img = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1000, (10, 12, 14)).astype(np.int16))
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"), True)
    raw = (tmp_path / "ct.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.nii.gz").write_text("not an image")
    df = df.assign(image_path=str(tmp_path / "ct.nii.gz"), coordX=[1.0, 2.0, 9999.0, 3.0], coordZ=4.0)
    df.loc[1, "image_path"] = str(tmp_path / "cut.nii.gz")
    df.loc[3, "image_path"] = str(tmp_path / "text.nii.gz")
    df["mask_path"] = ["", str(tmp_path / "text.nii.gz"), "", ""]
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    assert main(["validate", str(path), "--no-files"]) == 0  # header checks are part of the file checks
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "4 problems found" in err
    assert "row 2: mask_path: " in err
    assert "row 3: seed point outside its image ct.nii.gz (first: (9999.0, 1.0, 4.0) mm; the image spans X 0.0..13.0" in err
    assert "row 2: " in err and "cut.nii.gz is truncated" in err
    assert "row 4: " in err and "text.nii.gz is not a readable image (Unable to determine ImageIO reader" in err


@pytest.mark.parametrize("command", ["validate", "extract"])
def test_empty_file_and_folder_named_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    extra = ["--encoder", "radiomics", "-o", str(tmp_path / "o.csv")] if command == "extract" else []
    assert main([command, str(empty), *extra]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: 1 problem found" in err and "is empty (0 bytes). A manifest is a header line" in err
    assert main([command, str(tmp_path), *extra]) == 2
    assert "is a folder. Give the manifest file itself" in capsys.readouterr().err
