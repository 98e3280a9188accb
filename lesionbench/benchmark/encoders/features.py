"""Feature extraction through a resumable on-disk cache, and patch loading.

Two encoder styles are supported:

(a) **patch encoders** define ``encode(patches)``; the harness cuts patches per ``encoder.meta.patch``
    (:func:`load_patches`), reading each image once for all its lesions;
(b) **image encoders** define ``encode_lesions(image: SimpleITK.Image, lesions: DataFrame)`` and get the
    whole image with its lesion rows (``coordX/Y/Z``, ``mask_path``, ``diameter_mm``, ``lesion_id``);
    radiomics works this way.

Features are *index-addressed*: an (n, d) array is preallocated in manifest row order and filled per
lesion, from the cache first, then by computing what is missing, image by image. Every computed batch is
written to the cache at once (one small ``.npz`` shard, written atomically), so a run that is killed
midway resumes with only the missing lesions. The cache folder is keyed by the encoder's name and
:meth:`EncoderMeta.fingerprint` (name, version, weights digest, patch recipe, settings); each lesion by
its image file's identity (resolved path, size, modification time, inode, change time), its seed point, and, where the
features depend on them, its mask file's identity, mask label and diameter. Changing any of these misses
(:mod:`~lesionbench.benchmark.encoders.feature_cache`).

Lesions that fail (missing or unreadable image, seed outside the image) are collected; every other
lesion is computed and cached first, then one :class:`ImageError` lists every failure with its row,
``lesion_id``, file and reason. Features an encoder returns with NaN or infinite values are never cached
and fail their lesions the same way (a :class:`FeatureError`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.benchmark.errors import ConfigurationError, ImageError, LesionbenchError
from lesionbench.benchmark.encoders.feature_cache import COORDS, FeatureCache, _feature_depends_on_mask, _is_missing, lesion_keys  # noqa: F401 (public API)
from lesionbench.benchmark.host import atomic_write
from lesionbench.benchmark.patches.cutting import check_spec, cut_patches  # noqa: F401 (public API)
from lesionbench.benchmark.data.reading import PREFETCH_BYTES, ImagePrefetcher, _image_bytes, file_identity, in_order_on_a_thread, read_image  # noqa: F401 (public API)
from lesionbench.benchmark.types import EncoderMeta, PatchSpec

logger = logging.getLogger(__name__)

#: Failed lesions listed in full in the final error; the rest are counted.
MAX_ERRORS_LISTED = 50
#: The reason given for a lesion whose features came back NaN or infinite.
NON_FINITE = "NaN or infinite features"


class FeatureError(LesionbenchError, ValueError):
    """Features an encoder returned that cannot be used (NaN or infinite values); they are never cached."""


def _group_rows(df: pd.DataFrame, rows: Sequence[int]) -> list[tuple[str, list[int]]]:
    """Rows grouped by image, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    paths = df["image_path"].astype(str).to_numpy()
    for r in rows:
        groups.setdefault(paths[r], []).append(int(r))
    return list(groups.items())


def _records(df: pd.DataFrame, rows: Sequence[int]) -> list[dict[str, Any]]:
    return df.iloc[list(rows)].to_dict("records")


def _iter_images(
    df: pd.DataFrame,
    groups: list[tuple[str, list[int]]],
    work: Callable[..., Any],
    extra: tuple,
    workers: int,
    images: ImagePrefetcher | None = None,
    *,
    overlap: bool = False,
) -> Iterator[tuple[str, list[int], Any]]:
    """Run ``work(path, records, *extra, images=...)`` per image, in order. With ``workers <= 1`` images
    are read ahead on background threads (``images``, or a prefetcher made here) and, with ``overlap``,
    ``work`` itself runs on a thread of its own one image ahead (cutting patches while the caller
    runs the encoder); with ``workers > 1`` in a process pool, with at most ``2 * workers`` images in
    flight so memory stays bounded."""
    if workers <= 1:
        paths = [p for p, _ in groups]
        own = images is None
        images = ImagePrefetcher(paths) if own else images
        try:
            if not own:
                images.retain(paths)
            if overlap:
                jobs = (((path, rows), functools.partial(work, path, _records(df, rows), *extra, images=images)) for path, rows in groups)
                with contextlib.closing(in_order_on_a_thread(jobs)) as done:
                    for (path, rows), res in done:
                        yield path, rows, res
            else:
                for path, rows in groups:
                    yield path, rows, work(path, _records(df, rows), *extra, images=images)
        finally:
            if own:
                images.close()
        return
    if images is not None:  # the pool's workers read for themselves
        images.retain([])
    import multiprocessing

    # spawn: forking a process that has run torch's thread pools can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: list[tuple[str, list[int], Future]] = []
        it = iter(groups)
        for path, rows in it:
            pending.append((path, rows, pool.submit(work, path, _records(df, rows), *extra)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            path, rows, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], nxt[1], pool.submit(work, nxt[0], _records(df, nxt[1]), *extra)))
            yield path, rows, fut.result()


