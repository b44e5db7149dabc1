"""`transfer --task classify` and the cascade: metrics that recompute from the per-image CSV,
an encoder that really starts from the pretrained file, the F1-tuned threshold, and a
cascade that empties exactly the masks of images the classifier calls negative."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from sklearn.metrics import f1_score, roc_auc_score

from ptxssl.cli import cli
from ptxssl.datasets.dicom import read_dicom
from ptxssl.datasets.images import letterbox
from ptxssl.datasets.rle import decode_siim
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.encoders import NORMALIZATION, build_encoder, save_encoder
from ptxssl.transfer.cascade import cascade_scores
from ptxssl.transfer.classify import ImageClassifier, load_classifier, save_classifier, tune_threshold
from ptxssl.transfer.model import build_unet
from ptxssl.transfer.predict import predict_dicoms, run_planes
from ptxssl.transfer.run import resolve_config, transfer
from tests.helpers import assert_features_close, synthetic_cache
from tests.transfer.test_predict import _save, _write_dicoms
from tests.transfer.test_run import FAST, siim_cache  # noqa: F401 - the shared 48-image cache fixture

SIZE = 32


def _classifier_probs(model, images: np.ndarray) -> np.ndarray:
    """(N, S, S) grey [0, 1] -> (N,) probabilities, computed here without ptxssl's prediction code."""
    x = (torch.from_numpy(np.asarray(images, np.float32))[:, None] - NORMALIZATION["mean"]) / NORMALIZATION["std"]
    with torch.no_grad():
        return torch.sigmoid(model.eval()(x))[:, 0].numpy()


def _save_classifier(model, run, threshold: float):
    save_classifier(model, run, {"image_size": SIZE, "in_channels": 1, "arch": "resnet34", "threshold": threshold,
                                 "tta": "none", "encoder": {"init": "random"}})
    return run


@pytest.fixture(scope="module")
def classify_run(siim_cache, tmp_path_factory):  # noqa: F811
    """One classify run through the CLI: 2 epochs at 32 px on the 48-image cache."""
    run = tmp_path_factory.mktemp("classify") / "run"
    res = CliRunner().invoke(cli, ["transfer", "--task", "classify", "--data", str(siim_cache), "--out", str(run),
                                   "--image-size", "32", "--batch-size", "4", "--epochs", "2", "--workers", "0",
                                   "--patience", "0"])
    assert res.exit_code == 0, res.output
    assert "test image AUROC" in res.output
    return run


def test_classify_run_metrics_recompute_from_its_csv(classify_run, siim_cache):  # noqa: F811
    metrics = json.loads((classify_run / "metrics.json").read_text())
    assert metrics["task"] == "classify" and metrics["seed"] == 0 and metrics["best_epoch"] in (0, 1)
    assert {"labelled_images", "val_tuned", "encoder", "steps"} <= set(metrics)
    test = metrics["test"]
    assert set(test) == {"image_auroc", "precision", "recall", "f1", "n_images", "n_positive", "threshold"}
    assert test["threshold"] == metrics["val_tuned"]["threshold"]  # tuned on val, applied once to test
    scores = pd.read_csv(classify_run / "test_scores.csv", dtype={"image_id": str})
    assert list(scores.columns) == ["image_id", "probability", "label"]
    assert len(scores) == test["n_images"] == metrics["test_images"] and scores.label.sum() == test["n_positive"]
    assert test["image_auroc"] == roc_auc_score(scores.label, scores.probability)
    called = scores.probability >= test["threshold"]
    assert test["f1"] == pytest.approx(f1_score(scores.label, called, zero_division=np.nan), nan_ok=True)
    # the labels are the cache's: positive = non-empty mask
    data = CacheDataset(siim_cache, with_masks=True, split="test")
    truth = dict(zip(data.ids, (data[i]["mask"].amax().item() > 0 for i in range(len(data)))))
    assert [truth[i] for i in scores.image_id] == list(scores.label == 1)
    # the saved classifier (safetensors + json) is the one that was tested
    model, meta = load_classifier(classify_run)
    assert meta["threshold"] == test["threshold"] and meta["image_size"] == SIZE
    images = np.stack([data[i]["image"][0].numpy() for i in range(len(data))])
    probs = dict(zip(data.ids, _classifier_probs(model, images)))
    # one batch of every test image here, batches of the run's size there: float32 sums in another order
    assert_features_close([probs[i] for i in scores.image_id], scores.probability)


