"""Index of SIIM-ACR Pneumothorax: DICOMs on disk joined to the RLE label CSV.

The CSV has one row per pneumothorax, so an image with several masks has several rows
(624 of 12,047 images in train-rle.csv): rows are grouped by ImageId and every RLE string is
kept. RLE is not decoded here (`rle.py` does that when `prepare` builds masks).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ptxssl.datasets.indexing import (first_by_name, preview, read_label_csv, require_dir,
                                    scan_files)
from ptxssl.datasets.records import Index, Record
from ptxssl.datasets.rle import RLE_VARIANTS
from ptxssl.errors import UserError

LABEL_FILES: tuple[str, ...] = ("train-rle.csv", "stage_2_train.csv", "train-rle-sample.csv")
CANDID_LABEL_FILES: tuple[str, ...] = ("Pneumothorax_reports.csv",)
# header spellings seen in the wild -> (id column, rle column); compared after stripping
_ID_NAMES = ("ImageId", "fname", "SOPInstanceUID")
_RLE_NAMES = ("EncodedPixels", "mask")


def find_labels_csv(root: Path, names: tuple[str, ...] = LABEL_FILES) -> Path:
    """The first of `names` present in `root`."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise UserError(f"no label file in {root}: expected one of {', '.join(names)} (or pass --labels-csv)")


def read_siim_csv(path: Path) -> pd.DataFrame:
    """Read the CSV into columns `image_id`, `rle` (stripped strings; "" for blank cells).

    Accepts `ImageId, EncodedPixels` (the real train-rle.csv, with a space),
    `ImageId,EncodedPixels` and Kaggle's sample `fname,mask` (UTF-8 BOM, " 175349 7 ..."
    values with a leading space).
    """
    frame = read_label_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    id_col = next((c for c in frame.columns if c in _ID_NAMES), None)
    rle_col = next((c for c in frame.columns if c in _RLE_NAMES), None)
    if id_col is None or rle_col is None:
        raise UserError(f"label file {path} has columns {list(frame.columns)}; expected "
                        f"ImageId and EncodedPixels (or Kaggle's fname and mask)")
    out = pd.DataFrame({"image_id": frame[id_col].str.strip(), "rle": frame[rle_col].str.strip()})
    return out[out["image_id"] != ""]


def group_rles(rows: pd.DataFrame) -> tuple[pd.Series, dict[str, int]]:
    """Group rows by image: Series image_id -> tuple of RLE strings ("-1"/blank dropped).

    Returns the Series (sorted by image_id) and counts for the notes: exact duplicate rows
    (dropped: the same mask twice would double-count instances), images with more than one
    mask, images listing both "-1" and a mask (the "-1" is ignored), blank RLE cells
    (read as negative).
    """
    dup_mask = rows.duplicated()
    rows = rows[~dup_mask]
    is_neg = rows["rle"].isin(["-1", ""])
    positive = rows[~is_neg]
    masks = positive.groupby("image_id", sort=False)["rle"].agg(tuple).to_dict()
    all_ids = sorted(rows["image_id"].unique())
    rles = pd.Series([masks.get(i, ()) for i in all_ids], index=all_ids, dtype=object)
    neg_ids = set(rows.loc[is_neg, "image_id"])
    counts = {
        "rows": int(len(rows) + dup_mask.sum()),
        "duplicates": int(dup_mask.sum()),
        "multi": int((positive["image_id"].value_counts() > 1).sum()),
        "conflict": int(len(neg_ids.intersection(rles.index[rles.map(len) > 0]))),
        "blank": int((rows["rle"] == "").sum()),
    }
    return rles, counts


def index_siim(root: Path, labels_csv: Path | None = None) -> Index:
    """Index the SIIM DICOMs under `root` (recursively) that have a row in the label CSV.

    Args:
        root: folder holding the DICOMs (any nesting; the file stem is the SOPInstanceUID)
            and, unless `labels_csv` is given, the label CSV.
        labels_csv: the label CSV; default: the first of LABEL_FILES found in `root`.

    Returns:
        An Index of one Record per unique image, labels (1,) = [Pneumothorax], rles = all its
        masks, patient_id "" (the DICOM header gives it in `prepare`).
    """
    return index_masks(root, labels_csv, "siim", LABEL_FILES, "siim")


def index_candid(root: Path, labels_csv: Path | None = None, rle: str = "siim") -> Index:
    """Index a CANDID-PTX release: DICOMs named by SOPInstanceUID and `Pneumothorax_reports.csv`
    (SOPInstanceUID, EncodedPixels, several rows per image for several masks, "-1" negative).
    `rle` says how EncodedPixels are written (see rle.RLE_VARIANTS)."""
    return index_masks(root, labels_csv, "candid", CANDID_LABEL_FILES, rle)


def index_masks(root: Path, labels_csv: Path | None, kind: str, label_files: tuple[str, ...],
                rle: str) -> Index:
    """Index DICOMs with RLE masks in a label CSV (SIIM-ACR and the layouts built like it)."""
    if rle not in RLE_VARIANTS:
        raise UserError(f"--rle {rle!r}: choose from {', '.join(RLE_VARIANTS)}")
    root = require_dir(root, f"{kind} folder")
    csv_path = Path(labels_csv) if labels_csv is not None else find_labels_csv(root, label_files)
    if not csv_path.is_file():
        raise UserError(f"label file {csv_path} does not exist; check --labels-csv")
    rles, counts = group_rles(read_siim_csv(csv_path))

    files = scan_files(root, (".dcm",))
    by_uid, dup_files = first_by_name(files, lambda p: os.path.splitext(os.path.basename(p))[0])
    on_disk = rles.index.isin(list(by_uid))
    found = rles[on_disk]
    pos, neg = np.array([1.0], np.float32), np.array([0.0], np.float32)
    records = [Record(image_id=uid, path=root / by_uid[uid], patient_id="",
                      labels=(pos if r else neg).copy(), rles=r)
               for uid, r in found.items()]

    n_pos = int(sum(1 for r in found if r))
    notes = [f"{len(records):,} {kind} images indexed from {csv_path.name} "
             f"({n_pos:,} with pneumothorax, {len(records) - n_pos:,} without)."]
    missing = rles.index[~on_disk]
    if len(missing):
        notes.append(f"{len(missing):,} of {len(rles):,} labelled images in {csv_path.name} have "
                     f"no DICOM under {root} and are skipped (normal for a partial download; "
                     f"first: {preview(missing)}).")
    unlabelled = sorted(set(by_uid) - set(rles.index))
    if unlabelled:
        notes.append(f"{len(unlabelled):,} DICOMs on disk have no row in {csv_path.name} and are "
                     f"excluded (first: {preview(unlabelled)}).")
    if counts["multi"]:
        notes.append(f"{counts['multi']:,} labelled images have several masks (rows merged into "
                     f"one record: {counts['rows']:,} rows -> {len(rles):,} images).")
    if counts["duplicates"]:
        notes.append(f"{counts['duplicates']:,} exact duplicate CSV rows were dropped.")
    if counts["conflict"]:
        notes.append(f"{counts['conflict']:,} images have both a '-1' row and a mask; "
                     f"the '-1' rows were ignored.")
    if counts["blank"]:
        notes.append(f"{counts['blank']:,} rows have a blank RLE and were read as negative (-1).")
    if dup_files:
        notes.append(f"{len(dup_files):,} DICOM file names occur more than once under {root}; "
                     f"the first path in sorted order was used (first: {preview(dup_files)}).")
    return Index(kind=kind, root=root, records=records, label_names=["Pneumothorax"],
                 has_masks=True, rle=rle, notes=notes)
