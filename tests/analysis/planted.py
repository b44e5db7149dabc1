"""Planted data for analysis tests: Gaussian blobs whose true clusters and outliers are known."""
from __future__ import annotations

import numpy as np

from ptxssl.analysis.store import Embeddings


def blobs(n: int = 900, k: int = 6, dim: int = 24, sep: float = 8.0, seed: int = 0,
          centers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 points around k random centres (pairwise ~sep apart) and their (n,) labels."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.normal(size=(k, dim)) * sep / np.sqrt(2)
    truth = np.arange(n) % len(centers)
    return (centers[truth] + rng.normal(size=(n, centers.shape[1]))).astype(np.float32), truth


def embeddings(n: int = 600, seed: int = 0, outliers: int = 30) -> tuple[Embeddings, np.ndarray]:
    """A planted embeddings object: 4 blobs, two weak labels, splits, QC anomalies on the
    `outliers` rows pushed far from every blob, and a recon_error that is high on them.
    Returns it and the (n,) true blob of each row."""
    rng = np.random.default_rng(seed)
    x, truth = blobs(n, k=4, dim=16, seed=seed)
    outliers = min(outliers, n // 10)
    bad = rng.choice(n, size=outliers, replace=False)
    x[bad] += rng.normal(size=(outliers, x.shape[1])).astype(np.float32) * 4
    anomaly = np.full(n, "", dtype=object)
    anomaly[bad] = np.where(np.arange(outliers) % 2, "flipped", "inverted")
    labels = np.stack([truth == 0, truth == 1], axis=1).astype(np.float32)
    labels[::17, 1] = np.nan
    recon = rng.random(n).astype(np.float32)
    recon[bad] += 1.5
    split = np.where(np.arange(n) % 10 < 7, "train", np.where(np.arange(n) % 10 < 9, "val", "test"))
    emb = Embeddings(features=x, ids=np.array([f"img{i:04d}" for i in range(n)]), split=split, labels=labels,
                     label_names=["Effusion", "Mass"], anomaly=anomaly.astype(str), recon_error=recon,
                     attrs={"encoder": "planted", "method": "test", "n": n})
    return emb, truth
