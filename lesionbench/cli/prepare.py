"""``lesionbench download`` and ``lesionbench prepare``: public raw data in, a task's volumes and manifest out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionbench.cli._common import TASK_HELP, whole_number


def add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="Build a task's volumes and manifest from the public raw data.",
        description="Build a task's volumes and manifest from the public raw data. Resumable and idempotent: "
        "files already converted are kept. Task-specific options are passed to the task's prepare step; "
        "a task that does not take one says so.",
    )
    p.add_argument("task", help=TASK_HELP)
    p.add_argument("--raw", type=Path, help="folder with the raw public download")
    p.add_argument("--out", type=Path, help="output folder (default: $LESIONBENCH_DATA/<task>)")
    p.add_argument("--split", help="split variant, e.g. grouped or fmcib (the published split) (default: grouped)")
    p.add_argument("--label-variant", help="label variant, e.g. fmcib (the published labels)")
    p.add_argument("--labels-only", action="store_true", default=None, help="write the label table only, no images")
    p.add_argument("--luna16-annotations", type=Path, help="LUNA16 annotations.csv (or any CSV with a seriesuid column)")
    p.add_argument("--clinical", type=Path, help="the collection's clinical table")
    p.add_argument("--workers", type=whole_number(1), help="parallel worker processes")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.benchmark.paths import data_root
    from lesionbench.benchmark.encoders.plugins import TASKS

    from lesionbench.tasks.cohorts import RETEST_SETS

    # test-retest sets are prepared like tasks but never scored (lesionbench robustness --retest-manifest)
    factory = RETEST_SETS[args.task] if args.task in RETEST_SETS else TASKS.get(args.task)
    prepare = getattr(factory, "prepare", None)
    if prepare is None:
        raise ConfigurationError(f"Task {args.task!r} has no prepare step: its data ships with it or is made by `lesionbench synth`.")
    options = {
        k: v
        for k, v in vars(args).items()
        if k in ("split", "label_variant", "labels_only", "luna16_annotations", "clinical", "workers") and v is not None
    }
    out = args.out or data_root() / args.task
    try:
        manifest = prepare(raw=args.raw, out=out, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigurationError(f"Task {args.task!r} does not take option(s) {sorted(options)}: {exc}.") from exc
    sys.stdout.write(f"prepared {args.task}: {manifest}\n")
    return 0


def add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="Download a dataset's public data: DICOM from NCI Imaging Data Commons (needs idc-index), LNDb from Zenodo.",
        description="Resolve the dataset's series from idc-index's offline index, report patients, series and "
        "size, then download them (resumable) with the clinical table. --dry-run only reports (works offline). "
        "lndb: fetch the Zenodo record's files and verify their sizes and checksums (LESIONBENCH_OFFLINE=1: verify only).",
    )
    p.add_argument("dataset", choices=["lung1", "radio", "lidc", "kits", "rider", "crlm", "hcc_tace", "lndb"],
                   help="lung1 (NSCLC-Radiomics), radio (NSCLC-Radiogenomics), lidc (LIDC-IDRI), kits (C4KC-KiTS), rider (RIDER Lung "
                   "CT test-retest), crlm (Colorectal-Liver-Metastases), hcc_tace (HCC-TACE-Seg), lndb (LNDb, Zenodo)")
    p.add_argument("--out", type=Path, help="download folder (then: lesionbench prepare TASK --raw this folder)")
    p.add_argument("--dry-run", action="store_true", help="print the patients, series and total size; download nothing")
    p.add_argument("--patients", nargs="+", metavar="ID", help="only these PatientIDs (e.g. to try a few first)")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from lesionbench.benchmark.errors import ConfigurationError
    from lesionbench.tasks import _idc

    if args.dataset == "lndb":  # not in IDC: Zenodo, checked against the record's published checksums
        from lesionbench.tasks.cohorts import lndb

        if args.patients:
            raise ConfigurationError("--patients is for the IDC datasets; LNDb's CTs come in six archives (data0.rar ... data5.rar), fetched whole.")
        sys.stdout.write(lndb.download(args.out, dry_run=args.dry_run))
        return 0
    plan = _idc.resolve_download(args.dataset, patients=args.patients)
    if args.dry_run:
        sys.stdout.write(f"{'PatientID':<16} {'Modality':<9} {'instances':>9} {'MB':>9}  SeriesInstanceUID\n")
        for row in plan.series.itertuples(index=False):
            sys.stdout.write(
                f"{row.PatientID:<16} {row.Modality:<9} {int(row.instanceCount):>9} {row.series_size_MB:>9.1f}  {row.SeriesInstanceUID}\n"
            )
        sys.stdout.write(f"dry run, nothing downloaded: {plan.summary()}\n")
        return 0
    if args.out is None:
        raise ConfigurationError("lesionbench download needs --out DIR (or --dry-run to only list what it would fetch).")
    sys.stdout.write(f"downloading {plan.summary()}\n")
    out = _idc.download(plan, args.out)
    sys.stdout.write(f"downloaded into {out}; next: lesionbench prepare TASK --raw {out}\n")
    return 0
