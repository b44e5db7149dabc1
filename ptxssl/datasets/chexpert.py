"""Index of CheXpert: JPEGs under the folder joined to train.csv / valid.csv.

Label values are 1 (positive), 0 (negative), -1 (uncertain) and blank (not mentioned in
the report). Blank is read as 0, the convention of the CheXpert paper (Irvin et al., 2019,
"CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert
Comparison", AAAI): a finding the radiologist did not mention is taken as absent. The
uncertain -1 follows a policy: "zeros" (U-Zeros), "ones" (U-Ones), "ignore" (NaN, to be
masked out of the loss).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ptxssl.datasets.indexing import preview, read_label_csv, require_columns, require_dir, scan_files
from ptxssl.datasets.labels import CHEXPERT_OBSERVATIONS
from ptxssl.datasets.records import Index, Record
from ptxssl.errors import UserError

UNCERTAINTY: dict[str, float] = {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}
# file -> official split of its records; valid.csv (234 radiologist-labelled studies) is the
# held-out test set, since CheXpert's own test set is not public
SPLIT_FILES: dict[str, str | None] = {"train": None, "valid": "test"}


def find_csv(root: Path, stem: str) -> Path | None:
    """root/<stem>.csv or root/<stem>.csv.gz, whichever exists."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (root / name).is_file():
            return root / name
    return None


def check_uncertainty(uncertainty: str) -> None:
    """Raise a UserError naming the option and the valid policies."""
    if uncertainty not in UNCERTAINTY:
        raise UserError(f"unknown uncertainty policy {uncertainty!r} (option uncertainty); "
                        f"choose one of {', '.join(UNCERTAINTY)}")


def parse_labels(frame: pd.DataFrame, uncertainty: str, csv_path: Path | str = "CSV") -> np.ndarray:
    """(N, 14) float32 over CHEXPERT_OBSERVATIONS: 1 -> 1, 0 -> 0, blank -> 0, -1 -> policy.

    Raises UserError for an unknown policy, a missing observation column, or a value other
    than 1 / 0 / -1 / blank.
    """
    check_uncertainty(uncertainty)
    require_columns(frame, csv_path, CHEXPERT_OBSERVATIONS)
    values = frame[list(CHEXPERT_OBSERVATIONS)].apply(pd.to_numeric, errors="coerce")
    values = values.to_numpy(np.float32, copy=True)  # (N, 14); blank -> NaN here
    raw_blank = frame[list(CHEXPERT_OBSERVATIONS)].isna().to_numpy()
    bad = (~np.isnan(values) & ~np.isin(values, (1.0, 0.0, -1.0))) | (np.isnan(values) & ~raw_blank)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UserError(f"{csv_path}: {int(bad.sum()):,} label cells are not 1, 0, -1 or blank "
                        f"(first: row {r + 2}, column {CHEXPERT_OBSERVATIONS[c]!r} = "
                        f"{frame[CHEXPERT_OBSERVATIONS[c]].iloc[r]!r})")
    values[np.isnan(values)] = 0.0
    values[values == -1.0] = UNCERTAINTY[uncertainty]
    return values


def _resolve(paths: pd.Series, on_disk: set[str]) -> pd.Series:
    """Each CSV Path as a path relative to root that exists, else NaN.

    The CSV names files as "CheXpert-v1.0-small/train/...": root may be the folder holding
    CheXpert-v1.0-small/ (Path as is) or that folder itself (first component stripped).
    """
    as_is = paths.where(paths.isin(on_disk))
    stripped = paths.str.replace(r"^[^/]*/", "", regex=True)
    return as_is.fillna(stripped.where(stripped.isin(on_disk)))


def index_chexpert(root: Path, uncertainty: str = "zeros", frontal_only: bool = True) -> Index:
    """Index the CheXpert images under `root` listed in train.csv (and valid.csv if present).

    Args:
        root: folder with train.csv[.gz] (and maybe valid.csv[.gz]) and the images.
        uncertainty: how -1 labels are read: "zeros", "ones" or "ignore" (NaN).
        frontal_only: keep only rows with Frontal/Lateral == "Frontal".

    Returns:
        An Index with labels (14,) over CHEXPERT_OBSERVATIONS, image_id = the image path
        relative to root without suffix, patient_id "patientNNNNN", split "test" for valid.csv.
    """
    check_uncertainty(uncertainty)  # before any I/O, so a typo fails fast
    root = require_dir(root, "CheXpert folder")
    csvs = {stem: find_csv(root, stem) for stem in SPLIT_FILES}
    if csvs["train"] is None:
        inside = sorted(p.parent.name for p in root.glob("*/train.csv*"))
        hint = f"; found one in subfolder {inside[0]!r}: pass that folder" if inside else ""
        raise UserError(f"no CheXpert label file in {root}: expected train.csv or train.csv.gz{hint}")
    on_disk = set(scan_files(root, (".jpg", ".jpeg", ".png")))

    records: list[Record] = []
    notes: list[str] = ["Blank CheXpert labels (not mentioned) were read as 0, "
                        f"uncertain (-1) labels by policy {uncertainty!r}."]
    for stem, csv_path in csvs.items():
        if csv_path is None:
            continue
        frame = read_label_csv(csv_path, dtype={"Path": str})
        require_columns(frame, csv_path, ["Path"] + (["Frontal/Lateral"] if frontal_only else []))
        labels = parse_labels(frame, uncertainty, csv_path)  # validates every row
        keep = np.ones(len(frame), bool)
        if frontal_only:
            view = frame["Frontal/Lateral"].astype("string").str.strip()
            keep = (view == "Frontal").to_numpy(dtype=bool, na_value=False)
        paths = frame["Path"].str.strip().str.replace("\\", "/", regex=False)
        rel = _resolve(paths, on_disk)
        found = keep & rel.notna().to_numpy()
        dup = rel.duplicated() & rel.notna()
        found &= ~dup.to_numpy()
        rel_found = rel[found]
        patients = rel_found.str.extract(r"(patient\d+)", expand=False).fillna("")
        split = SPLIT_FILES[stem]
        records += [Record(image_id=os.path.splitext(p)[0], path=root / p, patient_id=pid,
                           labels=lab, split=split)
                    for p, pid, lab in zip(rel_found.tolist(), patients.tolist(), labels[found])]
        missing = keep & rel.isna().to_numpy()
        notes.append(f"{csv_path.name}: {len(frame):,} rows, {int(found.sum()):,} indexed"
                     + (f", {int((~keep).sum()):,} lateral views skipped" if frontal_only else "")
                     + ".")
        if missing.any():
            notes.append(f"{int(missing.sum()):,} rows of {csv_path.name} have no image under "
                         f"{root} and are skipped (first: {preview(paths[missing])}).")
        if dup.any():
            notes.append(f"{int(dup.sum()):,} rows of {csv_path.name} repeat an image path; "
                         f"the first was kept.")
    records.sort(key=lambda r: r.image_id)
    return Index(kind="chexpert", root=root, records=records,
                 label_names=list(CHEXPERT_OBSERVATIONS), notes=notes)