def test_classifier_encoder_starts_from_the_pretrained_file(siim_cache, tmp_path):  # noqa: F811
    torch.manual_seed(7)
    encoder = build_encoder(1)
    save_encoder(encoder, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    cfg = resolve_config(None, {"data": str(siim_cache), "out": str(tmp_path / "run"), **FAST, "task": "classify",
                                "encoder": str(tmp_path / "enc"), "max_steps": 0})
    metrics = transfer(cfg, progress=False)
    assert metrics["steps"] == 0 and metrics["encoder"]["init"] == "encoder"
    model, _ = load_classifier(tmp_path / "run")
    pretrained = load_file(str(tmp_path / "enc" / "encoder.safetensors"))
    assert pretrained.keys() == model.encoder.state_dict().keys()
    for key, value in pretrained.items():
        assert torch.equal(model.encoder.state_dict()[key], value), key


def test_resumed_classify_run_matches_an_uninterrupted_one(classify_run, siim_cache, tmp_path):  # noqa: F811
    options = {"data": str(siim_cache), "out": str(tmp_path / "run"), **FAST, "task": "classify"}
    first = transfer(resolve_config(None, {**options, "epochs": 1, "keep_checkpoints": True}), progress=False)
    resumed = transfer(resolve_config(None, options), resume=True, progress=False)  # epochs 2, as classify_run
    full = json.loads((classify_run / "metrics.json").read_text())
    assert first["epochs_run"] == 1 and resumed["steps"] == full["steps"] > first["steps"]
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    assert (tmp_path / "run" / "test_scores.csv").read_text() == (classify_run / "test_scores.csv").read_text()


def test_f1_threshold_on_hand_made_scores():
    # cuts: >=0.35 calls 3 TP + 1 FP (F1 6/7), the best; >=0.8 gives 4/5, >=0.2 gives 3/4
    tuned = tune_threshold(np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9]), np.array([0, 0, 1, 0, 1, 1], bool))
    assert tuned["threshold"] == pytest.approx(0.275) and tuned["f1"] == pytest.approx(6 / 7)
    assert (tuned["precision"], tuned["recall"]) == (0.75, 1.0)
    # a tie (all called: 4/6; only 0.8 called: 2/3) keeps the lower cut, the one with more recall
    tie = tune_threshold(np.array([0.2, 0.4, 0.6, 0.8]), np.array([1, 0, 0, 1], bool))
    assert tie["threshold"] == pytest.approx(0.1) and tie["recall"] == 1.0
    # on random scores, no threshold of a fine grid beats it
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    probs = np.clip(rng.normal(0.4 + 0.2 * labels, 0.15), 0, 1)
    called = probs[None, :] >= np.linspace(0, 1, 2001)[:, None]  # (T, N): every grid threshold
    tp, fp, fn = (called & labels).sum(1), (called & ~labels).sum(1), (~called & labels).sum(1)
    best = (2 * tp / (2 * tp + fp + fn)).max()
    assert tune_threshold(probs, labels)["f1"] == pytest.approx(best)