def _prepare(manifest: pd.DataFrame) -> pd.DataFrame:
    from lesionbench.benchmark.data.manifest import column_hints

    missing = [c for c in ("image_path", *COORDS) if c not in manifest.columns]
    if missing:
        raise ConfigurationError(
            f"{manifest.attrs.get('source', 'The lesion table')} lacks column(s) {missing}; found {list(manifest.columns)}. It needs image_path and "
            "the seed point coordX, coordY, coordZ (LPS mm)." + column_hints(missing, manifest.columns)
        )
    df = manifest.reset_index(drop=True).copy()
    for c in COORDS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def _lesion_name(df: pd.DataFrame, row: int) -> str:
    lid = df["lesion_id"].iloc[row] if "lesion_id" in df.columns else None
    return f"row {row + 1}" + (f" (lesion_id {lid})" if not _is_missing(lid) else "")


def _raise_failures(df: pd.DataFrame, failures: dict[int, str], done: int, what: str, cached: bool = False) -> None:
    if not failures:
        return
    rows = sorted(failures)
    lines = [
        f"  - {_lesion_name(df, r)}, file {df['image_path'].iloc[r]}: {failures[r]}" for r in rows[:MAX_ERRORS_LISTED]
    ]
    if len(rows) > MAX_ERRORS_LISTED:
        lines.append(f"  ... and {len(rows) - MAX_ERRORS_LISTED} more")
    head = f"{len(rows)} of {len(df)} lesions failed ({what} for the other {done} are done{' and cached' if cached else ''}; "
    non_finite = sum(1 for r in rows if failures[r].startswith(NON_FINITE))
    if non_finite:
        raise FeatureError(
            head + f"{non_finite} got NaN or infinite features: the encoder's weights are damaged or it diverges on these "
            "patches, fix the encoder or its checkpoint; fix the other rows and re-run):\n" + "\n".join(lines)
        )
    raise ImageError(head + "fix these rows and re-run):\n" + "\n".join(lines))


def _bad_coordinates(df: pd.DataFrame) -> dict[int, str]:
    vals = df[list(COORDS)].to_numpy(dtype=float)
    return {int(r): "seed coordinates are not finite numbers" for r in np.flatnonzero(~np.isfinite(vals).all(axis=1))}


def load_patches(
    manifest: pd.DataFrame, spec: PatchSpec, *, progress: bool = True, workers: int = 1, images: ImagePrefetcher | None = None
) -> np.ndarray:
    """Patches of every lesion, (n, C, D, H, W) float32 in row order, each image read once.

    Channel 0 is the FMCIB-preprocessed CT (``spec.method == "fmcib"``); with ``spec.with_mask`` channel
    1 is the lesion mask: from ``mask_path`` (nearest neighbour; ``mask_label`` picks one label, else the
    label under the seed), else a ball of ``diameter_mm`` around the seed, else a ball of
    :data:`~lesionbench.benchmark.data.geometry.DEFAULT_LESION_DIAMETER_MM`.
    Raises one :class:`ImageError` listing every lesion that failed.
    """
    from tqdm.auto import tqdm

    check_spec(spec)
    df = _prepare(manifest)
    n, c = len(df), 2 if spec.with_mask else 1
    out = np.zeros((n, c, *(int(s) for s in spec.size)), dtype=np.float32)
    failures = _bad_coordinates(df)
    rows = [r for r in range(n) if r not in failures]
    done = 0
    with tqdm(total=n, desc="patches", unit="lesion", disable=not progress) as bar:
        with contextlib.closing(_iter_images(df, _group_rows(df, rows), cut_patches, (spec,), workers, images, overlap=True)) as per_image:
            for _, grows, results in per_image:
                for r, res in zip(grows, results, strict=True):
                    if isinstance(res, str):
                        failures[r] = res
                    else:
                        out[r] = res
                        done += 1
                bar.update(len(grows))
    _raise_failures(df, failures, done, "patches")
    return out


