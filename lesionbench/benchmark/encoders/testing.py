"""Conformance suites any plug-in can run in its own tests: ``check_encoder`` and ``check_task``.

    from lesionbench.benchmark.encoders.testing import check_encoder
    def test_my_encoder():
        check_encoder(MyEncoder())

Each check raises ``AssertionError`` with a message naming the contract that is broken (these are test
helpers, so plain assertions are what pytest reports best).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import EncoderMeta, TaskKind, TaskMeta


def _check_meta(meta: Any) -> EncoderMeta:
    assert isinstance(meta, EncoderMeta), f"encoder.meta must be an EncoderMeta, got {type(meta).__name__}"
    assert meta.name and isinstance(meta.name, str), "encoder.meta.name must be a non-empty string"
    assert meta.version, f"{meta.name}: encoder.meta.version must be set (it keys the feature cache)"
    assert isinstance(meta.feature_dim, int) and meta.feature_dim > 0, f"{meta.name}: feature_dim must be a positive int, got {meta.feature_dim!r}"
    fp = meta.fingerprint()
    assert fp == meta.fingerprint() and len(fp) == 16, f"{meta.name}: fingerprint() must be stable"
    return meta


def _synthetic_patches(meta: EncoderMeta, n: int, seed: int) -> np.ndarray:
    """CT-like patches in FMCIB's normalised range: soft tissue, a dense blob, noise; mask channel a ball."""
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in meta.patch.size)
    c = 2 if meta.patch.with_mask else 1
    zz, yy, xx = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in size], indexing="ij")
    out = np.empty((n, c, *size), dtype=np.float32)
    for i in range(n):
        r = 3 + 2 * i
        ball = (zz**2 + yy**2 + xx**2) <= r * r
        hu = rng.normal(40, 30, size) + 300 * ball * (1 + i)
        out[i, 0] = (hu + 1024) / 3072
        if c == 2:
            out[i, 1] = ball
    return out


def _compare(a: np.ndarray, b: np.ndarray, what: str, name: str, rtol: float, atol: float) -> None:
    scale = max(float(np.abs(a).max()), 1.0)
    diff = float(np.abs(a - b).max())
    assert diff <= atol + rtol * scale, f"{name}: {what} (max abs difference {diff:.3g}, allowed {atol + rtol * scale:.3g})"


