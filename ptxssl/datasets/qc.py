"""Quality-control anomalies: the wrong films a chest X-ray archive holds (flipped left-right,
rotated by 90 degrees, inverted grey scale), made on purpose so the anomaly stage can be scored.

`synth` gives its phantoms some; `plant` (`ptxssl plant`) gives them to any real folder, with
the answer key in `qc_anomalies.csv` (image_id, anomaly) that `prepare` reads into the cache.
"""
from __future__ import annotations

import numpy as np

QC_ANOMALIES: tuple[str, ...] = ("flipped", "rotated", "inverted")
QC_FILE = "qc_anomalies.csv"


def apply_anomaly(image: np.ndarray, masks: list[np.ndarray], anomaly: str | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Flip / rotate (by +-90 degrees, drawn from `rng`) / invert an (H, W) [0, 1] image;
    geometric changes move the masks with it. None or "": unchanged."""
    if anomaly == "flipped":
        return image[:, ::-1].copy(), [m[:, ::-1].copy() for m in masks]
    if anomaly == "rotated":
        k = int(rng.choice([1, 3]))
        return np.rot90(image, k).copy(), [np.rot90(m, k).copy() for m in masks]
    if anomaly == "inverted":
        return 1.0 - image, masks
    if anomaly:
        raise ValueError(f"unknown QC anomaly {anomaly!r}; expected one of {QC_ANOMALIES}")
    return image, masks