def _encode_image_lesions(path: str, records: list[dict[str, Any]], encoder: Any, *, images: ImagePrefetcher | None = None) -> np.ndarray | str | list[np.ndarray | str]:
    """Style (b): one image, all its lesions; an error message instead when the image cannot be used.

    When the image reads but ``encode_lesions`` refuses the group (one lesion's seed or mask is bad),
    each lesion is retried alone so that only the bad ones fail, each with its own reason (a list).
    """
    try:
        image = images.get(path) if images is not None else read_image(path)
    except ImageError as exc:
        return str(exc)
    try:
        feats = np.asarray(encoder.encode_lesions(image, pd.DataFrame.from_records(records)), dtype=np.float32)
    except ImageError as exc:
        if len(records) == 1:
            return str(exc)
        return [_encode_one(image, rec, encoder, path) for rec in records]
    if feats.shape != (len(records), encoder.meta.feature_dim):
        raise LesionbenchError(
            f"Encoder {encoder.meta.name!r}.encode_lesions returned shape {feats.shape} for {len(records)} lesions of {path}; "
            f"expected ({len(records)}, {encoder.meta.feature_dim})."
        )
    return feats


def _encode_one(image: Any, record: dict[str, Any], encoder: Any, path: str) -> np.ndarray | str:
    try:
        feats = np.asarray(encoder.encode_lesions(image, pd.DataFrame.from_records([record])), dtype=np.float32)
    except ImageError as exc:
        return str(exc)
    if feats.shape != (1, encoder.meta.feature_dim):
        raise LesionbenchError(f"Encoder {encoder.meta.name!r}.encode_lesions returned shape {feats.shape} for 1 lesion of {path}; expected (1, {encoder.meta.feature_dim}).")
    return feats[0]


def extract_features(
    manifest: pd.DataFrame,
    encoder: Any,
    *,
    cache_dir: Path | None = None,
    batch_size: int | None = None,
    workers: int = 1,
    progress: bool = True,
    cache: bool = True,
    images: ImagePrefetcher | None = None,
    failed: dict[int, str] | None = None,
) -> np.ndarray:
    """Features (n, feature_dim) float32 of every lesion of ``manifest``, in row order.

    ``cache_dir`` defaults to ``$LESIONBENCH_CACHE/features``; ``cache=False`` (and every trainable encoder)
    bypasses the cache. ``batch_size`` patches are encoded per call (default: the encoder's
    ``batch_size`` attribute, else 8); each encoded batch is cached at once. ``workers > 1`` cuts patches
    (style a) or runs ``encode_lesions`` (style b) for several images in parallel processes; otherwise the
    next images are read on background threads and (style a) their patches cut on another while the
    encoder runs, so reading, resampling and the forward pass overlap (``images``: a prefetcher started
    earlier by the caller, e.g. before building the encoder; it is narrowed to the images still needed).
    Failed lesions are reported at the end in one :class:`ImageError`, after all others are cached (a
    :class:`FeatureError` when the encoder returned NaN or infinite features for some; those are never cached);
    with a ``failed`` dict given instead, their reasons are put there (row -> reason) and their features
    are NaN.
    """
    from tqdm.auto import tqdm

    from lesionbench.benchmark.paths import cache_root

    meta: EncoderMeta = encoder.meta
    image_style = hasattr(encoder, "encode_lesions")
    if not image_style:
        check_spec(meta.patch)
    df = _prepare(manifest)
    n, d = len(df), int(meta.feature_dim)
    out = np.zeros((n, d), dtype=np.float32)
    filled = np.zeros(n, dtype=bool)
    keys, failures = lesion_keys(df, with_mask=_feature_depends_on_mask(encoder))

    store: FeatureCache | None = None
    if cache and not meta.trainable:
        store = FeatureCache(Path(cache_dir) if cache_dir is not None else cache_root() / "features", meta)
        known = store.load()
        for r, k in enumerate(keys):
            if k is not None and k in known:
                out[r] = known[k]
                filled[r] = True
        logger.info("%s: %d of %d lesions found in the feature cache %s", meta.name, int(filled.sum()), n, store.dir)
    todo = [r for r in range(n) if not filled[r] and r not in failures]
    bs = int(batch_size or getattr(encoder, "batch_size", 0) or 8)
    if bs < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {bs}.")

    def finish(rows: list[int], feats: np.ndarray) -> None:
        feats = np.asarray(feats, dtype=np.float32)
        if feats.shape != (len(rows), d):
            raise LesionbenchError(f"Encoder {meta.name!r} returned features of shape {feats.shape}; expected ({len(rows)}, {d}).")
        n_bad = (~np.isfinite(feats)).sum(axis=1)
        for r, k in zip(rows, n_bad.tolist(), strict=True):
            if k:  # never cached: a re-run with a fixed encoder recomputes them
                failures[r] = f"{NON_FINITE}: {k} of {d} values from encoder {meta.name!r} (not cached)"
        rows, feats = [r for r, k in zip(rows, n_bad.tolist(), strict=True) if not k], feats[n_bad == 0]
        out[rows] = feats
        filled[rows] = True
        if store is not None and rows:
            store.put([keys[r] for r in rows], feats)  # type: ignore[misc]

    groups = _group_rows(df, todo)
    with tqdm(total=n, initial=int(filled.sum()), desc=f"features {meta.name}", unit="lesion", disable=not progress) as bar:
        if image_style:
            # closing(): a failure midway (or Ctrl-C) stops the background reader at once
            with contextlib.closing(_iter_images(df, groups, _encode_image_lesions, (encoder,), workers, images)) as per_image:
                for _, rows, res in per_image:
                    if isinstance(res, str):
                        failures.update({r: res for r in rows})
                    elif isinstance(res, list):  # the group failed: per-lesion results
                        failures.update({r: x for r, x in zip(rows, res, strict=True) if isinstance(x, str)})
                        good = [(r, x) for r, x in zip(rows, res, strict=True) if not isinstance(x, str)]
                        if good:
                            finish([r for r, _ in good], np.stack([x for _, x in good]))
                    else:
                        finish(rows, res)
                    bar.update(len(rows))
        else:
            buf_rows: list[int] = []
            buf: list[np.ndarray] = []
            with contextlib.closing(_iter_images(df, groups, cut_patches, (meta.patch,), workers, images, overlap=True)) as per_image:
                for _, rows, results in per_image:
                    for r, res in zip(rows, results, strict=True):
                        if isinstance(res, str):
                            failures[r] = res
                            bar.update(1)
                        else:
                            buf_rows.append(r)
                            buf.append(res)
                    while len(buf_rows) >= bs:
                        finish(buf_rows[:bs], encoder.encode(np.stack(buf[:bs])))
                        bar.update(bs)
                        buf_rows, buf = buf_rows[bs:], buf[bs:]
            if buf_rows:
                finish(buf_rows, encoder.encode(np.stack(buf)))
                bar.update(len(buf_rows))
    if failed is None:
        _raise_failures(df, failures, int(filled.sum()), "features", cached=store is not None)
    else:
        failed.update(failures)
        out[sorted(failures)] = np.nan
        filled[sorted(failures)] = True
    if not filled.all():  # index-addressed: every row must have been filled exactly once
        raise LesionbenchError(f"internal: {int((~filled).sum())} lesions were neither computed nor reported as failed.")
    return out


