"""Index of NIH ChestX-ray14: PNGs anywhere under the folder joined to Data_Entry_2017.csv.

The release spreads 112,120 PNGs over images_001/images ... images_012/images (mirrors
often flatten them into images/), so files are found by one walk and matched by name.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ptxssl.datasets.indexing import (first_by_name, preview, read_label_csv, require_columns,
                                    require_dir, scan_files)
from ptxssl.datasets.labels import NIH_FINDINGS
from ptxssl.datasets.records import Index, Record
from ptxssl.errors import UserError

# the v2020 file first: it is the corrected re-release (same labels, a header whose
# "OriginalImage[Width,Height]" splits into two columns -- harmless, those are not read)
LABEL_FILES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TEST_LIST = "test_list.txt"
REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
OPTIONAL = ("Follow-up #", "View Position")
NO_FINDING = "No Finding"


def find_labels_csv(root: Path) -> Path:
    """The NIH label file in `root` (either release name)."""
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise UserError(f"no ChestX-ray14 label file in {root}: expected {' or '.join(LABEL_FILES)}")


def parse_findings(findings: pd.Series, csv_path: Path) -> np.ndarray:
    """Multi-hot (N, 14) float32 over NIH_FINDINGS from "A|B" strings.

    "No Finding" is all zeros; a blank cell is unknown (all NaN) since NIH always writes a
    finding or "No Finding". An unknown name is a UserError: silently dropping it would
    turn a typo (or another dataset's vocabulary) into a negative label.
    """
    codes, combos = pd.factorize(findings.fillna("").astype(str), sort=False)
    # ~800 distinct combinations among 112,120 rows: parse each once, then gather
    col = {name: k for k, name in enumerate(NIH_FINDINGS)}
    table = np.zeros((len(combos), len(NIH_FINDINGS)), np.float32)
    for i, combo in enumerate(combos):
        parts = [p.strip() for p in combo.split("|") if p.strip()]
        if not parts:
            table[i] = np.nan
        for part in parts:
            if part in col:
                table[i, col[part]] = 1.0
            elif part != NO_FINDING:
                raise UserError(f"unknown finding name {part!r} in {csv_path} (Finding Labels); "
                                f"known: {NO_FINDING}, {', '.join(NIH_FINDINGS)}")
    labels = table[codes]
    return labels


def read_test_list(root: Path) -> set[str]:
    """Image names of NIH's official test split (test_list.txt), or an empty set."""
    path = root / TEST_LIST
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def index_chestxray14(root: Path) -> Index:
    """Index the ChestX-ray14 PNGs under `root` that have a row in the label file.

    Returns:
        An Index with labels (14,) over NIH_FINDINGS, patient_id = "Patient ID", and
        split "test" for images in root/test_list.txt (NIH's patient-level official split).
    """
    root = require_dir(root, "ChestX-ray14 folder")
    csv_path = find_labels_csv(root)
    frame = read_label_csv(csv_path, dtype=str, keep_default_na=False, index_col=False,
                           usecols=lambda c: str(c).strip() in REQUIRED + OPTIONAL)
    require_columns(frame, csv_path, REQUIRED)
    names = frame["Image Index"].str.strip()
    dup = names.duplicated()
    frame, names = frame[~dup], names[~dup]

    files = scan_files(root, (".png",))
    by_name, dup_files = first_by_name(files, os.path.basename)
    on_disk = names.isin(list(by_name)).to_numpy()
    all_labels = parse_findings(frame["Finding Labels"], csv_path)  # validates every row
    labels, row_names = all_labels[on_disk], names[on_disk].tolist()
    patients = frame.loc[on_disk, "Patient ID"].str.strip().tolist()
    test = read_test_list(root)
    records = [Record(image_id=os.path.splitext(n)[0], path=root / by_name[n], patient_id=p,
                      labels=lab, split="test" if n in test else None)
               for n, p, lab in zip(row_names, patients, labels)]
    records.sort(key=lambda r: r.image_id)

    n_test = sum(r.split == "test" for r in records)
    notes = [f"{len(records):,} ChestX-ray14 images indexed from {csv_path.name} "
             f"({n_test:,} in the official test list{'' if test else ': no ' + TEST_LIST})."]
    if (~on_disk).any():
        notes.append(f"{int((~on_disk).sum()):,} of {len(frame):,} rows in {csv_path.name} have "
                     f"no PNG under {root} and are skipped (first: {preview(names[~on_disk])}).")
    unlabelled = sorted(set(by_name) - set(names))
    if unlabelled:
        notes.append(f"{len(unlabelled):,} PNGs on disk have no row in {csv_path.name} and are "
                     f"excluded (first: {preview(unlabelled)}).")
    if dup.any():
        notes.append(f"{int(dup.sum()):,} duplicate Image Index rows were dropped (first kept).")
    n_blank = int(np.isnan(labels[:, 0]).sum()) if len(labels) else 0
    if n_blank:
        notes.append(f"{n_blank:,} indexed rows have a blank Finding Labels cell: labels unknown (NaN).")
    if all((root / name).is_file() for name in LABEL_FILES):
        notes.append(f"Both {' and '.join(LABEL_FILES)} are present; {csv_path.name} was used.")
    if dup_files:
        notes.append(f"{len(dup_files):,} PNG names occur more than once under {root}; the first "
                     f"path in sorted order was used (first: {preview(dup_files)}).")
    return Index(kind="chestxray14", root=root, records=records,
                 label_names=list(NIH_FINDINGS), notes=notes)
