"""Bad inputs, generated on the spot: broken DICOMs, empty images, label files with the wrong
shape, and pickles that would run code if anything unpickled them.

Every maker writes into a folder the test owns and returns the path it wrote; nothing is
copied from elsewhere.
"""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# ---------------------------------------------------------------- DICOM


def truncated_dicom(good: Path, folder: Path, keep: float = 0.6) -> Path:
    """A copy of a good DICOM cut after `keep` of its bytes (the pixel data is incomplete)."""
    data = Path(good).read_bytes()
    path = Path(folder) / f"{generate_uid()}.dcm"
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def dicom_without_pixels(folder: Path) -> Path:
    """A valid Part-10 file with a patient/study header and image geometry but no PixelData."""
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
    ds.PatientID, ds.Modality = "nopixels", "CR"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored = 64, 64, 8, 8
    path = Path(folder) / f"{uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def not_a_dicom(folder: Path) -> Path:
    """A text file with a .dcm suffix."""
    path = Path(folder) / f"{generate_uid()}.dcm"
    path.write_text("this is a radiology report, not an image\n" * 20)
    return path


def empty_file(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    path.write_bytes(b"")
    return path


BAD_DICOMS = {"truncated": lambda good, folder: truncated_dicom(good, folder),
              "no-pixel-data": lambda good, folder: dicom_without_pixels(folder),
              "not-dicom": lambda good, folder: not_a_dicom(folder)}

# ---------------------------------------------------------------- label files


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def add_siim_rows(csv_path: Path, *rows: tuple[str, str]) -> None:
    """Append (ImageId, EncodedPixels) rows to a train-rle.csv."""
    write_rows(csv_path, read_rows(csv_path) + [list(r) for r in rows])


# ---------------------------------------------------------------- pickles that run code


class _Plant:
    """Unpickling this creates `marker` (it calls `open(marker, "w")`)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle(path: Path, marker: Path, torch_format: bool = False) -> Path:
    """A checkpoint-looking file whose unpickling would create `marker`.

    torch_format: write it with `torch.save` (a zip archive, what Lightning writes) instead of
    a bare pickle; both carry a state_dict-like dict around the payload.
    """
    payload = {"state_dict": {"conv1.weight": _Plant(marker)}, "epoch": 0, "global_step": 1,
               "pytorch-lightning_version": "2.6.6", "trap": _Plant(marker)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if torch_format:
        import torch

        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not Path(marker).exists()
    return path


def check_pickle_works(path: Path, marker: Path) -> None:
    """Prove the payload is live: a plain unpickle does create the marker (then remove it)."""
    import zipfile

    import torch

    if zipfile.is_zipfile(path):
        torch.load(path, weights_only=False)  # the unsafe load the library must never do
    else:
        pickle.loads(Path(path).read_bytes())
    assert Path(marker).exists()
    Path(marker).unlink()
