"""DICOM reading on every real sample, the grayscale pipeline, writing, and bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_windowing
from pydicom.sequence import Sequence

from ptxssl.datasets.dicom import read_dicom, write_dicom
from ptxssl.errors import UserError

SIIM_SOP = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"
MULTI_FRAME = {"emri_small_RLE.dcm", "emri_small_big_endian.dcm"}
META_KEYS = {"patient_id", "study_uid", "series_uid", "sop_uid", "modality", "view_position",
             "photometric", "bits_stored", "rows", "columns", "pixel_spacing"}


def _siim(shared_data: Path) -> Path:
    return shared_data / "siim" / "dicom-images-train" / "sample" / f"{SIIM_SOP}.dcm"


def _real_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "dicom").glob("*.dcm")) + [_siim(shared_data)]
    assert len(files) == 9, files
    return files


def test_every_real_dicom(shared_data: Path) -> None:
    """Each real file decodes to a finite [0, 1] image of Rows x Columns, or (the 10-frame
    MR ones) gives the documented multi-frame error."""
    for path in _real_files(shared_data):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if path.name in MULTI_FRAME:
            with pytest.raises(UserError, match=r"multi-frame DICOM \(10 frames\)") as info:
                read_dicom(path)
            assert str(path) in str(info.value)
            continue
        image, meta = read_dicom(path)
        assert image.dtype == np.float32
        assert image.shape == (header.Rows, header.Columns), path.name
        assert np.isfinite(image).all()
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert image.max() > image.min(), f"{path.name} decoded flat"
        assert set(meta) == META_KEYS
        assert (meta["rows"], meta["columns"]) == (header.Rows, header.Columns)
        assert meta["photometric"] == header.PhotometricInterpretation
        assert meta["bits_stored"] == header.BitsStored


def test_real_siim_dicom_metadata(shared_data: Path) -> None:
    image, meta = read_dicom(_siim(shared_data))
    raw = pydicom.dcmread(_siim(shared_data)).pixel_array  # 8-bit MONOCHROME2, no LUTs
    np.testing.assert_allclose(image, raw / 255.0, atol=1e-6)
    assert meta["sop_uid"] == SIIM_SOP
    assert meta["modality"] == "CR" and meta["view_position"] == "PA"
    assert meta["photometric"] == "MONOCHROME2" and meta["bits_stored"] == 8
    assert meta["pixel_spacing"] == pytest.approx((0.168, 0.168))
    assert meta["patient_id"] and meta["study_uid"] and meta["series_uid"]


def test_monochrome1_header_reads_as_negative(shared_data: Path) -> None:
    original, _ = read_dicom(_siim(shared_data))
    inverted, meta = read_dicom(shared_data / "dicom" / "siim_monochrome1_header.dcm")
    assert meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(inverted, 1.0 - original, atol=1e-6)
    assert abs(inverted.mean() - (1 - original.mean())) < 1e-5


def test_rg1_bits_stored_15_and_window(shared_data: Path) -> None:
    """RG1_J2KI: MONOCHROME1, 15 of 16 bits, Window 15000/30000. The window's output range
    is [0, 2**15 - 1] (BitsStored), so the image is 1 - window(raw) / 32767."""
    path = shared_data / "dicom" / "RG1_J2KI.dcm"
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    assert raw.dtype == np.uint16 and ds.BitsStored == 15 and raw.max() < 2**15
    image, _ = read_dicom(path)
    # DICOM LINEAR window (PS3.3 C.11.2.1.2.1), written out; 0..1 of the window = 0..32767
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    windowed = np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(image, 1.0 - windowed, atol=1e-5)
    np.testing.assert_allclose(image, 1.0 - apply_windowing(raw, ds) / (2**15 - 1), atol=1e-5)
    # scaling the window output by the dtype (2**16 - 1) would halve the brightness range
    assert (1.0 - image).max() == pytest.approx(apply_windowing(raw, ds).max() / 32767, abs=1e-5)
    assert (1.0 - image).max() > 0.85  # ~0.88; a 65535 scale would give ~0.44


def test_rg1_without_window_scales_by_bits_stored(shared_data: Path, tmp_path: Path) -> None:
    """With the window removed the image is exactly 1 - raw / (2**15 - 1), not raw / 65535."""
    ds = pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm")
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(tmp_path / "rg1_nowin.dcm")
    image, _ = read_dicom(tmp_path / "rg1_nowin.dcm")
    raw = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(image, 1.0 - raw / 32767.0, atol=1e-6)
    assert np.abs(image - (1.0 - raw / 65535.0)).max() > 0.3


def test_rg3_ten_bits_window(shared_data: Path) -> None:
    for name in ("RG3_J2KI.dcm", "RG3_J2KR.dcm"):
        ds = pydicom.dcmread(shared_data / "dicom" / name)
        image, _ = read_dicom(shared_data / "dicom" / name)
        expected = 1.0 - apply_windowing(ds.pixel_array, ds) / 1023.0
        np.testing.assert_allclose(image, expected, atol=1e-5)


def test_signed_images_use_bits_stored_range(shared_data: Path) -> None:
    """JPEG-LS 15-bit signed: -16384 -> 0 and 16383 -> 1 (the header's range, not min/max)."""
    path = shared_data / "dicom" / "JLSL_16_15_1_1F.dcm"
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    image, _ = read_dicom(path)
    np.testing.assert_allclose(image, (raw + 2**14) / (2**15 - 1), atol=1e-6)
    # JPEG Lossless, 16-bit signed, values 0..278: stays near mid-grey, not stretched
    image, _ = read_dicom(shared_data / "dicom" / "JPEG-LL.dcm")
    assert 0.49 < image.min() and image.max() < 0.51


# --- write_dicom ------------------------------------------------------------------------


def _write(path: Path, pixels: np.ndarray, bits: int, mono1: bool, **kw) -> None:
    args = dict(patient_id="synth-00007", study_uid="1.2.826.0.1.3680043.8.498.1",
                series_uid="1.2.826.0.1.3680043.8.498.2", sop_uid="1.2.826.0.1.3680043.8.498.3")
    args.update(kw)
    write_dicom(path, pixels, bits_stored=bits, monochrome1=mono1, **args)


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("mono1", [False, True])
def test_write_read_roundtrip(tmp_path: Path, bits: int, mono1: bool) -> None:
    rng = np.random.default_rng(bits)
    top = 2**bits - 1
    pixels = rng.integers(0, top + 1, size=(37, 23)).astype(np.uint8 if bits <= 8 else np.uint16)
    pixels[0, 0], pixels[-1, -1] = 0, top
    path = tmp_path / f"b{bits}_{mono1}.dcm"
    _write(path, pixels, bits, mono1)
    image, meta = read_dicom(path)
    stored = np.rint((1.0 - image if mono1 else image).astype(np.float64) * top)
    np.testing.assert_array_equal(stored, pixels)
    assert meta["bits_stored"] == bits
    assert meta["photometric"] == ("MONOCHROME1" if mono1 else "MONOCHROME2")
    ds = pydicom.dcmread(path)
    assert ds.BitsAllocated == (8 if bits <= 8 else 16)
    assert ds.BitsStored == bits and ds.HighBit == bits - 1 and ds.PixelRepresentation == 0


def test_written_tags_and_file_format(tmp_path: Path) -> None:
    path = tmp_path / "tags.dcm"
    pixels = np.arange(6 * 5, dtype=np.uint16).reshape(6, 5)
    _write(path, pixels, 12, False, modality="DX", view_position="AP",
           pixel_spacing=(0.2, 0.25), patient_sex="F", patient_age="034Y")
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"  # Part-10 preamble
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert ds.PatientID == "synth-00007"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert ds.SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.2"
    assert ds.SOPInstanceUID == "1.2.826.0.1.3680043.8.498.3"
    assert (ds.Modality, ds.ViewPosition, ds.PatientSex, ds.PatientAge) == ("DX", "AP", "F", "034Y")
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Rows == 6 and ds.Columns == 5
    np.testing.assert_array_equal(ds.pixel_array, pixels)
    _, meta = read_dicom(path)
    assert meta["pixel_spacing"] == pytest.approx((0.2, 0.25))
    assert (meta["study_uid"], meta["series_uid"], meta["sop_uid"]) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert [p.name for p in tmp_path.iterdir()] == ["tags.dcm"]  # no temp file left behind


def test_written_pixel_spacing_is_valid_ds(tmp_path: Path) -> None:
    """DS values are at most 16 characters: 0.14 * 1024 / 37 must be rounded to fit."""
    path = tmp_path / "ds.dcm"
    _write(path, np.zeros((4, 4), np.uint8), 8, False, pixel_spacing=(0.14 * 1024 / 37,) * 2)
    raw = pydicom.dcmread(path)["PixelSpacing"]
    assert all(len(str(v)) <= 16 for v in raw.value)
    assert read_dicom(path)[1]["pixel_spacing"] == pytest.approx((3.8745946,) * 2)


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that dies mid-way leaves the old file intact and no temp file."""
    path = tmp_path / "a.dcm"
    _write(path, np.zeros((4, 4), np.uint8), 8, False)
    before = path.read_bytes()

    def boom(self, *args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(Dataset, "save_as", boom)
    with pytest.raises(RuntimeError):
        _write(path, np.ones((4, 4), np.uint8), 8, False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.dcm"]


@pytest.mark.parametrize(
    ("pixels", "bits"),
    [(np.full((3, 3), 256, np.uint16), 8), (np.full((3, 3), -1, np.int16), 12),
     (np.zeros((3, 3), np.float32), 8), (np.zeros((2, 3, 3), np.uint8), 8),
     (np.zeros((3, 3), np.uint16), 17)],
)
def test_write_rejects_bad_pixels(tmp_path: Path, pixels: np.ndarray, bits: int) -> None:
    with pytest.raises(ValueError):
        _write(tmp_path / "x.dcm", pixels, bits, False)


# --- the grayscale pipeline on written files ----------------------------------------------


def _base(tmp_path: Path, bits: int = 12) -> tuple[Path, np.ndarray]:
    pixels = (np.arange(64 * 64).reshape(64, 64) % 2**bits).astype(np.uint16)
    path = tmp_path / "base.dcm"
    _write(path, pixels, bits, False)
    return path, pixels


def test_rescale_is_carried_into_the_range(tmp_path: Path) -> None:
    """A linear Modality LUT moves the range with the data: the image does not change."""
    path, pixels = _base(tmp_path)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2.5, -1000
    ds.save_as(tmp_path / "rescaled.dcm")
    image, _ = read_dicom(tmp_path / "rescaled.dcm")
    np.testing.assert_allclose(image, pixels / 4095.0, atol=1e-6)


def test_window_after_rescale(tmp_path: Path) -> None:
    path, pixels = _base(tmp_path)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024  # output range -1024..3071
    ds.WindowCenter, ds.WindowWidth = 0, 1001  # window on values -500..500 -> stored 524..1524
    ds.save_as(tmp_path / "win.dcm")
    image, _ = read_dicom(tmp_path / "win.dcm")
    expected = np.clip((pixels - 1024.0 + 0.5) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image.min() == 0.0 and image.max() == 1.0


def test_voi_lut_sequence(tmp_path: Path) -> None:
    """An 8-bit VOI LUT that inverts and compresses 12-bit values: output / 255."""
    path, pixels = _base(tmp_path)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 8])
    lut = (255 - np.arange(4096) // 16).astype(np.uint16)
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 100, 10  # the LUT wins, as in pydicom
    ds.save_as(tmp_path / "voilut.dcm")
    image, _ = read_dicom(tmp_path / "voilut.dcm")
    np.testing.assert_allclose(image, lut[pixels] / 255.0, atol=1e-6)


def test_voi_lut_declared_16_bits_holding_12(tmp_path: Path) -> None:
    """Agfa-style VOI LUT: descriptor says 16 bits, entries are 12-bit: scaled by 4095."""
    path, pixels = _base(tmp_path)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    lut = np.arange(4096, dtype=np.uint16)[::-1].copy()
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(tmp_path / "agfa.dcm")
    image, _ = read_dicom(tmp_path / "agfa.dcm")
    np.testing.assert_allclose(image, lut[pixels] / 4095.0, atol=1e-6)


def test_modality_lut_sequence(tmp_path: Path) -> None:
    path, pixels = _base(tmp_path, bits=8)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 16])
    lut = (np.arange(256) * 200).astype(np.uint16)
    item.add_new("LUTData", "US", lut.tolist())
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds.save_as(tmp_path / "modlut.dcm")
    image, _ = read_dicom(tmp_path / "modlut.dcm")
    np.testing.assert_allclose(image, lut[pixels] / 65535.0, atol=1e-6)


def test_rgb_and_palette_dicom_to_grey() -> None:
    from pydicom.data import get_testdata_file

    for name in ("SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm",
                 "examples_palette.dcm"):
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"pydicom test file {name} not installed")
        ds = pydicom.dcmread(path)
        image, meta = read_dicom(path)
        assert image.shape == (ds.Rows, ds.Columns) and image.dtype == np.float32
        assert 0 <= image.min() < image.max() <= 1
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm", download=False))
    rgb = ds.pixel_array.astype(np.float64)
    image, _ = read_dicom(get_testdata_file("SC_rgb_small_odd.dcm", download=False))
    np.testing.assert_allclose(image, rgb @ [0.299, 0.587, 0.114] / 255, atol=1e-6)


def test_bare_dataset_without_preamble(tmp_path: Path) -> None:
    """Old files with no preamble/meta header still read when they hold an image."""
    path, pixels = _base(tmp_path)
    ds = pydicom.dcmread(path)
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert bare.read_bytes()[128:132] != b"DICM"
    image, _ = read_dicom(bare)
    np.testing.assert_allclose(image, pixels / 4095.0, atol=1e-6)


# --- bad files ----------------------------------------------------------------------------


def _assert_user_error(path: Path, *patterns: str) -> str:
    with pytest.raises(UserError) as info:
        read_dicom(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert info.value.__cause__ is None  # no chained traceback behind the one line
    assert info.value.__context__ is None or info.value.__suppress_context__
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _assert_user_error(tmp_path / "nope.dcm", "not found")
    _assert_user_error(tmp_path, "folder")


def test_garbage_with_dcm_name(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    _assert_user_error(path, "not a DICOM file")
    text = tmp_path / "notes.dcm"
    text.write_text("patient notes, not an image\n" * 50)
    _assert_user_error(text, "not a DICOM file")


@pytest.mark.filterwarnings("ignore:End of file reached")
@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.99])
def test_truncated_real_jpeg_dicom(shared_data: Path, tmp_path: Path, fraction: float) -> None:
    data = _siim(shared_data).read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: int(len(data) * fraction)])
    _assert_user_error(path, "truncated")


@pytest.mark.parametrize("fraction", [0.05, 0.6])
def test_truncated_uncompressed(tmp_path: Path, fraction: float) -> None:
    path, _ = _base(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    _assert_user_error(path, "truncated")


def test_no_pixel_data(shared_data: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(_siim(shared_data))
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    _assert_user_error(path, "no pixel data", "truncated")


def test_not_an_image(tmp_path: Path) -> None:
    """A DICOM object without image elements (a report, say) is named as such."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "p"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    _assert_user_error(path, "no PixelData", "not an image")


def test_transfer_syntax_without_decoder(shared_data: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(_siim(shared_data))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has none
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path)
    _assert_user_error(path, "no decoder", "MPEG2")


def test_missing_decoder_plugin(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a decoder the message names the permissive packages ptxssl installs and the GPL extra."""

    class Unavailable:
        is_available = False

    monkeypatch.setattr("ptxssl.datasets.dicom.get_decoder", lambda uid: Unavailable())
    _assert_user_error(_siim(shared_data), "JPEG Baseline", "pyjpegls python-gdcm", "pip install 'ptxssl[gpl]'")


def test_multi_frame_written(tmp_path: Path) -> None:
    path, _ = _base(tmp_path)
    ds = pydicom.dcmread(path)
    ds.set_pixel_data(np.zeros((3, 8, 8), np.uint16), "MONOCHROME2", 12,
                      generate_instance_uid=False)
    ds.save_as(path)
    _assert_user_error(path, "multi-frame DICOM (3 frames) is not a single radiograph")


def test_lossless_jpeg_ls_decoders_agree(shared_data: Path) -> None:
    """The permissive JPEG-LS decoders ptxssl installs (pyjpegls, gdcm) give the same lossless
    pixels: the default install decodes the file, and a second implementation vouches for it."""
    from pydicom.pixels import pixel_array

    path = shared_data / "dicom" / "JLSL_16_15_1_1F.dcm"
    by_pyjpegls = pixel_array(path, decoding_plugin="pyjpegls")
    by_gdcm = pixel_array(path, decoding_plugin="gdcm")
    assert by_pyjpegls.shape == (128, 128) and by_pyjpegls.std() > 0
    np.testing.assert_array_equal(by_pyjpegls, by_gdcm)
