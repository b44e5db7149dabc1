"""What every dataset index returns: one `Record` per unique image, plus a report.

An index only reads label files and lists the disk; decoding pixels is `prepare`'s job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Record:
    """One unique image of a source dataset.

    Attributes:
        image_id: the id stored in the cache (`ids`); SIIM: the SOPInstanceUID.
        path: the image file.
        patient_id: used to keep a patient's images in one split.
        labels: (K,) float32, 1/0, NaN = unknown; None when the source has no labels.
        rles: SIIM mask RLE strings of this image (several rows are merged); () = negative.
        split: an official split from the source ("test" for NIH's test_list), else None.
        anomaly: a quality-control label from the folder's qc_anomalies.csv ("flipped",
            "rotated", "inverted", ...); "" = a normal film or not recorded.
    """

    image_id: str
    path: Path
    patient_id: str
    labels: np.ndarray | None = None
    rles: tuple[str, ...] = ()
    split: str | None = None
    anomaly: str = ""


@dataclass
class Index:
    """The images of one source folder, in a stable order (sorted by image_id).

    Attributes:
        kind: "siim", "candid", "chestxray14", "chexpert" or "folder".
        root: the source folder.
        records: one per unique image found on disk.
        label_names: names of the `labels` columns ([] when there are none).
        has_masks: True for SIIM-style sources with pixel masks.
        rle: how the masks' RLE strings are written ("siim" or "absolute", see rle.RLE_VARIANTS).
        has_anomaly_labels: True when the folder has a qc_anomalies.csv (its labels are in
            the records' `anomaly`, and the cache stores them for the anomaly stage).
        notes: human-readable findings of the indexing (rows with no image on disk, ...),
            printed by `prepare` and stored in the cache's attributes.
    """

    kind: str
    root: Path
    records: list[Record]
    label_names: list[str] = field(default_factory=list)
    has_masks: bool = False
    rle: str = "siim"
    has_anomaly_labels: bool = False
    notes: list[str] = field(default_factory=list)