def test_predict_cascade_empties_exactly_the_images_called_negative(tmp_path):
    files = _write_dicoms(tmp_path / "dicoms")
    images = {sop: read_dicom(path)[0] for sop, path in files.items()}
    torch.manual_seed(0)
    seg = _save(build_unet("random")[0].eval(), tmp_path / "seg", threshold=0.0)  # every mask is the whole image
    torch.manual_seed(3)
    model = ImageClassifier(build_encoder(1))
    probs = dict(zip(images, _classifier_probs(model, np.stack([np.rint(letterbox(im, SIZE) * 255) / np.float32(255)
                                                                     for im in images.values()]))))
    low, mid = sorted(probs.values())[:2]
    cls = _save_classifier(model, tmp_path / "cls", threshold=float((low + mid) / 2))  # gates the lowest image
    plain = predict_dicoms(seg, tmp_path / "dicoms", tmp_path / "plain.csv", progress=False)
    summary = predict_dicoms(seg, tmp_path / "dicoms", tmp_path / "cascade.csv", progress=False, classifier=cls)
    assert (plain["positive"], summary["positive"], summary["gated"]) == (3, 2, 1)
    rles = pd.read_csv(tmp_path / "cascade.csv", dtype=str).set_index("ImageId").EncodedPixels
    for sop, image in images.items():
        mask = decode_siim(rles[sop], *image.shape)
        assert not mask.any() if probs[sop] == low else mask.all(), sop
    # through the CLI: the same file
    out = tmp_path / "cli.csv"
    res = CliRunner().invoke(cli, ["predict", "--model", str(seg), "--classifier", str(cls), str(tmp_path / "dicoms"),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 called negative by the classifier" in res.output
    assert out.read_text() == (tmp_path / "cascade.csv").read_text()
    # a segmentation run is not a classifier: a one-line error naming the folder
    bad = CliRunner().invoke(cli, ["predict", "--model", str(seg), "--classifier", str(seg), str(tmp_path / "dicoms"),
                                   "--out", str(tmp_path / "bad.csv")])
    assert bad.exit_code == 2 and "not a classifier run folder" in bad.stderr and str(seg) in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


def test_cascade_scores_on_hand_made_runs(siim_cache, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    seg = _save(build_unet("random")[0].eval(), tmp_path / "seg", threshold=0.0)  # every mask is the whole image
    torch.manual_seed(3)
    model = ImageClassifier(build_encoder(1))
    data = CacheDataset(siim_cache, with_masks=True, split="test")
    items = [data[i] for i in range(len(data))]
    truth = np.stack([it["mask"][0].numpy() > 0.5 for it in items])  # (N, 32, 32)
    label = truth.any(axis=(1, 2))
    probs = _classifier_probs(model, np.stack([it["image"][0].numpy() for it in items]))
    threshold = float(np.median(probs))
    cls = _save_classifier(model, tmp_path / "cls", threshold)
    got = cascade_scores(seg, cls, siim_cache)
    keep = probs >= threshold
    assert 0 < keep.sum() < len(keep) and label.any() and not label.all()
    full_dice = np.where(label, 2 * truth.sum(axis=(1, 2)) / (truth.sum(axis=(1, 2)) + SIZE * SIZE), 0.0)
    assert got["n_images"] == len(label) and got["gated"] == int((~keep).sum())
    seg_only, casc, clf = got["segmentation"], got["cascade"], got["classifier"]
    assert seg_only["siim_dice"] == pytest.approx(full_dice.mean()) and seg_only["recall"] == 1.0
    cascade_dice = np.where(keep, full_dice, ~label)  # gated: 1 on an empty truth, 0 on a missed pneumothorax
    assert casc["siim_dice"] == pytest.approx(cascade_dice.mean())
    assert casc["recall"] == pytest.approx(keep[label].mean()) and casc["f1"] == pytest.approx(f1_score(label, keep))
    assert clf["image_auroc"] == pytest.approx(roc_auc_score(label, probs))
    assert clf["f1"] == pytest.approx(f1_score(label, keep)) and "siim_dice" not in clf


def test_unknown_task_is_a_one_line_error(siim_cache, tmp_path):  # noqa: F811
    with pytest.raises(UserError, match="--task must be segment or classify"):
        transfer(resolve_config(None, {"data": str(siim_cache), "out": str(tmp_path / "x"), "task": "nope"}))
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(cli, ["transfer", "--task", "nope", "--data", str(siim_cache),
                                   "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "--task" in res.stderr
    assert "'nope'" in res.stderr and not (tmp_path / "y").exists()


def test_three_channel_classifier_records_its_planes_for_predict(tmp_path):
    cache = synthetic_cache(tmp_path / "data", "siim", count=32, seed=4, source_size=64, positive_fraction=0.5,
                            fractions=(0.5, 0.25, 0.25), channels="raw,clahe,he")
    transfer(resolve_config(None, {"data": str(cache), "out": str(tmp_path / "cls"), **FAST, "task": "classify",
                                   "in_channels": 3, "epochs": 1}), progress=False)
    _, meta = load_classifier(tmp_path / "cls")
    assert meta["channels"] == ["clahe", "he"]
    # predict letterboxes a film into the planes the cache holds: raw, clahe, he
    film = np.linspace(0, 1, 48 * 40, dtype=np.float32).reshape(48, 40) ** 2
    planes = run_planes([film], meta)
    assert planes.shape == (1, 3, SIZE, SIZE) and not np.allclose(planes[0, 0], planes[0, 1])
