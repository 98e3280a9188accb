"""``lesionbench extract``: lesion features with an encoder (a drop-in for fmcib.run.get_features)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lesionbench.cli._common import add_cache_dir, add_data_dir, add_deprecated_alias, add_encoder_options, add_parallel_options, dask_client, encoder_builder, get_encoder, whole_number

logger = logging.getLogger("lesionbench")


def add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="Extract lesion features with an encoder (a drop-in for fmcib.run.get_features).",
        description="Extract lesion features. Input: a CSV/Parquet with image_path, coordX, coordY, coordZ (LPS mm; "
        "other columns pass through; relative image paths resolve against the table's folder), or --task NAME. "
        "Output: the input columns, then the feature columns pred_0 .. pred_{d-1}. Features are cached on disk "
        "(resumable: a re-run computes only what is missing).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("table", nargs="?", type=Path, help="lesion table (.csv or .parquet)")
    src.add_argument("--task", help="extract a registered task's manifest instead of a table")
    add_data_dir(p, help="with --task: the task's data folder")
    add_encoder_options(p, default="fmcib", help="registered encoder name (default: fmcib)", weights_help="weights file for the encoder (fmcib: model_weights.torch)")
    p.add_argument("--batch-size", type=whole_number(1), help="patches per forward pass")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (faster; features move by ~0.4%%)")
    add_parallel_options(p, workers="processes cutting patches / reading images in parallel")
    add_cache_dir(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--skip-failed", action="store_true",
                   help="write the output even when some lesions fail (seed outside its image, unreadable file): their "
                   "features are empty (NaN) and FILE.errors.csv says why; by default nothing is written until they are fixed")  # fmt: skip
    # -o/--out, as every command names what it writes (but the results folder, --results); --output still works
    p.add_argument("-o", "--out", type=Path, metavar="FILE", help="output table, .csv or .parquet (required)")
    add_deprecated_alias(p, "--output", "-o/--out", dest="out", type=Path)
    p.set_defaults(func=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.encoders.features import ImagePrefetcher, _prepare, check_output_columns, extract_features, write_feature_table
    from lesionbench.cli._errors import writable_output
    from lesionbench.benchmark.data.manifest import read_table, resolve_paths
    from lesionbench.benchmark.encoders.plugins import get_task

    if args.out is None:  # not required=True in argparse: the deprecated --output gives it too
        raise ConfigurationError("lesionbench extract needs -o/--out FILE: the output table (.csv or .parquet).")
    out_suffix = args.out.suffix.lower()
    if out_suffix not in (".csv", ".parquet", ".pq"):
        raise ConfigurationError(f"Output {args.out} must end in .csv or .parquet.")
    if args.task:
        task = get_task(args.task, data_dir=args.data_dir)
        table = task.manifest()
        lesions = table
    else:
        path: Path = args.table
        table = read_table(path)
        # relative paths resolve against the table's folder; the output keeps the input columns as given
        lesions = resolve_paths(table, path.parent.resolve())
    _prepare(lesions)  # image_path and the seed columns: one error naming the table, before any work
    check_output_columns(table)
    writable_output(args.out)  # a read-only folder, a file on the way: said now, not after the extraction
    # Read the first images while the encoder is built (torch import, weights): both take seconds and
    # SimpleITK reads without holding the GIL. Up to PREFETCH_BYTES of pixels wait at start-up, one image
    # afterwards; images whose lesions turn out to be cached are dropped from the plan by extract_features.
    on_dask = args.dask is not None or args.dask_cluster is not None
    if on_dask and args.no_cache:
        raise ConfigurationError("--dask/--dask-cluster workers hand their features over through the feature cache; leave out --no-cache.")
    images = ImagePrefetcher(lesions["image_path"].astype(str)) if args.workers <= 1 and not on_dask else None
    failed: dict[int, str] | None = {} if args.skip_failed else None
    try:
        encoder = get_encoder(args, device=args.device, bf16=args.bf16)
        if args.batch_size and hasattr(encoder, "batch_size"):
            encoder.batch_size = args.batch_size  # patches per forward pass
        if on_dask:
            from lesionbench.scaleout.extract import extract_features_dask

            with dask_client(args) as client:
                build = encoder_builder(args, device=args.device, bf16=args.bf16)
                feats = extract_features_dask(lesions, encoder, client, cache_dir=args.cache_dir, build=build, batch_size=args.batch_size,
                                              failed=failed, progress=not args.quiet)  # fmt: skip
        else:
            feats = extract_features(
                lesions,
                encoder,
                cache_dir=args.cache_dir,
                batch_size=args.batch_size,
                workers=args.workers,
                cache=not args.no_cache,
                progress=not args.quiet,
                images=images,
                failed=failed,
            )
    finally:
        if images is not None:
            images.close()
    write_feature_table(table.reset_index(drop=True), feats, args.out)
    sys.stdout.write(f"{args.out}: {len(feats)} lesions x {feats.shape[1]} features ({encoder.meta.name})\n")
    errors = args.out.with_name(args.out.name + ".errors.csv")
    if failed:
        import pandas as pd

        ids = table["lesion_id"].reset_index(drop=True) if "lesion_id" in table.columns else None
        from lesionbench.benchmark.host import atomic_write

        rows = sorted(failed)
        report = pd.DataFrame({
            "row": [r + 1 for r in rows],
            "lesion_id": [ids[r] for r in rows] if ids is not None else "",
            "image_path": [lesions["image_path"].iloc[r] for r in rows],
            "reason": [failed[r] for r in rows],
        })  # fmt: skip
        atomic_write(errors, lambda tmp: report.to_csv(tmp, index=False))
        logger.warning("%d of %d lesions failed; their features are NaN in %s. Why, row by row: %s", len(rows), len(feats), args.out, errors)
    elif errors.exists():
        errors.unlink()  # from an earlier run of the same output: nothing failed this time
    return 0
