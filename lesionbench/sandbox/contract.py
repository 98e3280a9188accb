"""The code-submission contract, version :data:`CONTRACT_VERSION`: what a sandboxed encoder reads and writes.

Inputs (read-only; nothing else is mounted):

* ``/input/lesions.csv`` - one row per lesion, columns :data:`INPUT_COLUMNS`: ``lesion_id`` (a string),
  ``image_path`` (relative to ``/input``: ``images/<k>.<ext>``), the seed point ``coordX, coordY, coordZ``
  (LPS millimetres, physical coordinates of the image), ``mask_path`` (relative, or empty). No labels, no
  patient ids, no splits.
* ``/input/images/`` - the images (NIfTI, MHA, NRRD), renamed so their names carry no information.

Outputs (``/output`` is the only writable place, a size-capped file system):

* ``/output/embeddings/vectors.npy`` - a NumPy ``.npy`` array (format 1.0-3.0, no pickles), little-endian
  float32 or float64, C order, shape ``(n_lesions, feature_dim)``, every value finite;
* ``/output/embeddings/lesion_ids.json`` - a JSON list of the ``n_lesions`` lesion ids, row ``i`` of
  ``vectors.npy`` belonging to id ``i``: every input id exactly once, no other;
* ``/output/model.json`` - the model card: ``{"contract": "lesionbench-sandbox/1", "encoder": {...}}``
  where ``encoder`` holds :class:`~lesionbench.benchmark.types.EncoderMeta`'s fields (``name``, ``version``,
  ``feature_dim``, ``weights_sha256``, ``description``, ``citation``, ``settings``, ``card``, ...).

Nothing else may be written there: no other files, no symbolic links, no special files. The organiser's
:func:`read_outputs` checks all of it and names the first check that failed (:data:`CHECKS`).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.types import EncoderMeta
from lesionbench.sandbox.failures import BadOutputError

#: The contract's version string, written in model.json and checked on the way back.
CONTRACT_VERSION = "lesionbench-sandbox/1"
INPUT_COLUMNS = ("lesion_id", "image_path", "coordX", "coordY", "coordZ", "mask_path")
EMBEDDINGS_DIR = "embeddings"
VECTORS = "vectors.npy"
IDS = "lesion_ids.json"
MODEL_CARD = "model.json"
#: The only entries allowed under /output.
ALLOWED = frozenset({EMBEDDINGS_DIR, MODEL_CARD, f"{EMBEDDINGS_DIR}/{VECTORS}", f"{EMBEDDINGS_DIR}/{IDS}"})
#: Largest model.json / lesion_ids.json read (bytes), largest feature size accepted.
MAX_JSON_BYTES = 1 << 20
MAX_FEATURE_DIM = 1 << 16
#: Every check of :func:`read_outputs`, in the order they run (a bad output names one of them).
CHECKS = ("output-files", "symlink", "output-size", "model-card", "ids", "array-format", "feature-size", "finite", "missing-ids", "extra-ids")


@dataclass(frozen=True)
class Embeddings:
    """Checked outputs: one row of ``vectors`` (float32) per expected id, in the expected order."""

    vectors: np.ndarray
    encoder: EncoderMeta
    card: dict[str, Any]


def write_inputs(lesions: pd.DataFrame, input_dir: Path) -> None:
    """Write ``lesions.csv`` (columns :data:`INPUT_COLUMNS` only) into ``input_dir``."""
    missing = [c for c in INPUT_COLUMNS if c not in lesions.columns]
    if missing:
        raise ValueError(f"internal: the staged lesion table lacks {missing}")
    lesions.loc[:, list(INPUT_COLUMNS)].to_csv(Path(input_dir) / "lesions.csv", index=False)


def read_inputs(input_dir: Path) -> pd.DataFrame:
    """The participant side: ``lesions.csv`` with paths resolved against ``input_dir`` (empty masks dropped)."""
    table = pd.read_csv(Path(input_dir) / "lesions.csv", dtype={"lesion_id": str, "image_path": str, "mask_path": str}, keep_default_na=False)
    table["image_path"] = [str(Path(input_dir) / p) for p in table["image_path"]]
    if (table["mask_path"] == "").all():
        table = table.drop(columns=["mask_path"])
    else:
        table["mask_path"] = [str(Path(input_dir) / p) if p else "" for p in table["mask_path"]]
    return table


def write_outputs(output_dir: Path, lesion_ids: list[str], vectors: np.ndarray, encoder: EncoderMeta) -> None:
    """The participant side: the embeddings and model card in the contract's layout."""
    out = Path(output_dir)
    (out / EMBEDDINGS_DIR).mkdir(parents=True, exist_ok=True)
    np.save(out / EMBEDDINGS_DIR / VECTORS, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    (out / EMBEDDINGS_DIR / IDS).write_text(json.dumps([str(i) for i in lesion_ids]))
    (out / MODEL_CARD).write_text(json.dumps({"contract": CONTRACT_VERSION, "encoder": encoder.to_dict()}, indent=2))


def _walk(output_dir: Path, max_bytes: int) -> None:
    """Reject symlinks, special files and unexpected entries (without following links), and oversize outputs."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(output_dir, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(output_dir).as_posix()
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise BadOutputError("symlink", f"/output/{rel} is a symbolic link; write regular files only")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise BadOutputError("output-files", f"/output/{rel} is not a regular file or folder")
            if rel not in ALLOWED:
                raise BadOutputError("output-files", f"/output/{rel} is not part of the contract (allowed: {sorted(ALLOWED)})")
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    if total > max_bytes:
        raise BadOutputError("output-size", f"the outputs hold {total} bytes, over the cap of {max_bytes}")


def _read_json(path: Path, check: str) -> Any:
    st = os.lstat(path) if os.path.lexists(path) else None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise BadOutputError(check, f"{path.name} is missing")
    if st.st_size > MAX_JSON_BYTES:
        raise BadOutputError(check, f"{path.name} has {st.st_size} bytes (at most {MAX_JSON_BYTES})")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadOutputError(check, f"{path.name} is not valid JSON: {exc}") from exc


def _model_card(output_dir: Path) -> tuple[EncoderMeta, dict[str, Any]]:
    card = _read_json(output_dir / MODEL_CARD, "model-card")
    if not isinstance(card, dict) or card.get("contract") != CONTRACT_VERSION or not isinstance(card.get("encoder"), dict):
        raise BadOutputError("model-card", f'model.json must be {{"contract": "{CONTRACT_VERSION}", "encoder": {{...}}}}')
    try:
        meta = EncoderMeta.from_dict(dict(card["encoder"]))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BadOutputError("model-card", f"model.json's encoder fields are not an encoder card: {exc}") from exc
    if not isinstance(meta.feature_dim, int) or not 1 <= meta.feature_dim <= MAX_FEATURE_DIM:
        raise BadOutputError("model-card", f"feature_dim must be a whole number in 1..{MAX_FEATURE_DIM}, got {meta.feature_dim!r}")
    return meta, card


def _vectors(path: Path, n: int, dim: int) -> np.ndarray:
    """Read the header first, so a hostile shape or dtype is refused before any allocation."""
    if not os.path.lexists(path):
        raise BadOutputError("array-format", f"embeddings/{VECTORS} is missing")
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            reader = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major, np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader(f, max_header_size=10000)
        except (ValueError, OSError) as exc:
            raise BadOutputError("array-format", f"embeddings/{VECTORS} is not a .npy array: {exc}") from exc
        if dtype.str not in ("<f4", "<f8") or fortran or len(shape) != 2:
            raise BadOutputError("array-format", f"embeddings/{VECTORS} must be a 2-D C-order little-endian float32/float64 array, got {dtype.str} shape {shape} fortran={fortran}")
        if shape[0] != n:
            raise BadOutputError("array-format", f"embeddings/{VECTORS} has {shape[0]} rows for {n} ids in {IDS}")
        if shape[1] != dim:
            raise BadOutputError("feature-size", f"embeddings/{VECTORS} has vectors of size {shape[1]}; model.json says feature_dim {dim}")
        expected = f.tell() + shape[0] * shape[1] * dtype.itemsize
        if os.fstat(f.fileno()).st_size != expected:
            raise BadOutputError("array-format", f"embeddings/{VECTORS} is {os.fstat(f.fileno()).st_size} bytes; its header promises {expected}")
        arr = np.fromfile(f, dtype=dtype, count=shape[0] * shape[1]).reshape(shape)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise BadOutputError("finite", f"{int(bad.sum())} NaN or infinite values in {len(rows)} vectors (first rows {rows[:5].tolist()})")
    return arr.astype(np.float32)


def read_outputs(output_dir: Path, expected_ids: list[str], *, max_bytes: int) -> Embeddings:
    """The organiser side: check everything under ``output_dir`` against the contract; the vectors in the
    order of ``expected_ids``. Raises :class:`BadOutputError` naming the first failed check."""
    output_dir = Path(output_dir)
    _walk(output_dir, max_bytes)
    meta, card = _model_card(output_dir)
    ids = _read_json(output_dir / EMBEDDINGS_DIR / IDS, "ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadOutputError("ids", f"{IDS} must be a JSON list of strings")
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()[:5].tolist()
        raise BadOutputError("ids", f"{IDS} repeats lesion ids, e.g. {dup}")
    vectors = _vectors(output_dir / EMBEDDINGS_DIR / VECTORS, len(ids), meta.feature_dim)
    position = {lid: k for k, lid in enumerate(ids)}
    missing = [i for i in expected_ids if i not in position]
    if missing:
        raise BadOutputError("missing-ids", f"{len(missing)} of {len(expected_ids)} lesions have no vector, e.g. {missing[:5]}")
    extra = sorted(set(ids) - set(expected_ids))
    if extra:
        raise BadOutputError("extra-ids", f"{len(extra)} ids that were not in lesions.csv, e.g. {extra[:5]}")
    return Embeddings(vectors=vectors[[position[i] for i in expected_ids]], encoder=meta, card=card)
