"""Registry of dataset indexes: one name per source folder layout.

The CLI takes its `--kind` choices from SOURCES; adding a source is one module plus one line.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from ptxssl.datasets.chestxray14 import index_chestxray14
from ptxssl.datasets.chexpert import index_chexpert
from ptxssl.datasets.folder import index_folder
from ptxssl.datasets.indexing import preview, read_label_csv, require_columns, require_dir
from ptxssl.datasets.qc import QC_FILE
from ptxssl.datasets.records import Index
from ptxssl.datasets.siim import index_candid, index_siim
from ptxssl.errors import UserError

SOURCES: dict[str, Callable[..., Index]] = {
    "siim": index_siim,
    "candid": index_candid,
    "chestxray14": index_chestxray14,
    "chexpert": index_chexpert,
    "folder": index_folder,
}


def get_index(kind: str, root: Path, **options) -> Index:
    """Index `root` as a `kind` source; options go to that source's index function.

    Raises UserError for an unknown kind, a root that is not a folder, or an option the
    source does not take (each message lists the valid choices).
    """
    if kind not in SOURCES:
        raise UserError(f"unknown dataset kind {kind!r}; choose one of {', '.join(SOURCES)}")
    root = require_dir(root, f"{kind} dataset folder")
    fn = SOURCES[kind]
    accepted = [p for p in inspect.signature(fn).parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"option(s) {unknown} do not apply to kind {kind!r}; "
                        f"it takes {accepted or 'no options'}")
    return read_qc_anomalies(fn(root, **options))


def read_qc_anomalies(index: Index) -> Index:
    """Attach the folder's `qc_anomalies.csv` (image_id,anomaly), if it has one, to the records.

    The synthetic generator writes this file (flipped / rotated / inverted films); a user can
    write one for real data to measure the anomaly stage against known bad films.
    """
    path = index.root / QC_FILE
    if not path.is_file():
        return index
    frame = read_label_csv(path, dtype=str, keep_default_na=False)
    require_columns(frame, path, ["image_id", "anomaly"])
    known = {r.image_id: r for r in index.records}
    unknown = [i for i in frame["image_id"] if i not in known]
    if unknown:
        index.notes.append(f"{QC_FILE}: {len(unknown)} id(s) with no image, ignored ({preview(unknown)})")
    for image_id, anomaly in zip(frame["image_id"], frame["anomaly"]):
        if image_id in known:
            known[image_id].anomaly = anomaly.strip()
    index.has_anomaly_labels = True
    return index
