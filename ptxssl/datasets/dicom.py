"""Read a single-frame radiograph DICOM as displayed, and write one (for the synthetic data).

Reading follows the DICOM grayscale pipeline (PS3.3 C.11, PS3.4 N.2): stored values ->
Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence) -> VOI LUT (a VOI LUT
Sequence, else Window Center/Width) -> [0, 1] -> inverted for MONOCHROME1, so bright always
means dense. The [0, 1] scale comes from the range the header allows (BitsStored and
PixelRepresentation, pushed through the same transforms), never from the numpy dtype (a
15-bit image in uint16 would come out half as bright) nor from the image's own min/max
(which would stretch every image differently).

Choices: multi-frame files are refused (a radiograph has one frame; a 10-frame MR is not a
chest X-ray); RGB/YBR/PALETTE COLOR files are converted to luminance (ITU-R BT.601
weights); absent string tags read as ""; a pixel spacing of 0 (RG1_J2KI) reads as None.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_windowing, get_decoder
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import DSfloat

from ptxssl.errors import UserError

_SOP_CLASS = {  # Modality -> SOP Class UID of the written file
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as DICOM's YBR_FULL uses
# the permissive decoders ptxssl installs, and the GPL-3.0 one it leaves to the user (pyproject's `gpl` extra)
_PLUGINS = ("reinstall ptxssl to get its decoders (pip install pillow pylibjpeg pylibjpeg-openjpeg pyjpegls "
            "python-gdcm), or opt into the GPL-3.0 libjpeg decoder with pip install 'ptxssl[gpl]'")


def read_dicom(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read one single-frame DICOM image.

    Args:
        path: a Part-10 DICOM file (any transfer syntax the installed plugins decode).
    Returns:
        image: (H, W) float32 in [0, 1], displayed polarity (MONOCHROME1 inverted).
        meta: patient_id, study_uid, series_uid, sop_uid, modality, view_position,
            photometric, bits_stored, rows, columns, pixel_spacing ((row, col) mm or None).
    Raises:
        UserError: missing/unreadable/non-DICOM/truncated file, no pixel data, no decoder
            for the transfer syntax, multi-frame or unsupported colour data.
    """
    path = Path(path)
    ds = _open(path)
    frames = _int(ds.get("NumberOfFrames"), 1)
    if frames > 1:
        raise UserError(f"{path}: multi-frame DICOM ({frames} frames) is not a single "
                        "radiograph; extract one frame or leave the file out")
    _check_decodable(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file, not a bug
        raise UserError(f"{path}: cannot decode the pixel data ({_short(err)}); the file is "
                        "probably truncated or corrupt, re-export or re-download it") from None
    rows, cols = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    if arr.shape[:2] != (rows, cols):
        raise UserError(f"{path}: decoded pixels have shape {arr.shape}, but the header says "
                        f"{rows}x{cols}; the file is inconsistent, re-export it")
    image = _to_unit(arr, ds, path)
    return image, _metadata(ds)


def _open(path: Path) -> Dataset:
    """Parse the file; every way it can fail becomes a one-line UserError naming it."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise UserError(f"{path}: {what}; check the path")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:  # no 'DICM' prefix: old files may still be a bare dataset
        ds = None
    except Exception as err:  # noqa: BLE001
        raise UserError(f"{path}: cannot read as DICOM ({_short(err)}); the file is probably "
                        "truncated or corrupt, re-export or re-download it") from None
    if ds is None:
        ds = _read_bare(path)
    if "TransferSyntaxUID" not in ds.file_meta:  # no meta header: record how it was parsed
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit
            else ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _read_bare(path: Path) -> Dataset:
    """A dataset without preamble/meta, accepted only if it really holds an image."""
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:  # noqa: BLE001 - garbage bytes: reported below
        ds = None
    if ds is not None and "PixelData" in ds and "Rows" in ds:
        return ds
    raise UserError(f"{path}: not a DICOM file (no 'DICM' header and no image elements); "
                    "check that it is a DICOM image, or give it its real suffix")


def _check_decodable(ds: Dataset, path: Path) -> None:
    if "PixelData" not in ds:
        if len(ds) == 0 or "Rows" in ds:
            what = "a DICOM header but no pixel data: the file is probably truncated"
            fix = "re-download or re-export it"
        else:
            what = "no PixelData: it is not an image (a report, DICOMDIR or RT object?)"
            fix = "leave it out"
        raise UserError(f"{path}: DICOM has {what}; {fix}")
    ts = UID(ds.file_meta.TransferSyntaxUID)  # _open always sets it
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UserError(f"{path}: no decoder for transfer syntax {ts.name} ({ts}); convert "
                        "it to an uncompressed syntax (dcmtk `dcmdjpeg`, gdcm `gdcmconv --raw`)"
                        ) from None
    if not decoder.is_available:
        raise UserError(f"{path}: transfer syntax {ts.name} needs a decoder plugin that is "
                        f"not installed; {_PLUGINS}") from None


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """Smallest and largest stored value allowed by BitsStored and PixelRepresentation."""
    bits = _int(ds.get("BitsStored"), 0) or _int(ds.get("BitsAllocated"), 16)
    if _int(ds.get("PixelRepresentation"), 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def _lut(values: np.ndarray, item: Dataset, ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Apply one Modality/VOI LUT Sequence item (PS3.3 C.11.1, C.11.2): (mapped, table).

    Written out rather than pydicom's apply_voi / apply_modality_lut because pydicom 3.0.2
    indexes an 8-bit VOI LUT through a uint8 array (a 4096-entry LUT wraps at 256) and
    rejects Modality LUTs of 10-15 bits per entry (pydicom issue #2317).
    """
    entries, first, _ = (int(v) for v in item.LUTDescriptor)
    entries = entries or 2**16  # 0 means 65536
    elem = item["LUTData"]
    if isinstance(elem.value, bytes):  # OW: 16-bit words in the dataset's byte order
        big = ds.file_meta.get("TransferSyntaxUID") == ExplicitVRBigEndian
        table = np.frombuffer(elem.value, dtype=">u2" if big else "<u2").astype(np.int64)
    else:  # US: already a list of ints
        table = np.atleast_1d(np.asarray(elem.value, dtype=np.int64))
    if table.size < entries:
        raise ValueError(f"LUT Data has {table.size} entries, its descriptor says {entries}")
    table = table[:entries]
    index = np.clip(np.floor(values).astype(np.int64) - first, 0, entries - 1)
    return table[index], table


def _has_lut(seq: object) -> bool:
    return bool(seq) and None not in (seq[0].get("LUTDescriptor"), seq[0].get("LUTData"))


def _grey_to_unit(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT -> VOI LUT -> [0, 1], tracking the output range of each step.

    Range bookkeeping: stored values span the BitsStored range; a rescale maps its ends; a
    Modality LUT outputs 0..2**bits-1 (its descriptor, as pydicom's windowing assumes); a
    window maps onto that same range (pydicom's y_min..y_max); a VOI LUT outputs 0..2**b-1
    with b the bit length of its largest entry, capped by the descriptor (Agfa CRs declare
    16 bits for 12-bit tables; Horos and Cornerstone also read the table's real range).
    """
    lo, hi = _stored_range(ds)
    if _has_lut(ds.get("ModalityLUTSequence")):
        item = ds.ModalityLUTSequence[0]
        values, _ = _lut(arr, item, ds)
        lo, hi = 0.0, 2.0 ** int(item.LUTDescriptor[2]) - 1
    else:
        values = apply_modality_lut(arr, ds)  # Rescale Slope/Intercept (or unchanged)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    if _has_lut(ds.get("VOILUTSequence")):  # preferred over a window, as in pydicom
        item = ds.VOILUTSequence[0]
        values, table = _lut(values, item, ds)
        bits = min(int(item.LUTDescriptor[2]), max(8, int(table.max()).bit_length()))
        lo, hi = 0.0, 2.0 ** bits - 1
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        values = apply_windowing(values, ds)  # output spans [lo, hi] (pydicom's y range)
    return _scale(values, lo, hi)


def _to_unit(arr: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixels -> (H, W) float32 [0, 1] in displayed polarity."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    try:
        if photometric == "PALETTE COLOR":  # indices -> RGB through the LUTs, then luminance
            depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
            rgb = apply_color_lut(arr, ds)
            return _scale(rgb[..., :3].astype(np.float64) @ _LUMA, 0.0, 2.0 ** depth - 1)
        if arr.ndim == 3:  # RGB/YBR: pydicom has already converted YBR to RGB
            return _scale(arr[..., :3].astype(np.float64) @ _LUMA, *_stored_range(ds))
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise UserError(f"unsupported PhotometricInterpretation {photometric!r}; "
                            "expected MONOCHROME1 or MONOCHROME2")
        image = _grey_to_unit(arr, ds)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError,
            NotImplementedError) as err:
        raise UserError(f"{path}: invalid LUT or window in the header ({_short(err)}); "
                        "re-export the image") from None
    return 1.0 - image if photometric == "MONOCHROME1" else image


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = (np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-12)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _metadata(ds: Dataset) -> dict:
    spacing = None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        try:
            pair = tuple(float(v) for v in value) if value is not None else ()
        except (TypeError, ValueError):
            pair = ()
        if len(pair) == 2 and min(pair) > 0:  # some headers carry 0\0 (RG1_J2KI): unknown
            spacing = pair
            break
    return {
        "patient_id": str(ds.get("PatientID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_uid": str(ds.get("SOPInstanceUID", "")),
        "modality": str(ds.get("Modality", "")),
        "view_position": str(ds.get("ViewPosition", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "bits_stored": _int(ds.get("BitsStored"), 0),
        "rows": _int(ds.get("Rows"), 0),
        "columns": _int(ds.get("Columns"), 0),
        "pixel_spacing": spacing,
    }


def write_dicom(path: str | Path, pixels: np.ndarray, *, bits_stored: int, monochrome1: bool,
                patient_id: str, study_uid: str, series_uid: str, sop_uid: str,
                modality: str = "CR", view_position: str = "PA",
                pixel_spacing: tuple[float, float] = (0.14, 0.14), patient_sex: str = "O",
                patient_age: str = "050Y") -> None:
    """Write a Part-10 DICOM (Explicit VR Little Endian, uncompressed) of one grey image.

    Pixels are stored as given (the caller inverts for MONOCHROME1); BitsAllocated is 8 when
    bits_stored <= 8, else 16. The file goes to a temporary name in the same folder and is
    renamed over `path`, so a killed writer never leaves a half-written .dcm behind.

    Args:
        pixels: (H, W) integer array with values in [0, 2**bits_stored).
        bits_stored: 1..16.
    Raises:
        ValueError: pixels not 2-D unsigned integers in range, or bits_stored out of 1..16.
    """
    path = Path(path)
    pixels = np.asarray(pixels)
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1..16, got {bits_stored}")
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError(f"pixels must be a 2-D integer array, got {pixels.dtype} {pixels.shape}")
    if pixels.size and (pixels.min() < 0 or pixels.max() >= 2 ** bits_stored):
        raise ValueError(f"pixel values {pixels.min()}..{pixels.max()} do not fit "
                         f"{bits_stored} unsigned bits")
    stored = pixels.astype(np.uint8 if bits_stored <= 8 else np.uint16)
    sop_class = _SOP_CLASS.get(modality, _SECONDARY_CAPTURE)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.PatientSex = patient_sex
    ds.PatientAge = patient_age
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    # DS holds at most 16 characters: auto_format rounds e.g. 3.874594594594595 to fit
    ds.PixelSpacing = [DSfloat(float(v), auto_format=True) for v in pixel_spacing[:2]]
    ds.set_pixel_data(stored, "MONOCHROME1" if monochrome1 else "MONOCHROME2", bits_stored,
                      generate_instance_uid=False)

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _short(err: BaseException) -> str:
    """The first line of an exception, for a one-line message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
