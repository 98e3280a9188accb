"""Test-retest data in the RIDER layout: two scans per patient, the lesion's seed point in both.

RIDER Lung CT (Zhao et al., *Radiology* 2009; TCIA) scanned 32 patients twice within 15 minutes; the
FMCIB paper and TumorImagingBench measure feature stability on it. Its task kind is its own: there are no
labels to score, only pairs to compare. A test-retest manifest (CSV or Parquet, paths relative to its
folder) has one row per lesion and scan:

``lesion_id`` (the same id in both scans), ``patient_id``, ``scan`` (``test`` or ``retest``),
``image_path``, ``coordX``, ``coordY``, ``coordZ`` (the seed in that scan, LPS mm); optionally
``mask_path``, ``diameter_mm`` and ``split``. Each lesion appears exactly once per scan, with the same
patient, and its two scans are two different image files.

The synthetic cohort's twin (:mod:`lesionbench.tasks.synthetic.retest`) is written in this layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ManifestError

SCANS: tuple[str, str] = ("test", "retest")
RETEST_COLUMNS: tuple[str, ...] = ("lesion_id", "patient_id", "scan", "image_path", "coordX", "coordY", "coordZ")
#: Problems listed in full in one error; the rest are counted.
MAX_LISTED = 20


def read_retest_manifest(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The checked test-retest manifest (absolute paths), or one :class:`ManifestError` listing every problem."""
    from lesionbench.benchmark.data.manifest import read_table, resolve_paths

    if isinstance(source, pd.DataFrame):
        df, where = source.reset_index(drop=True).copy(), "the test-retest table"
    else:
        path = Path(source)
        df, where = resolve_paths(read_table(path), path.parent), str(path)
    missing = [c for c in RETEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(where, [f"lacks the column(s) {missing}; a test-retest manifest needs {', '.join(RETEST_COLUMNS)} "
                                    "(one row per lesion and scan, scan = test or retest)."])  # fmt: skip
    for c in ("lesion_id", "patient_id", "scan"):
        df[c] = df[c].astype(str).str.strip()
    problems: list[str] = []
    bad_scan = df.index[~df["scan"].isin(SCANS)]
    problems += [f"row {i + 2}: scan {df.at[i, 'scan']!r} is neither 'test' nor 'retest'" for i in bad_scan]
    coords = df[["coordX", "coordY", "coordZ"]].apply(pd.to_numeric, errors="coerce")
    problems += [f"row {i + 2} (lesion {df.at[i, 'lesion_id']!r}): the seed point is not three finite numbers (LPS mm)"
                 for i in df.index[~np.isfinite(coords.to_numpy(float)).all(axis=1)]]  # fmt: skip
    ok = df[df["scan"].isin(SCANS)]
    dup = ok[ok.duplicated(["lesion_id", "scan"], keep=False)]
    problems += [f"lesion {lid!r}: {len(g)} rows for scan {scan!r} (rows {', '.join(str(i + 2) for i in g.index)}); one row per lesion and scan"
                 for (lid, scan), g in dup.groupby(["lesion_id", "scan"])]  # fmt: skip
    per = ok.groupby("lesion_id")["scan"].agg(set)
    problems += [f"lesion {lid!r}: no {other!r} scan; every lesion needs both a test and a retest row"
                 for lid, scans in per.items() for other in SCANS if other not in scans]  # fmt: skip
    pats = ok.groupby("lesion_id")["patient_id"].nunique()
    problems += [f"lesion {lid!r}: its two scans name different patients" for lid in pats.index[pats > 1]]
    imgs = ok.drop_duplicates(["lesion_id", "scan"]).groupby("lesion_id")["image_path"].nunique()
    problems += [f"lesion {lid!r}: both scans point at the same image file; the retest row needs the second scan's image"
                 for lid in imgs.index[(imgs < 2) & (per.reindex(imgs.index).map(len) == 2)]]  # fmt: skip
    if problems:
        more = [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        fix = "Fix these rows (numbered from the header as 1): one row per lesion and scan, scan = test or retest, the same lesion_id and patient_id in both."
        raise ManifestError(where, [*problems[:MAX_LISTED], *more, fix])
    df[["coordX", "coordY", "coordZ"]] = coords
    return df


def retest_pairs(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``test`` and ``retest`` rows of a checked manifest, aligned lesion by lesion (test order)."""
    test = manifest[manifest["scan"] == "test"].reset_index(drop=True)
    again = manifest[manifest["scan"] == "retest"].set_index("lesion_id").loc[test["lesion_id"]].reset_index()
    return test, again


def evaluate_retest(source: str | Path | pd.DataFrame, encoder: Any, *, name: str = "retest", out_dir: Path = Path("lesionbench-results"),
                    cache_dir: Path | None = None, n_boot: int = 1000, seed: int = 0, progress: bool = True, write: bool = True) -> Any:  # fmt: skip
    """Feature stability of a frozen ``encoder`` between the two scans of every lesion of a test-retest manifest.

    The task kind of its own: no labels, so no prediction stability. Written as ``robustness.json`` under
    ``<out_dir>/<name>/retest/<encoder>/`` with one block, ``retest`` (ICC(2,1) and ICC(3,1) with k = 2 and cosine, CIs
    over resampled patients).
    """
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.features import extract_features
    from lesionbench.benchmark.scoring.metrics import bootstrap_weights
    from lesionbench.benchmark.robustness.result import RobustnessResult, robustness_path, write_robustness
    from lesionbench.benchmark.robustness.stability import stability_block

    if callable(getattr(encoder, "fit", None)):
        raise ConfigurationError(f"Encoder {encoder.meta.name!r} is trainable and a test-retest manifest has no labels to train it on; "
                                 "run it with --task on a task that has test-retest data instead.")  # fmt: skip
    manifest = read_retest_manifest(source)
    first, second = retest_pairs(manifest)
    a = extract_features(first, encoder, cache_dir=cache_dir, progress=progress)
    b = extract_features(second, encoder, cache_dir=cache_dir, progress=progress)
    groups = first["patient_id"].astype(str).to_numpy()
    W = bootstrap_weights(len(first), n_boot, [seed, 9], groups) if n_boot > 0 else np.zeros((0, len(first)))
    block = stability_block(a, [b], W, groups, n_boot=n_boot, seed=[seed, 9])
    block.update({"n_pairs": int(len(first)), "prediction_change": None, "metric_drop": None})
    emeta = encoder.meta
    result = RobustnessResult(
        task={"name": name, "version": "retest", "kind": "retest", "main_metric": None},
        encoder={"name": emeta.name, "version": emeta.version, "fingerprint": emeta.fingerprint(), "feature_dim": int(emeta.feature_dim),
                 "weights_sha256": emeta.weights_sha256 or None, "trainable": False},  # fmt: skip
        settings={"perturbations": ["retest"], "seed": seed}, perturbations={"retest": block}, reference={"main_metric": None, "value": float("nan")},
        n_boot=int(n_boot), n_test=int(len(first)), n_test_patients=int(first["patient_id"].nunique()),
    )  # fmt: skip
    if write:
        write_robustness(result, robustness_path(out_dir, name, "retest", emeta.name))
    return result
