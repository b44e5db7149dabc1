"""Anomaly scores rank planted outliers first, the threshold means what its percentile says,
and the outputs carry the numbers the CLI prints."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ptxssl.analysis.anomaly import AnomalyConfig, reference_rows, run_anomaly, score
from ptxssl.analysis.store import Embeddings, read_embeddings, write_embeddings
from ptxssl.errors import UserError
from tests.analysis.planted import embeddings


@pytest.mark.parametrize("method", ["gmm", "knn", "recon"])
def test_planted_outliers_score_highest(method, emb_file):
    emb = read_embeddings(emb_file)
    scores, ref = score(emb, AnomalyConfig(method=method, components=4))
    assert ref.sum() == (emb.split == "train").sum()
    assert roc_auc_score(emb.anomaly != "", scores) >= 0.95


@pytest.mark.parametrize("method", ["gmm", "knn"])
def test_new_normal_images_are_flagged_as_often_as_reference_ones(method, emb_file, tmp_path):
    """Reference images are scored out of sample, so a threshold from their scores flags
    unseen normal images at the same rate (measured with an in-sample GMM: 46 % vs 17 %)."""
    result = run_anomaly(emb_file, tmp_path, method, percentile=80)
    table = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    normal = table["anomaly"] == "normal"
    unseen = table.loc[normal & (table["reference"] == 0), "flagged"].mean()
    seen = table.loc[normal & (table["reference"] == 1), "flagged"].mean()
    assert abs(unseen - seen) <= 0.08, (unseen, seen)
    assert result["flagged_fraction_reference"] == pytest.approx(0.2, abs=0.01)
    assert result["labels"]["recall_at_threshold"] >= 0.9


def test_gmm_copes_with_a_demo_sized_reference(tmp_path):
    """64 images (46 in train) of 128-d and 6 full-covariance components: sklearn fails on
    128-d covariances from ~7 images each; only the leading components are kept instead."""
    emb, _ = embeddings(n=64)
    noise = np.random.default_rng(0).normal(size=(64, 112)).astype(np.float32)
    emb.features = np.concatenate([emb.features, noise], axis=1)  # (64, 128)
    path = write_embeddings(tmp_path / "small.h5", emb)
    result = run_anomaly(path, tmp_path / "out", "gmm")
    assert np.isfinite(result["threshold"]) and result["labels"]["auroc"] >= 0.8


def test_outputs_hold_scores_labels_and_detection_metrics(emb_file, tmp_path):
    result = run_anomaly(emb_file, tmp_path, "knn", k=3, percentile=90)
    table = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    assert list(table.columns) == ["image_id", "split", "score", "flagged", "reference", "anomaly"]
    assert set(table["anomaly"]) == {"normal", "flipped", "inverted"}
    assert ((table["score"] > result["threshold"]) == (table["flagged"] == 1)).all()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["labels"]["per_kind"]) == {"flipped", "inverted"}
    assert metrics["labels"]["auroc"] >= 0.95 and metrics["config"]["k"] == 3
    assert metrics["config"]["percentile"] == 90
    assert (tmp_path / "histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_reference_from_a_file_of_ids(emb_file, tmp_path):
    emb = read_embeddings(emb_file)
    (tmp_path / "ids.txt").write_text("\n".join(emb.ids[:50]) + "\nnot-an-image\n")
    pd.DataFrame({"image_id": emb.ids[100:130], "x": 1}).to_csv(tmp_path / "ids.csv", index=False)
    assert np.flatnonzero(reference_rows(emb, str(tmp_path / "ids.txt"))).tolist() == list(range(50))
    assert np.flatnonzero(reference_rows(emb, str(tmp_path / "ids.csv"))).tolist() == list(range(100, 130))
    assert reference_rows(emb, "all").all()


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "iforest"}, "unknown anomaly method 'iforest'; choose from gmm, knn, recon"),
    ({"reference": "holdout"}, "--reference 'holdout': not a split"),
    ({"percentile": 100}, "--percentile 100"),
    ({"method": "knn", "k": 0}, "--k 0"),
])
def test_bad_options_are_user_errors(kwargs, message, emb_file, tmp_path):
    with pytest.raises(UserError, match=message):
        run_anomaly(emb_file, tmp_path, **kwargs)
    assert not (tmp_path / "scores.csv").exists()


def test_recon_without_recon_error_names_the_file(bare_emb_file, tmp_path):
    with pytest.raises(UserError, match=f"{bare_emb_file}: has no recon_error.*AE/VAE"):
        run_anomaly(bare_emb_file, tmp_path, "recon", reference="all")


def test_a_split_the_file_lacks_is_a_user_error(bare_emb_file, tmp_path):
    with pytest.raises(UserError, match="--reference train: no train images.*use all or a file of ids"):
        run_anomaly(bare_emb_file, tmp_path, "knn")


def test_mirror_scorer_finds_flipped_images_a_density_score_misses(tmp_path):
    """Laterality as a small direction v: an image the right way round is base + v, its mirror
    (`embed --mirror`) a slightly different base - v; a flipped film is the other way. The
    spread of `base` hides v from a density score; the classifier the reference teaches itself
    with its own mirrors finds it."""
    rng = np.random.default_rng(0)
    n, dim = 300, 32
    v = np.zeros(dim)
    v[0] = 0.6  # 0.6 of a unit-variance feature: inside the bulk of normal films
    base = rng.normal(size=(n, dim))
    side = np.where(np.arange(n) % 10 == 0, -1.0, 1.0)  # every 10th film flipped
    features = base + side[:, None] * v
    mirror = base + 0.1 * rng.normal(size=(n, dim)) - side[:, None] * v
    split = np.where(np.arange(n) < 200, "train", "test")
    anomaly = np.where(side < 0, "flipped", "")
    emb = Embeddings(features=features.astype(np.float32), ids=np.array([f"i{i}" for i in range(n)]), split=split,
                     anomaly=anomaly, mirror=mirror.astype(np.float32))
    path = write_embeddings(tmp_path / "e.h5", emb)
    emb = read_embeddings(path)
    flipped = emb.anomaly == "flipped"
    mirror_scores, _ = score(emb, AnomalyConfig(method="mirror", pca=0))
    gmm_scores, _ = score(emb, AnomalyConfig(method="gmm", components=2, pca=0))
    assert roc_auc_score(flipped, mirror_scores) >= 0.95
    assert roc_auc_score(flipped, gmm_scores) < 0.75  # what made the mirror scorer worth having
    without = read_embeddings(write_embeddings(tmp_path / "plain.h5", Embeddings(emb.features, emb.ids, emb.split)))
    with pytest.raises(UserError, match="no mirror-image embeddings.*embed --mirror"):
        score(without, AnomalyConfig(method="mirror"))


def test_embed_mirror_writes_the_features_of_each_flipped_image(nih_cache, tmp_path):
    import torch

    from ptxssl.analysis.embed import embed_cache, load_embedder
    from ptxssl.datasets.torch_data import CacheDataset
    from ptxssl.encoders import grid

    emb = embed_cache("random", nih_cache, tmp_path / "e.h5", device="cpu", bn="as-is", with_grid=True,
                      with_mirror=True, progress=False)  # seed 0: the weights below
    torch.manual_seed(0)
    model, _ = load_embedder("random")
    x = torch.stack([CacheDataset(nih_cache)[i]["image"] for i in range(4)]).flip(-1)
    with torch.no_grad():
        # float32 convolutions in other batch sizes: well inside 1e-4 of features of order 1
        np.testing.assert_allclose(emb.mirror[:4], model.eval().embed(x).numpy(), atol=1e-4)
        np.testing.assert_allclose(emb.grid_mirror[:4], grid(model.encoder, x).numpy(), atol=1e-4)
    assert read_embeddings(tmp_path / "e.h5", features="grid").mirror.shape == emb.grid.shape
