"""Finished (fraction, seed) runs on disk: the key of everything a run depends on, saving and finding them.

``runs/frac<f>_seed<s>.json`` holds a finished run with its key, so that a killed sweep resumes and a
later sweep with more seeds reuses the runs already done; any change of task data, features, encoder
or settings (the validation policy included) changes the key and the run is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench._version import __version__
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.types import EncoderMeta, SubsetResult, TaskMeta

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"


def array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def sweep_key(manifest: pd.DataFrame, meta: TaskMeta, emeta: EncoderMeta, data_digest: str, **settings: Any) -> str:
    """Everything a finished (fraction, seed) run depends on besides its subset: the task (meta and the
    manifest's ids, splits and labels), the encoder, its features or patches, the probe settings and
    the lesionbench version."""
    cols = [c for c in ("lesion_id", "patient_id", "split", *meta.label_columns) if c in manifest.columns]
    rows = pd.util.hash_pandas_object(manifest[cols].astype(str), index=False).to_numpy()
    payload = {
        "task": meta.to_dict(),
        "manifest": array_digest(rows),
        "encoder": emeta.fingerprint(),
        "data": data_digest,
        "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in settings.items()},
        "lesionbench": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def finished_runs(rdir: Path, key: str) -> dict[str, tuple[SubsetResult, int]]:
    """Runs saved by an earlier sweep with the same key whose prediction and subset files are still there."""
    found: dict[str, tuple[SubsetResult, int]] = {}
    for path in sorted((rdir / RUNS_DIR).glob("*.json")):
        try:
            d = json.loads(path.read_text())
            if d.get("key") != key:
                continue
            run = SubsetResult.from_dict(d["run"])
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: the run is redone
            logger.warning("Ignoring unreadable saved run %s (%s); it is recomputed.", path, exc)
            continue
        if (rdir / run.predictions_path).is_file() and (rdir / run.subset_path).is_file():
            found[path.stem] = (run, int(d.get("feature_dim", 0)))
    return found


def save_finished(rdir: Path, name: str, key: str, run: SubsetResult, feature_dim: int) -> None:
    record = json.dumps({"key": key, "feature_dim": feature_dim, "run": run.to_dict()}, default=json_default)
    atomic_write(rdir / RUNS_DIR / f"{name}.json", lambda tmp: tmp.write_text(record))


def drop_stale_record(rdir: Path, name: str, key: str | None) -> None:
    """Remove the saved record of run ``name`` before its prediction files are replaced (saved anew once
    done), unless it is a record of this very sweep (``key``): Dask reruns a run whose finished result was
    lost with its worker, and that rerun must not remove the record the client saved meanwhile (the files it
    rewrites are the same). ``key=None`` removes any record."""
    path = rdir / RUNS_DIR / f"{name}.json"
    if key is not None:
        try:
            if json.loads(path.read_text()).get("key") == key:
                return
        except (OSError, ValueError, AttributeError):  # none, or not a record of ours: removed below
            pass
    path.unlink(missing_ok=True)


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
