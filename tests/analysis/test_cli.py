"""`ptxssl cluster / anomaly / umap` from the command line (UMAP replaced by a fast stand-in),
and the pseudo-label round trip: cache -> embeddings -> cluster -> `pretrain --method pseudo`."""
from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ptxssl.analysis.store import Embeddings, write_embeddings
from ptxssl.cli import cli
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.pretrain.methods.pseudo import read_pseudo_labels


def _run(args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cluster_prints_config_and_metrics_and_writes_files(emb_file, tmp_path, fast_umap):
    out = tmp_path / "c"
    result = _run(["cluster", emb_file, "--method", "dbscan", "--n-clusters", "4", "--out", out,
                   "--color-by", "Effusion"])
    assert result.exit_code == 0, result.output
    assert "cluster: embeddings=" in result.output and "pca=10" in result.output
    assert "4 clusters of 600 images" in result.output and "vs Effusion" in result.output
    assert {p.name for p in out.iterdir()} == {"labels.csv", "metrics.json", "umap.png"}
    assert json.loads((out / "metrics.json").read_text())["fit"]["n_clusters"] == 4


def test_anomaly_prints_threshold_and_auroc(emb_file, tmp_path):
    result = _run(["anomaly", emb_file, "--method", "knn", "--k", "3", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert "95th percentile of 420 reference images" in result.output and "AUROC" in result.output
    assert {p.name for p in tmp_path.iterdir()} == {"scores.csv", "metrics.json", "histogram.png"}


def test_umap_command_writes_the_png(emb_file, tmp_path, fast_umap):
    result = _run(["umap", emb_file, "--color-by", "anomaly", "--sample", "100", "--out", tmp_path / "u.png"])
    assert result.exit_code == 0, result.output
    assert "sample=100" in result.output and (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,message", [
    (["cluster", "{bad}", "--out", "{tmp}"], "not an HDF5 file"),
    (["cluster", "{emb}", "--out", "{tmp}", "--color-by", "Hernia"], "--color-by 'Hernia'.*choose from Effusion"),
    (["cluster", "{emb}", "--out", "{tmp}", "--method", "spectral"], "Invalid value for '--method'"),
    (["cluster", "{emb}", "--out", "{tmp}", "--pca", "-3"], "--pca '-3'"),
    (["anomaly", "{bare}", "--method", "recon", "--reference", "all", "--out", "{tmp}"], "has no recon_error"),
    (["anomaly", "{emb}", "--features", "latent", "--out", "{tmp}"], "has no latent"),
    (["umap", "{emb}", "--color-by", "age", "--out", "{tmp}/u.png"], "--color-by 'age'.*anomaly, split"),
])
def test_bad_input_exits_2_with_one_line(args, message, emb_file, bare_emb_file, tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("not hdf5")
    paths = {"emb": emb_file, "bare": bare_emb_file, "bad": bad, "tmp": tmp_path / "out"}
    result = _run([a.format(**paths) for a in args])
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    if "Invalid value" not in message:
        assert len(result.output.strip().splitlines()[-1]) > 20 and result.output.count("Error:") == 1


def test_cluster_labels_train_a_pseudo_label_encoder(nih_cache, tmp_path, fast_umap):
    """labels.csv from `ptxssl cluster` is what `pretrain --method pseudo --labels` reads."""
    data = CacheDataset(nih_cache)
    rng = np.random.default_rng(0)
    truth = np.arange(len(data.all_ids)) % 3
    features = (np.eye(3)[truth] * 10 + rng.normal(size=(len(truth), 3))).astype(np.float32)
    with h5py.File(nih_cache) as h5:
        split = h5["split"].asstr()[:]
    emb_path = write_embeddings(tmp_path / "emb.h5", Embeddings(
        features=np.concatenate([features, rng.normal(size=(len(truth), 13)).astype(np.float32)], axis=1),
        ids=data.all_ids, split=split, labels=data.labels, label_names=data.label_names))
    result = _run(["cluster", emb_path, "--method", "kmeans", "--n-clusters", "3", "--out", tmp_path / "c"])
    assert result.exit_code == 0, result.output
    labels = read_pseudo_labels(tmp_path / "c" / "labels.csv")
    assert labels.nunique() == 3 and set(labels.index) == set(data.all_ids)
    result = _run(["pretrain", "--method", "pseudo", "--labels", tmp_path / "c" / "labels.csv",
                   "--data", nih_cache, "--out", tmp_path / "run", "--max-steps", "2", "--batch-size", "8",
                   "--image-size", "32", "--workers", "0", "--no-probe"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "encoder.safetensors").is_file()
