"""Index of an unlabelled image archive: every image file under a folder.

A hospital's own archive has no label file: every image under the folder becomes a record,
and the patient id comes later from the DICOM header (`prepare` reads it).
"""
from __future__ import annotations

import os
from pathlib import Path

from ptxssl.datasets.folder_labels import attach_labels
from ptxssl.datasets.images import IMAGE_SUFFIXES
from ptxssl.datasets.indexing import first_by_name, preview, require_dir, scan_files
from ptxssl.datasets.records import Index, Record
from ptxssl.errors import UserError


def index_folder(root: Path, labels_csv: Path | None = None, id_column: str = "image_id",
                 label_columns: str = "") -> Index:
    """Index every image file under `root` (no masks; labels only from `labels_csv`, see
    `ptxssl.datasets.folder_labels`: categorical columns as one-vs-rest labels).

    image_id is the posix path relative to `root` without its suffix, which is unique
    across subfolders; when two files differ only by suffix (x.dcm and x.png) the first in
    sorted order is kept and the other is reported in the notes. patient_id is "" here:
    `prepare` fills it from the DICOM header, or uses the image id.
    """
    root = require_dir(root)
    rel_paths = scan_files(root, IMAGE_SUFFIXES)
    if not rel_paths:
        raise UserError(f"no image files found under {root} "
                        f"(looked for {', '.join(IMAGE_SUFFIXES)}, any case)")
    by_id, dups = first_by_name(rel_paths, lambda p: os.path.splitext(p)[0])
    records = [Record(image_id=i, path=root / p, patient_id="") for i, p in sorted(by_id.items())]
    notes = [f"{len(records):,} image files found under {root}."]
    if dups:
        notes.append(f"{len(dups):,} files share their path-without-suffix with another file "
                     f"and were skipped (first: {preview(dups)}).")
    index = Index(kind="folder", root=root, records=records, notes=notes)
    return index if labels_csv is None else attach_labels(index, Path(labels_csv), id_column, label_columns)
