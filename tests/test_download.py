"""`lesionbench download`: series resolved offline from idc-index; nothing is ever downloaded here."""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("idc_index_data")

from lesionbench.benchmark.errors import DataPreparationError  # noqa: E402
from lesionbench.cli import main  # noqa: E402
from lesionbench.tasks import _idc  # noqa: E402
from lesionbench.tasks._nsclc import DOWNLOAD_MANIFEST  # noqa: E402


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    return _idc.load_index(["nsclc_radiomics", "nsclc_radiogenomics", "lidc_idri"])


class NoDownloadClient:
    """Fails the test if a download is attempted."""

    def download_from_selection(self, **kwargs):
        pytest.fail("a download was attempted")


def test_series_resolved_offline_for_the_three_collections(index: pd.DataFrame) -> None:
    lung1 = _idc.resolve_download("lung1", index=index)
    assert (lung1.n_patients, lung1.counts()) == (422, {"CT": 422, "RTSTRUCT": 422})
    assert set(lung1.series["license_short_name"]) == {"CC BY-NC 3.0"}
    radio = _idc.resolve_download("radio", index=index)
    # the 144 original tumour SEGs (no AI-derived ones) and the CT series of their studies
    assert (radio.n_patients, radio.counts()) == (144, {"CT": 149, "SEG": 144})
    assert radio.series["analysis_result_id"].isna().all() and set(radio.series["license_short_name"]) == {"CC BY 3.0"}
    lidc = _idc.resolve_download("lidc", index=index)
    assert (lidc.n_patients, lidc.counts()) == (1010, {"CT": 1018})
    assert 20_000 < lung1.size_mb < 35_000 and "422 patients, 844 series" in lung1.summary()
    few = _idc.resolve_download("lung1", index=index, patients=["LUNG1-001", "LUNG1-002"])
    assert few.n_series == 4
    with pytest.raises(DataPreparationError, match="LUNG1-999"):
        _idc.resolve_download("lung1", index=index, patients=["LUNG1-999"])


def test_dry_run_prints_and_downloads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_idc, "download", lambda *a, **k: pytest.fail("dry run downloaded"))
    monkeypatch.setattr(_idc, "check_network", lambda *a, **k: pytest.fail("dry run used the network"))
    out = tmp_path / "raw"
    assert main(["download", "radio", "--out", str(out), "--dry-run", "--patients", "R01-001", "R01-059"]) == 0
    text = capsys.readouterr().out
    assert "R01-059" in text and "SEG" in text and "dry run, nothing downloaded" in text
    assert "2 patients, 9 series (CT 7, SEG 2)" in text and not out.exists()
    assert len([line for line in text.splitlines() if line.startswith("R01-")]) == 9


def test_unreachable_network_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: pd.DataFrame) -> None:
    def refuse(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    plan = _idc.resolve_download("lung1", index=index, patients=["LUNG1-001"])
    with pytest.raises(DataPreparationError, match="network is unreachable.*s3.amazonaws.com.*--dry-run"):
        _idc.download(plan, tmp_path / "raw", client=NoDownloadClient())


def test_interrupted_download_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: pd.DataFrame) -> None:
    plan = _idc.resolve_download("lung1", index=index, patients=["LUNG1-001"])
    monkeypatch.setattr(_idc, "check_network", lambda *a, **k: None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)

    class PartialClient:
        """Writes every series but one file short of the CT, as an interrupted s5cmd would."""

        def download_from_selection(self, *, downloadDir, seriesInstanceUID, dirTemplate, **kwargs):
            assert dirTemplate == _idc.DIR_TEMPLATE and set(seriesInstanceUID) == set(plan.series["SeriesInstanceUID"])
            for row in plan.series.itertuples():
                folder = Path(downloadDir) / row.collection_id / row.PatientID / row.StudyInstanceUID / f"{row.Modality}_{row.SeriesInstanceUID}"
                folder.mkdir(parents=True)
                n = int(row.instanceCount) - (1 if row.Modality == "CT" else 0)
                for i in range(n):
                    (folder / f"{i}.dcm").write_bytes(b"")

    out = tmp_path / "raw"
    with pytest.raises(DataPreparationError, match="1 of 2 series are incomplete.*Re-run"):
        _idc.download(plan, out, client=PartialClient())
    written = pd.read_csv(out / DOWNLOAD_MANIFEST, dtype=str)
    assert set(written["SeriesInstanceUID"]) == set(plan.series["SeriesInstanceUID"])


def test_missing_idc_index_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "idc_index_data", None)
    with pytest.raises(DataPreparationError, match=r"pip install 'lesionbench\[idc\]'"):
        _idc.load_index(["lidc_idri"])
