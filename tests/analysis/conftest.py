"""Planted embeddings files, and a tiny real cache for the pseudo-label round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptxssl.analysis.store import write_embeddings
from tests.analysis.planted import embeddings
from tests.helpers import synthetic_cache


@pytest.fixture(scope="session")
def emb_file(tmp_path_factory) -> Path:
    """600 planted embeddings with labels, splits, QC anomalies and a recon_error."""
    emb, _ = embeddings()
    return write_embeddings(tmp_path_factory.mktemp("emb") / "embeddings.h5", emb)


@pytest.fixture(scope="session")
def bare_emb_file(tmp_path_factory) -> Path:
    """The same points with only the required datasets (no labels, anomaly, latent, recon)."""
    import h5py

    emb, _ = embeddings()
    path = tmp_path_factory.mktemp("bare") / "bare.h5"
    with h5py.File(path, "w") as h5:
        h5["embeddings"] = emb.features
        h5.create_dataset("ids", data=emb.ids.astype(object), dtype=h5py.string_dtype())
    return path


@pytest.fixture
def fast_umap(monkeypatch):
    """Replace UMAP (a 15 s numba compile) by the first two coordinates: CLI and run tests
    check the files and wiring, test_plots checks UMAP itself."""
    from ptxssl.analysis import plots

    def fake(features, seed=0, n_neighbors=15, min_dist=0.1, sample=None):
        rows = np.arange(len(features)) if sample is None else np.sort(
            np.random.default_rng(seed).choice(len(features), sample, replace=False))
        return np.asarray(features[rows, :2], np.float32), rows

    monkeypatch.setattr(plots, "umap_2d", fake)


@pytest.fixture(scope="session")
def nih_cache(tmp_path_factory) -> Path:
    """A labelled ChestX-ray14-format cache: 48 images at 32 px."""
    return synthetic_cache(tmp_path_factory.mktemp("analysis_data"), "chestxray14", count=48, seed=6)