def check_encoder(encoder: Any, *, n: int = 3, rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> None:
    """Check the encoder contract on ``n`` synthetic lesions: feature shape and float32 dtype, finite
    values, input order kept, determinism, and independence from the batch composition.

    Works for patch encoders (``encode``) and image encoders (``encode_lesions``). Kept light: the
    encoder sees ``4 n`` lesions in total.
    """
    meta = _check_meta(encoder.meta)
    if hasattr(encoder, "encode_lesions"):
        image, lesions = synthetic_image_lesions(n, seed=seed)

        def run(rows: list[int]) -> np.ndarray:
            return encoder.encode_lesions(image, lesions.iloc[rows].reset_index(drop=True))
    else:
        assert hasattr(encoder, "encode"), f"{meta.name}: an encoder defines encode(patches) or encode_lesions(image, lesions)"
        patches = _synthetic_patches(meta, n, seed)

        def run(rows: list[int]) -> np.ndarray:
            return encoder.encode(patches[rows])

    rows = list(range(n))
    f = run(rows)
    assert isinstance(f, np.ndarray), f"{meta.name}: features must be a numpy array, got {type(f).__name__}"
    assert f.dtype == np.float32, f"{meta.name}: features must be float32, got {f.dtype}"
    assert f.shape == (n, meta.feature_dim), f"{meta.name}: expected shape ({n}, {meta.feature_dim}), got {f.shape}"
    assert np.isfinite(f).all(), f"{meta.name}: features contain NaN or inf"
    assert n < 2 or not np.allclose(f[0], f[1]), f"{meta.name}: different lesions gave identical features (is the input ignored?)"
    _compare(run(rows), f, "features differ between two identical calls (not deterministic)", meta.name, rtol, atol)
    _compare(run(rows[::-1])[::-1], f, "features depend on the input order (rows must map to rows)", meta.name, rtol, atol)
    single = np.concatenate([run([i]) for i in rows])
    _compare(single, f, "features depend on the batch composition (one at a time vs all at once)", meta.name, rtol, atol)


def synthetic_image_lesions(n: int = 3, *, seed: int = 0):
    """A small synthetic CT (SimpleITK, anisotropic, non-zero origin) with ``n`` spherical lesions and a
    label mask file-free: lesions carry ``diameter_mm`` (image encoders use it when there is no mask)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    size = (64, 64, 40)  # x, y, z
    spacing = (0.8, 0.8, 1.5)
    arr = rng.normal(-700, 40, size[::-1]).astype(np.float32)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin((-25.0, 10.0, -300.0))
    rows = []
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in size[::-1]], indexing="ij")
    for i in range(n):
        centre = np.array([14 + 16 * (i % 3), 20 + 12 * (i // 3 % 3), 12 + 6 * (i % 2)], dtype=float)
        radius_mm = 4.0 + 1.5 * i
        d2 = ((xx - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2 + ((zz - centre[2]) * spacing[2]) ** 2
        arr[d2 <= radius_mm**2] = 30 + 60 * i + rng.normal(0, 10, int((d2 <= radius_mm**2).sum()))
        pt = img.TransformContinuousIndexToPhysicalPoint(tuple(centre))
        rows.append({"lesion_id": f"L{i}", "coordX": pt[0], "coordY": pt[1], "coordZ": pt[2], "diameter_mm": 2 * radius_mm, "mask_path": float("nan")})
    out = sitk.GetImageFromArray(arr.astype(np.int16))
    out.CopyInformation(img)
    return out, pd.DataFrame(rows)


def check_task(task: Any, *, check_files: bool = True, check_seeds: bool = True) -> pd.DataFrame:
    """Check the task contract: metadata, a valid manifest (every problem reported at once), three
    splits with labels of the task's kind, and (optionally) every seed inside its image. Returns the manifest."""
    from lesionbench.benchmark.data.manifest import validate_manifest

    meta = task.meta
    assert isinstance(meta, TaskMeta), f"task.meta must be a TaskMeta, got {type(meta).__name__}"
    assert meta.name and meta.version, "task.meta needs a name and a version"
    assert meta.main_metric in meta.metrics, f"{meta.name}: main_metric {meta.main_metric!r} is not among metrics {meta.metrics}"
    if meta.kind == TaskKind.MULTICLASS:
        assert meta.n_classes >= 2, f"{meta.name}: a multiclass task names its classes"
    df = task.manifest()
    assert isinstance(df, pd.DataFrame), f"{meta.name}: manifest() must return a DataFrame"
    df = validate_manifest(df, meta=meta, source=f"task {meta.name}", check_files=check_files)
    present = set(df["split"])
    assert {"train", "test"} <= present, f"{meta.name}: the manifest needs train and test lesions, found splits {sorted(present)}"
    for s in present:
        sub = df[df["split"] == s]
        if meta.kind in (TaskKind.MULTICLASS, TaskKind.BINARY) and s == "train":
            assert sub["label"].nunique() >= 2, f"{meta.name}: the training split has a single class"
    for p in df["image_path"]:
        assert Path(p).is_absolute(), f"{meta.name}: manifest() must return absolute image paths, got {p}"
    if check_seeds and check_files:
        _check_seeds(df, meta.name)
    return df


def _check_seeds(df: pd.DataFrame, name: str) -> None:
    import SimpleITK as sitk

    from lesionbench.benchmark.data.geometry import ImageGeometry

    bad = []
    for path, sub in df.groupby("image_path", sort=False):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # header only
        geo = ImageGeometry(
            size=tuple(int(s) for s in reader.GetSize()),
            spacing=tuple(reader.GetSpacing()),
            origin=tuple(reader.GetOrigin()),
            direction=tuple(reader.GetDirection()),
        )
        for lid, x, y, z in sub[["lesion_id", "coordX", "coordY", "coordZ"]].itertuples(index=False):
            if not geo.contains((x, y, z)) or not all(math.isfinite(v) for v in (x, y, z)):
                bad.append(f"{lid} ({x:.1f}, {y:.1f}, {z:.1f}) in {path}")
    assert not bad, f"{name}: {len(bad)} seed(s) outside their image: " + "; ".join(bad[:10])
