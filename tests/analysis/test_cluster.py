"""Clustering recovers planted structure; DBSCAN's eps search hits a requested count from one
neighbour graph; metrics and labels.csv say what they should."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from ptxssl.analysis import dbscan as db
from ptxssl.analysis.cluster import CLUSTERERS, ClusterConfig, cluster, cluster_metrics, reduce, run_cluster
from ptxssl.analysis.dbscan import eps_search, knee_eps
from ptxssl.analysis.store import read_embeddings
from ptxssl.errors import UserError
from ptxssl.pretrain.methods.pseudo import read_pseudo_labels
from tests.analysis.planted import blobs


@pytest.fixture(scope="module")
def planted():
    return blobs(900, k=6, dim=24)


@pytest.mark.parametrize("method", sorted(CLUSTERERS))
def test_recovers_a_planted_mixture(method, planted):
    x, truth = planted
    n_clusters = None if method == "hdbscan" else 6  # hdbscan chooses its own count
    labels, _, summary = cluster(x, ClusterConfig(method=method, n_clusters=n_clusters))
    assert adjusted_rand_score(truth, labels) >= 0.9, summary
    assert summary["n_clusters"] == 6


@pytest.mark.parametrize("method,config", [("kmeans", {}), ("gmm", {}), ("gmm", {"covariance_type": "tied"}),
                                           ("dbscan", {})])
def test_chooses_the_planted_count_itself(method, config, planted):
    """Silhouette (kmeans), BIC (gmm) and the k-distance knee (dbscan) without --n-clusters."""
    x, truth = planted
    labels, _, summary = cluster(x, ClusterConfig(method=method, **config))
    assert summary["n_clusters"] == 6
    assert adjusted_rand_score(truth, labels) >= 0.9


def test_eps_search_lands_on_the_requested_count_from_one_neighbour_graph(monkeypatch):
    """Blobs in 3 close pairs: 6 clusters at a small eps, 3 (the pairs) at a larger one that
    needs the second, wider graph; on the way up, 3 clusters also appear at a tiny eps where
    most points are noise, which the search must not take."""
    rng = np.random.default_rng(1)
    pairs, shift = rng.normal(size=(3, 10)) * 12, np.eye(10)[0] * 4
    x, truth = blobs(900, centers=np.concatenate([pairs + shift, pairs - shift]), seed=1)
    x, _ = reduce(x, None)
    graphs, fits = [], []
    build, fit = db.NearestNeighbors.radius_neighbors_graph, db.DBSCAN.fit
    monkeypatch.setattr(db.NearestNeighbors, "radius_neighbors_graph",
                        lambda self, *a, **k: graphs.append(1) or build(self, *a, **k))
    monkeypatch.setattr(db.DBSCAN, "fit", lambda self, X, *a, **k: fits.append(self.metric) or fit(self, X, *a, **k))
    six, s6 = eps_search(x, 6, min_samples=10)
    assert len(set(six) - {-1}) == 6 and adjusted_rand_score(truth, six) >= 0.95
    assert len(graphs) == 1 and set(fits) == {"precomputed"} and len(fits) >= 16  # one graph, many eps
    three, s3 = eps_search(x, 3, min_samples=10)
    assert len(set(three) - {-1}) == 3 and adjusted_rand_score(truth % 3, three) >= 0.95
    assert (three == -1).mean() < 0.02 and s3["eps"] > s6["eps"]
    assert len(graphs) == 3  # stage 1, then one wider graph


def test_eps_search_reports_an_unreachable_count(planted):
    x, _ = reduce(planted[0], 10)
    labels, summary = eps_search(x, 60, min_samples=20)  # 900 points, 20 per core: 60 clusters cannot happen
    assert summary["n_clusters"] == len(set(labels) - {-1}) < 60
    assert "no eps gives 60 clusters" in summary["note"] and "noise" in summary["note"]


def test_knee_of_a_flat_then_steep_curve():
    curve = np.concatenate([np.linspace(1.0, 1.2, 90), np.linspace(3, 10, 10)])
    assert 1.15 <= knee_eps(curve) <= 1.2


def test_pca_by_int_or_explained_variance(planted):
    x, _ = planted
    reduced, info = reduce(x, 4)
    assert reduced.shape == (900, 4) and info["components"] == 4
    reduced, info = reduce(x, 0.9)
    assert info["explained_variance"] >= 0.9 and reduced.shape[1] == info["components"] < 24
    _, fewer = reduce(x, info["components"] - 1)
    assert fewer["explained_variance"] < 0.9  # the fewest components that explain 90 %


def test_metrics_count_noise_and_compare_with_labels(emb_file):
    emb = read_embeddings(emb_file)
    truth = np.arange(len(emb)) % 4  # the planted blobs
    labels = truth.copy()
    labels[:60] = -1  # 10 % noise
    m = cluster_metrics(labels, emb.features, emb)
    assert m["noise_fraction"] == 0.1 and m["n_clusters"] == 4 and sum(m["sizes"].values()) == 540
    assert m["silhouette"] > 0.3
    eff = m["agreement"]["Effusion"]  # Effusion = blob 0: clusters are pure for it
    assert eff["purity"] == 1.0 and eff["purity_baseline"] == 0.75 and eff["images"] == 540
    finding = m["agreement"]["finding"]  # blobs 2 and 3 are both "no finding": pure, but split in two
    assert finding["purity"] == 1.0 and finding["nmi"] < 0.95
    assert set(m["agreement"]) == {"Effusion", "Mass", "finding", "anomaly"}
    assert m["agreement"]["Mass"]["images"] < 540  # NaN labels are left out
    one = cluster_metrics(np.zeros(len(emb), int), emb.features, emb)
    assert one["silhouette"] is None and one["agreement"]["Effusion"]["nmi"] == 0


def test_run_cluster_writes_pseudo_labels_metrics_and_umap(emb_file, tmp_path, fast_umap):
    result = run_cluster(emb_file, tmp_path / "c", "kmeans", n_clusters=4, color_by="Mass")
    labels = read_pseudo_labels(tmp_path / "c" / "labels.csv")
    emb = read_embeddings(emb_file)
    assert list(labels.index) == list(emb.ids) and labels.nunique() == 4
    assert adjusted_rand_score(np.arange(len(emb)) % 4, labels.to_numpy()) >= 0.9
    saved = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert saved["n_clusters"] == 4 and saved["config"]["method"] == "kmeans" and saved["config"]["pca"] == 50
    assert (tmp_path / "c" / "umap.png").read_bytes()[:4] == b"\x89PNG"
    assert result["paths"]["labels"] == str(tmp_path / "c" / "labels.csv")


def test_dbscan_noise_is_minus_one_in_labels_csv(emb_file, tmp_path):
    run_cluster(emb_file, tmp_path, "dbscan", umap=False)
    frame = pd.read_csv(tmp_path / "labels.csv")
    assert list(frame.columns) == ["image_id", "label"] and (frame["label"] == -1).any()  # the planted outliers
    assert not (tmp_path / "umap.png").exists()


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "spectral"}, "unknown clustering method 'spectral'; choose from dbscan, gmm, kmeans, hdbscan"),
    ({"method": "hdbscan", "n_clusters": 3}, "--n-clusters does not apply to hdbscan"),
    ({"method": "gmm", "covariance_type": "round"}, "--covariance-type 'round'"),
    ({"method": "gmm", "pca": "lots"}, "--pca 'lots'"),
    ({"method": "kmeans", "n_clusters": 10_000}, "--n-clusters 10000: must be between 1"),
    ({"method": "gmm", "color_by": "Hernia"}, "--color-by 'Hernia'.*choose from Effusion, Mass"),
])
def test_bad_options_are_user_errors(kwargs, message, emb_file, tmp_path):
    with pytest.raises(UserError, match=message):
        run_cluster(emb_file, tmp_path, umap=False, **kwargs)
    assert not (tmp_path / "labels.csv").exists()
