"""Labels for a plain image folder: a CSV of an id column and categorical columns.

A hospital archive rarely has findings, but it has metadata: sex, projection (AP / PA),
modality (CR / DX), the scanner. Those are enough to ask whether an encoder's features see
anything (a probe of projection or sex) and to score clusters against something real. Each
categorical column becomes one-vs-rest binary labels named `column=value` (one label for a
two-valued column, since its two labels would be complements); an empty cell is unknown (NaN).
A `patient_id` column, when present, keeps each patient's images in one split.

Rows are matched to images by the folder's image id (the path without suffix), or, when the
CSV holds bare file names, by the file's stem (it must then be unique in the folder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ptxssl.datasets.indexing import preview, read_label_csv, require_columns
from ptxssl.datasets.records import Index
from ptxssl.errors import UserError

MAX_VALUES = 10  # a column with more distinct values is not taken as categorical unless named


def label_columns(frame: pd.DataFrame, skip: set[str]) -> list[str]:
    """The categorical columns of `frame`: text with 2..MAX_VALUES distinct non-empty values."""
    found = []
    for col in frame.columns:
        values = frame[col][frame[col] != ""]
        if col in skip or values.empty or pd.to_numeric(values, errors="coerce").notna().all():
            continue
        if 2 <= values.nunique() <= MAX_VALUES:
            found.append(col)
    return found


def binary_labels(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """(rows, K) float32 one-vs-rest labels (NaN where the cell is empty) and their names."""
    arrays, names = [], []
    for col in columns:
        values = sorted(v for v in frame[col].unique() if v != "")
        known = (frame[col] != "").to_numpy()
        for value in values[:1] if len(values) == 2 else values:
            arrays.append(np.where(known, (frame[col] == value).to_numpy(np.float32), np.nan))
            names.append(f"{col}={value}")
    return np.stack(arrays, axis=1).astype(np.float32), names


def attach_labels(index: Index, csv: Path, id_column: str = "image_id", columns: str = "") -> Index:
    """Give the records of a folder `index` the labels of `csv` (see the module docstring)."""
    frame = read_label_csv(csv, dtype=str, keep_default_na=False)
    require_columns(frame, csv, [id_column])
    frame[id_column] = frame[id_column].str.strip()
    repeated = frame[id_column][frame[id_column].duplicated()].tolist()
    if repeated:
        raise UserError(f"{csv}: {id_column} repeats ({preview(repeated)}); give one row per image")
    named = [c.strip() for c in columns.split(",") if c.strip()]
    require_columns(frame, csv, named)
    chosen = named or label_columns(frame, {id_column, "patient_id"})
    if not chosen:
        raise UserError(f"{csv}: no categorical column to use as labels (text with 2-{MAX_VALUES} values); "
                        "name them with --label-columns")
    labels, names = binary_labels(frame, chosen)
    by_id = {r.image_id: r for r in index.records}
    stems = {}
    for r in index.records:
        stems.setdefault(Path(r.image_id).name, []).append(r)
    matched = 0
    for row, image_id in enumerate(frame[id_column]):
        record = by_id.get(image_id) or (stems[image_id][0] if len(stems.get(image_id, [])) == 1 else None)
        if record is None:
            continue
        record.labels = labels[row]
        if "patient_id" in frame.columns and frame["patient_id"].iat[row]:
            record.patient_id = frame["patient_id"].iat[row].strip()
        matched += 1
    if not matched:
        raise UserError(f"{csv}: none of its {id_column} values names an image under {index.root} (e.g. "
                        f"{frame[id_column].iat[0]!r} vs {index.records[0].image_id!r}); check --id-column")
    for r in index.records:
        if r.labels is None:
            r.labels = np.full(len(names), np.nan, np.float32)
    index.label_names = names
    index.notes.append(f"labels from {csv}: {', '.join(names)} on {matched:,} of {len(index.records):,} images")
    return index
