"""Issue 20 (Integrity II), DICOM series: a gantry-tilted series, an uneven step and a slice of another
PixelSpacing are refused naming files and sizes (17); an empty or truncated slice is an error wherever it is
in the series (18). The whole read, the slice-by-slice read and `validate` agree."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("pydicom")

from test_partial_reading import _volume, write_series, write_slice  # noqa: E402

from lesionbench.benchmark.data.dicomslices import series_header_problem  # noqa: E402
from lesionbench.benchmark.errors import ImageError  # noqa: E402
from lesionbench.benchmark.data.rawmap import map_image  # noqa: E402
from lesionbench.benchmark.data.reading import read_image  # noqa: E402


def _refused_everywhere(folder, pattern: str) -> str:
    with pytest.raises(ImageError, match=pattern) as error:
        read_image(folder)
    assert str(folder) in str(error.value)
    assert map_image(folder) is None  # read whole, which refuses
    assert series_header_problem(folder) == (str(error.value), None)  # validate: the same line from the headers
    return str(error.value)


def test_gantry_tilt_is_refused_with_the_distance(tmp_path):
    # 19.5 mm sideways over the series: what the review measured
    folder = write_series(tmp_path / "tilt", _volume(14), positions=[(-20.0, 15.5 + 1.5 * k, -300.0 + 2.0 * k) for k in range(14)])
    # ITK steps 2.5 mm straight along the normal: the last slice lands 19.5 mm sideways and 6.5 mm too far
    _refused_everywhere(folder, r"step 36\.87 degrees off their normal \(gantry tilt\).*s0013\.dcm lies 20\.6 mm from its header position")


def test_uneven_step_is_refused(tmp_path):
    z = [-300.0 + 2.0 * k + (0.6 if k >= 7 else 0.0) for k in range(12)]  # one 2.6 mm step among 2 mm ones
    folder = write_series(tmp_path / "uneven", _volume(12), positions=[(-20.0, 15.5, v) for v in z])
    _refused_everywhere(folder, r"slice steps are uneven \(2 to 2\.6 mm\).*s000\d\.dcm lies 0\.\d+ mm")


def test_a_slice_of_another_pixel_spacing_is_refused(tmp_path):
    arr = _volume(12)
    folder = write_series(tmp_path / "mixed", arr)
    write_slice(folder / "s0004.dcm", arr[4], position=(-20.0, 15.5, -292.0), index=4, pixel_spacing=(0.9, 0.7))
    _refused_everywhere(folder, r"mixes pixel sizes: s0004\.dcm \(1 slice\(s\)\) have PixelSpacing 0\.9 x 0\.7 mm where s0000\.dcm has 0\.8 x 0\.7 mm")


@pytest.mark.parametrize("which", ["s0000.dcm", "s0011.dcm"])
@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_an_undecoded_first_or_last_slice_is_an_error(tmp_path, which, how):
    folder = write_series(tmp_path / "s", _volume(12))
    f = folder / which
    f.write_bytes(b"" if how == "empty" else f.read_bytes()[:-100])
    _refused_everywhere(folder, r"slice file\(s\) that do not decode: " + re.escape(which) + r" \(")


def test_a_non_image_object_beside_the_series_is_not_a_slice(tmp_path):
    """An RT structure set (no pixels) in the folder is not part of the series and not an error."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = write_series(tmp_path / "s", _volume(12))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = "1.2.840.10008.5.1.4.1.1.481.3", generate_uid(), ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "RTSTRUCT", "P1"
    ds.save_as(folder / "rtstruct.dcm", enforce_file_format=True)
    assert pydicom.dcmread(folder / "rtstruct.dcm").Modality == "RTSTRUCT"
    assert read_image(folder).GetSize() == (26, 22, 12)
    assert series_header_problem(folder)[0] is None


def test_positions_rounded_as_scanners_write_them_still_read(tmp_path):
    """Decimal strings rounded to 0.01 mm move slices by far less than the tolerance: no refusal."""
    z = np.round(-300.0 + 0.625 * np.arange(12), 2)
    folder = write_series(tmp_path / "s", _volume(12), spacing=(0.7, 0.8, 0.625), positions=[(-20.0, 15.5, v) for v in z])
    assert read_image(folder).GetSize()[2] == 12 and series_header_problem(folder)[0] is None
