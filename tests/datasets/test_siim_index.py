"""SIIM index: DICOMs found recursively, joined to the RLE CSV by unique ImageId."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptxssl.datasets.siim import LABEL_FILES, index_siim
from ptxssl.errors import UserError

REAL_UID = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"


def touch_dicom(root: Path, uid: str, study: str = "1.2.3") -> Path:
    """An empty <uid>.dcm in Kaggle's study/series nesting (the index never reads pixels)."""
    path = root / "dicom-images-train" / study / f"{study}.9" / f"{uid}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write_csv(path: Path, header: str, rows: list[tuple[str, str]], bom: bool = False) -> Path:
    text = header + "\n" + "".join(f"{a},{b}\n" for a, b in rows)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


ROWS = [
    ("1.1", "-1"),
    ("1.2", "10 5 20 5"),           # two pneumothoraces: two rows, both kept
    ("1.2", " 100 3"),
    ("1.3", "-1"),
    ("1.3", "-1"),                  # exact duplicate row
    ("1.4", "7 7"),                 # not on disk
    ("1.5", "-1"),                  # conflicting rows: the mask wins
    ("1.5", "1 2"),
]


@pytest.fixture
def fake_siim(tmp_path: Path) -> Path:
    write_csv(tmp_path / "train-rle.csv", "ImageId, EncodedPixels", ROWS)
    for i, uid in enumerate(["1.1", "1.2", "1.3", "1.5", "9.9"]):  # 9.9 has no CSV row
        touch_dicom(tmp_path, uid, study=f"2.{i}")
    return tmp_path


def test_groups_rows_by_image(fake_siim: Path) -> None:
    index = index_siim(fake_siim)
    assert index.kind == "siim" and index.has_masks and index.label_names == ["Pneumothorax"]
    by_id = {r.image_id: r for r in index.records}
    assert [r.image_id for r in index.records] == ["1.1", "1.2", "1.3", "1.5"]
    assert by_id["1.2"].rles == ("10 5 20 5", "100 3")
    assert by_id["1.1"].rles == () and by_id["1.3"].rles == ()
    assert by_id["1.5"].rles == ("1 2",)
    for r in index.records:
        assert r.labels.dtype == np.float32 and r.labels.shape == (1,)
        assert r.labels[0] == (1.0 if r.rles else 0.0)
        assert r.patient_id == "" and r.split is None
        assert r.path.is_file() and r.path.stem == r.image_id
    notes = " ".join(index.notes)
    assert "1 of 5 labelled images" in notes and "1.4" in notes      # CSV row with no DICOM
    assert "1 DICOMs on disk have no row" in notes and "9.9" in notes
    assert "1 exact duplicate" in notes and "both a '-1' row and a mask" in notes


@pytest.mark.parametrize("header, bom", [("ImageId, EncodedPixels", False),
                                         ("ImageId,EncodedPixels", False),
                                         ("fname,mask", True)])
def test_header_spellings(tmp_path: Path, header: str, bom: bool) -> None:
    write_csv(tmp_path / "train-rle.csv", header, [(" 1.1 ", " -1"), ("1.2", " 5 6 ")], bom=bom)
    touch_dicom(tmp_path, "1.1")
    touch_dicom(tmp_path, "1.2")
    index = index_siim(tmp_path)
    assert [(r.image_id, r.rles) for r in index.records] == [("1.1", ()), ("1.2", ("5 6",))]


def test_label_file_choice(tmp_path: Path) -> None:
    touch_dicom(tmp_path, "1.1")
    write_csv(tmp_path / "train-rle-sample.csv", "fname,mask", [("1.1", "-1")])
    write_csv(tmp_path / "stage_2_train.csv", "ImageId,EncodedPixels", [("1.1", "3 4")])
    assert index_siim(tmp_path).records[0].rles == ("3 4",)     # stage_2 before the sample
    other = write_csv(tmp_path / "mine.csv", "ImageId,EncodedPixels", [("1.1", "8 9")])
    assert index_siim(tmp_path, labels_csv=other).records[0].rles == ("8 9",)


def test_missing_label_file(tmp_path: Path) -> None:
    touch_dicom(tmp_path, "1.1")
    with pytest.raises(UserError, match="train-rle.csv") as err:
        index_siim(tmp_path)
    assert str(tmp_path) in str(err.value) and all(n in str(err.value) for n in LABEL_FILES)
    with pytest.raises(UserError, match="nope.csv"):
        index_siim(tmp_path, labels_csv=tmp_path / "nope.csv")


def test_missing_columns(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "train-rle.csv", "ImageId,Mask_RLE", [("1.1", "-1")])
    with pytest.raises(UserError) as err:
        index_siim(tmp_path)
    msg = str(err.value)
    assert str(csv) in msg and "Mask_RLE" in msg and "EncodedPixels" in msg


