"""Feature extraction on Dask workers, partitioned by image, through the shared feature cache.

The client reads the cache once, groups the missing lesions by image (a volume's lesions travel
together) and submits one task per few consecutive images (whole images, about one batch of lesions). A worker builds the encoder once (cached per worker process,
keyed by :meth:`EncoderMeta.fingerprint`), cuts and encodes those images' lesions with the same functions
as the local path (:func:`~lesionbench.benchmark.encoders.features.cut_patches`, ``encode_lesions``), and writes
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

from lesionbench.benchmark.encoders import features as F
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


def pin_torch_threads(want: int | None = None) -> None:
    """Give torch, in the Dask thread running this task, ``want`` threads (default: all usable cores) shared
    by the worker's task threads. torch's CPU thread count is OpenMP's, which is per OS thread: the count an
    encoder set when it was built (in another thread) does not reach the thread a task runs in, where Dask's
    ``OMP_NUM_THREADS=1`` leaves one (measured: a ``local:1`` worker ran convolutions at one thread's speed
    while ``torch.get_num_threads()`` said 2). No-op where torch is not imported."""
    import sys

    from lesionbench.benchmark.host import usable_cores

    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        from distributed import get_worker

        slots = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):  # not on a Dask worker
        slots = 1
    torch.set_num_threads(max(1, min(int(want or usable_cores()), usable_cores() // max(1, slots))))


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


def extract_images(items: list[tuple[str, list[dict[str, Any]], list[str]]], *, fingerprint: str, source: Any, cache_root: str, batch_size: int) -> list[dict[int, str]]:
    """On a worker: encode the lesions of a few images (``(path, records, keys)`` each, whole images) in
    batches of ``batch_size`` across them, and write one shard. Returns each image's failures (position
    in its ``records`` -> reason); the features travel through the cache, not back to the client."""
    encoder = worker_encoder(fingerprint, source)
    pin_torch_threads(getattr(encoder, "threads", None))
    meta: EncoderMeta = encoder.meta
    d = int(meta.feature_dim)
    per: list[list[Any]] = []
    if hasattr(encoder, "encode_lesions"):
        for path, records, _ in items:
            res = F._encode_image_lesions(path, records, encoder)
            per.append([res] * len(records) if isinstance(res, str) else list(res) if isinstance(res, list) else list(np.asarray(res)))
    else:
        per = [list(F.cut_patches(path, records, meta.patch)) for path, records, _ in items]
        ok = [(i, j) for i, xs in enumerate(per) for j, x in enumerate(xs) if not isinstance(x, str)]
        for start in range(0, len(ok), batch_size):  # batches span images, as on the local path
            idx = ok[start : start + batch_size]
            out = np.asarray(encoder.encode(np.stack([per[i][j] for i, j in idx])), dtype=np.float32)
            if out.shape != (len(idx), d):
                raise LesionbenchError(f"Encoder {meta.name!r} returned features of shape {out.shape}; expected ({len(idx)}, {d}).")
            for (i, j), f in zip(idx, out, strict=True):
                per[i][j] = f
    failures: list[dict[int, str]] = []
    good_keys: list[str] = []
    good: list[np.ndarray] = []
    for (_, _, keys), xs in zip(items, per, strict=True):
        bad: dict[int, str] = {}
        for j, x in enumerate(xs):
            if isinstance(x, str):
                bad[j] = x
            elif not np.isfinite(x).all():  # never cached: a fixed encoder recomputes them
                bad[j] = f"{F.NON_FINITE}: {int((~np.isfinite(x)).sum())} of {d} values from encoder {meta.name!r} (not cached)"
            else:
                good_keys.append(keys[j])
                good.append(x)
        failures.append(bad)
    if good:
        put_once(F.FeatureCache(Path(cache_root), meta), good_keys, np.stack(good))
    return failures


def partition(groups: list[tuple[str, list[int]]], lesions_per_task: int) -> list[list[tuple[str, list[int]]]]:
    """Consecutive whole images, at least ``lesions_per_task`` lesions per part (the last may hold fewer):
    a forward pass on a full batch costs little more than on one lesion."""
    parts: list[list[tuple[str, list[int]]]] = [[]]
    n = 0
    for g in groups:
        if n >= lesions_per_task:
            parts.append([])
            n = 0
        parts[-1].append(g)
        n += len(g[1])
    return [p for p in parts if p]


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
    :func:`~lesionbench.benchmark.encoders.features.extract_features`'s.

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
        futures = {}
        for part in partition(groups, bs):
            items = [(path, F._records(df, rows), [keys[r] for r in rows]) for path, rows in part]
            name = shard_name([k for _, _, ks in items for k in ks])[6:-4]
            futures[client.submit(extract_images, items, key=f"extract-{meta.name}-{name}", pure=False, **common)] = part
        with tqdm(total=len(todo), desc=f"features {meta.name} (dask)", unit="lesion", disable=not progress) as bar:
            for fut in as_completed(futures):
                part = futures[fut]
                for (_, rows), bad in zip(part, fut.result(), strict=True):
                    failures.update({rows[j]: why for j, why in bad.items()})
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


__all__ = ["extract_features_dask", "extract_images", "partition", "pin_torch_threads", "put_once", "shard_name", "worker_encoder"]
