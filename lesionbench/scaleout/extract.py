"""Feature extraction on Dask workers, partitioned by image, through the shared feature cache.

The client reads the cache once, groups the missing lesions by image (a volume's lesions travel
together) and submits one task per image. A worker builds the encoder once (cached per worker process,
keyed by :meth:`EncoderMeta.fingerprint`), cuts and encodes that image's lesions with the same functions
as the local path (:func:`~lesionbench.benchmark.features.cut_patches`, ``encode_lesions``), and writes
one shard named by the digest of its lesion keys, atomically. A task that is retried (its worker was
killed) or run twice writes the same name with the same content, so each shard exists once whatever
happens. The client then assembles the features from the cache, in manifest row order.

The cache folder must be one every worker and the client see (a shared filesystem on a cluster).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark import features as F
from lesionbench.benchmark.errors import ConfigurationError, LesionbenchError
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.types import EncoderMeta

logger = logging.getLogger(__name__)

# one encoder per worker process and fingerprint: building a foundation model takes seconds and GBs
_ENCODERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def worker_encoder(fingerprint: str, source: Any) -> Any:
    """The encoder of ``fingerprint`` in this process: ``source`` (an encoder, or a callable that builds
    one) the first time, the same object afterwards."""
    with _LOCK:
        enc = _ENCODERS.get(fingerprint)
        if enc is None:
            enc = source if hasattr(source, "meta") else source()
            if enc.meta.fingerprint() != fingerprint:
                raise LesionbenchError(f"The encoder built on a worker has fingerprint {enc.meta.fingerprint()}, the client's {fingerprint}: "
                                       "the workers run another lesionbench or weights file than the client; install the same on both.")  # fmt: skip
            _ENCODERS[fingerprint] = enc
        return enc


def shard_name(keys: Sequence[str]) -> str:
    """The shard of these lesion keys: the same keys, the same file (a retried task rewrites it, never adds one)."""
    return f"shard-{hashlib.sha256(chr(10).join(sorted(keys)).encode()).hexdigest()[:32]}.npz"


def put_once(store: F.FeatureCache, keys: Sequence[str], feats: np.ndarray) -> Path:
    """Write a content-keyed shard, atomically; an existing one (same keys, same encoder) is kept."""
    final = store.dir / shard_name(keys)
    if final.exists():
        return final
    arr = np.ascontiguousarray(feats, dtype=np.float32)
    return atomic_write(final, lambda tmp: np.savez(tmp, keys=np.asarray(list(keys), dtype=str), features=arr))


def extract_image(path: str, records: list[dict[str, Any]], keys: list[str], *, fingerprint: str, source: Any, cache_root: str, batch_size: int) -> dict[int, str]:
    """On a worker: encode one image's lesions and write their shard. Returns the failures (position in
    ``records`` -> reason); the features travel through the cache, not back to the client."""
    encoder = worker_encoder(fingerprint, source)
    meta: EncoderMeta = encoder.meta
    d = int(meta.feature_dim)
    failures: dict[int, str] = {}
    if hasattr(encoder, "encode_lesions"):
        res = F._encode_image_lesions(path, records, encoder)
        if isinstance(res, str):
            return dict.fromkeys(range(len(records)), res)
        per = list(res) if isinstance(res, list) else list(np.asarray(res))
    else:
        per = list(F.cut_patches(path, records, meta.patch))
        ok = [i for i, x in enumerate(per) if not isinstance(x, str)]
        for start in range(0, len(ok), batch_size):
            idx = ok[start : start + batch_size]
            out = np.asarray(encoder.encode(np.stack([per[i] for i in idx])), dtype=np.float32)
            if out.shape != (len(idx), d):
                raise LesionbenchError(f"Encoder {meta.name!r} returned features of shape {out.shape}; expected ({len(idx)}, {d}).")
            for i, f in zip(idx, out, strict=True):
                per[i] = f
    good: list[int] = []
    for i, x in enumerate(per):
        if isinstance(x, str):
            failures[i] = x
        elif not np.isfinite(x).all():  # never cached: a fixed encoder recomputes them
            failures[i] = f"{F.NON_FINITE}: {int((~np.isfinite(x)).sum())} of {d} values from encoder {meta.name!r} (not cached)"
        else:
            good.append(i)
    if good:
        put_once(F.FeatureCache(Path(cache_root), meta), [keys[i] for i in good], np.stack([per[i] for i in good]))
    return failures


def extract_features_dask(
    manifest: pd.DataFrame,
    encoder: Any,
    client: Any,
    *,
    cache_dir: Path | None = None,
    build: Callable[[], Any] | None = None,
    batch_size: int | None = None,
    failed: dict[int, str] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Features (n, feature_dim) of ``manifest`` computed on ``client``'s workers, equal to
    :func:`~lesionbench.benchmark.features.extract_features`'s.

    ``encoder`` is the client's encoder (its metadata keys the cache). Workers use ``build()`` (a
    picklable callable, e.g. ``functools.partial(get_encoder, "fmcib", device="cuda")``) to build their
    own copy, else they receive ``encoder`` itself (scattered: sent once to each worker). Failures are
    raised together at the end (:class:`~lesionbench.benchmark.errors.ImageError`), or put in ``failed``
    with NaN features, as the local path does. Trainable encoders have no cached features: refused.
    """
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    from lesionbench.benchmark.paths import cache_root

    meta: EncoderMeta = encoder.meta
    if meta.trainable:
        raise ConfigurationError(f"Encoder {meta.name!r} is trainable: its features depend on each run's training set and are not cached; "
                                 "its runs go to the Dask workers as sweep tasks instead (lesionbench run --dask).")  # fmt: skip
    if not hasattr(encoder, "encode_lesions"):
        F.check_spec(meta.patch)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    df = F._prepare(manifest)
    keys, failures = F.lesion_keys(df, with_mask=F._feature_depends_on_mask(encoder))
    store = F.FeatureCache(root, meta)
    known = store.load()
    todo = [r for r, k in enumerate(keys) if k is not None and k not in known]
    groups = F._group_rows(df, todo)
    logger.info("%s: %d of %d lesions in the feature cache; %d image(s) go to the Dask workers", meta.name, len(df) - len(todo) - len(failures), len(df), len(groups))
    if groups:
        source = build if build is not None else client.scatter(encoder, broadcast=True, hash=False)
        bs = int(batch_size or getattr(encoder, "batch_size", 0) or 8)
        common = {"fingerprint": meta.fingerprint(), "source": source, "cache_root": str(root), "batch_size": bs}
        futures = {
            client.submit(extract_image, path, F._records(df, rows), [keys[r] for r in rows], key=f"extract-{meta.name}-{shard_name([keys[r] for r in rows])[6:-4]}",
                          pure=False, **common): rows
            for path, rows in groups
        }  # fmt: skip
        with tqdm(total=len(todo), desc=f"features {meta.name} (dask)", unit="lesion", disable=not progress) as bar:
            for fut in as_completed(futures):
                rows = futures[fut]
                failures.update({rows[i]: why for i, why in fut.result().items()})
                bar.update(len(rows))
        known = store.load()
    n, d = len(df), int(meta.feature_dim)
    out = np.zeros((n, d), dtype=np.float32)
    filled = np.zeros(n, dtype=bool)
    for r, k in enumerate(keys):
        if k is not None and r not in failures and k in known:
            out[r] = known[k]
            filled[r] = True
    if failed is None:
        F._raise_failures(df, failures, int(filled.sum()), "features", cached=True)
    else:
        failed.update(failures)
        out[sorted(failures)] = np.nan
        filled[sorted(failures)] = True
    if not filled.all():  # a shard vanished between the workers' write and this read (another client compacting)
        raise LesionbenchError(f"{int((~filled).sum())} lesions of {meta.name!r} are missing from the feature cache {store.dir} after extraction; re-run.")
    return out


__all__ = ["extract_features_dask", "extract_image", "put_once", "shard_name", "worker_encoder"]