def test_root_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing"):
        index_siim(tmp_path / "missing")


def test_real_csv_with_the_real_dicom(shared_data: Path) -> None:
    index = index_siim(shared_data / "siim")
    assert [r.image_id for r in index.records] == [REAL_UID]
    assert index.records[0].rles == () and index.records[0].labels[0] == 0.0
    assert index.records[0].path.name == f"{REAL_UID}.dcm"
    assert any("12,046 of 12,047 labelled images" in n for n in index.notes)


def test_real_csv_at_full_scale(tmp_path: Path, shared_data: Path) -> None:
    """All 12,047 real ImageIds on disk: multi-mask merging on the real rows."""
    csv = shared_data / "siim" / "train-rle.csv"
    ids = pd.read_csv(csv, dtype=str).iloc[:, 0].str.strip().unique()
    folder = tmp_path / "dcm"
    folder.mkdir()
    for uid in ids:
        (folder / f"{uid}.dcm").touch()
    index = index_siim(tmp_path, labels_csv=csv)
    n_masks = np.array([len(r.rles) for r in index.records])
    assert len(index.records) == 12_047
    assert (n_masks == 0).sum() == 12_047 - 2_669 and (n_masks > 0).sum() == 2_669
    assert (n_masks > 1).sum() == 624 and n_masks.sum() == 3_576
    assert [r.image_id for r in index.records] == sorted(ids)
    assert not any("no DICOM" in n for n in index.notes)


def test_real_sample_csv_agrees_with_full_csv(tmp_path: Path, shared_data: Path) -> None:
    """Kaggle's BOM `fname,mask` sample gives the same masks as train-rle.csv."""
    sample = shared_data / "siim" / "train-rle-sample.csv"
    uids = [line.split(",")[0] for line in sample.read_text("utf-8-sig").splitlines()[1:]]
    for uid in uids:
        touch_dicom(tmp_path, uid)
    index = index_siim(tmp_path, labels_csv=sample)
    assert len(index.records) == 10 and sum(bool(r.rles) for r in index.records) == 5
    full = {r.image_id: r.rles for r in index_siim(tmp_path, shared_data / "siim" / "train-rle.csv").records}
    assert {r.image_id: r.rles for r in index.records} == full


def test_candid_layout_from_synth_prepares_like_siim(tmp_path):
    """CANDID-PTX: flat DICOMs named by SOPInstanceUID, Pneumothorax_reports.csv with several rows
    per image; the cache's masks equal SIIM-style decoding of the merged rows."""
    import h5py

    from ptxssl.datasets.cache import prepare
    from ptxssl.datasets.images import letterbox_mask, read_image
    from ptxssl.datasets.rle import merge_siim
    from ptxssl.datasets.siim import read_siim_csv
    from ptxssl.datasets.synth import synthesize

    synthesize(tmp_path / "raw", count=24, size=64, positive_fraction=0.5, formats=("candid",), progress=False)
    root = tmp_path / "raw" / "candid"
    assert sorted(p.parent.name for p in root.rglob("*.dcm")) == ["dataset"] * 24  # flat
    rows = read_siim_csv(root / "Pneumothorax_reports.csv")
    summary = prepare(root, "candid", tmp_path / "c.h5", size=32, workers=1, progress=False)
    assert summary["images"] == 24
    with h5py.File(tmp_path / "c.h5", "r") as h5:
        ids, masks, labels = h5["ids"].asstr()[:], h5["masks"][:], h5["labels"][:, 0]
        assert h5.attrs["kind"] == "candid"
    for i, uid in enumerate(ids):
        rles = [r for r in rows.loc[rows["image_id"] == uid, "rle"] if r != "-1"]
        assert labels[i] == (1.0 if rles else 0.0)
        image, _ = read_image(root / "dataset" / f"{uid}.dcm")
        expected = letterbox_mask(merge_siim(rles, *image.shape, image_id=uid), 32)
        np.testing.assert_array_equal(masks[i], expected)
    assert labels.sum() >= 6


def test_absolute_rle_variant_and_bad_variant(tmp_path):
    from ptxssl.datasets.rle import encode_absolute, merge_siim

    mask = np.zeros((8, 6), np.uint8)
    mask[2:5, 1] = mask[6, 3:6] = 1
    rle = encode_absolute(mask, column_major=True)
    np.testing.assert_array_equal(merge_siim([rle, "-1"], 8, 6, variant="absolute"), mask)
    try:  # read as relative offsets, the same string means something else (or nothing valid)
        other = merge_siim([rle], 8, 6, variant="siim")
    except UserError:
        other = None
    assert other is None or not np.array_equal(other, mask)
    with pytest.raises(UserError, match="--rle"):
        merge_siim([rle], 8, 6, variant="coco")