def check_output_columns(table: pd.DataFrame, prefix: str = "pred_") -> None:
    """Raise when ``table`` already has feature columns ``<prefix><k>`` (e.g. an output fed back as input)."""
    clash = [str(c) for c in table.columns if str(c).startswith(prefix) and str(c)[len(prefix) :].isdigit()]
    if clash:
        raise ConfigurationError(
            f"The input table already has feature column(s) {clash[:5]}{' ...' if len(clash) > 5 else ''}: the output "
            f"would hold them twice. Drop the {prefix}* columns (or extract from the original seeds table)."
        )


def feature_table(table: pd.DataFrame, features: np.ndarray, *, prefix: str = "pred_") -> pd.DataFrame:
    """``table``'s columns followed by ``<prefix>0 .. <prefix>{d-1}`` (the reference ``get_features`` layout)."""
    check_output_columns(table, prefix)
    cols = pd.DataFrame(features, columns=[f"{prefix}{i}" for i in range(features.shape[1])], index=table.index)
    return pd.concat([table, cols], axis=1)


def write_feature_table(table: pd.DataFrame, features: np.ndarray, path: Path, *, prefix: str = "pred_") -> None:
    """Write :func:`feature_table` to ``path`` (``.csv``, or ``.parquet``/``.pq``), atomically (a killed run
    leaves the old file or none, never half a table).

    Parquet is assembled column by column in pyarrow: pandas' own conversion of a frame with thousands of
    float columns costs ~0.2 s more and gives the same file content."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = feature_table(table, features, prefix=prefix)
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    feats = np.asarray(features, dtype=np.float32)
    check_output_columns(table, prefix)
    head = pa.Table.from_pandas(table.reset_index(drop=True), preserve_index=False)
    cols = list(head.columns) + [pa.array(feats[:, i]) for i in range(feats.shape[1])]
    names = list(head.column_names) + [f"{prefix}{i}" for i in range(feats.shape[1])]
    arrow = pa.Table.from_arrays(cols, names=names, metadata=head.schema.metadata)
    atomic_write(path, lambda tmp: pq.write_table(arrow, tmp))
