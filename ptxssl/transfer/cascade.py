"""The detection cascade: a classifier decides whether an image has a pneumothorax at all, and
only the images it calls positive keep the segmentation model's mask.

On the SIIM score an empty truth scores 1 only for an empty prediction, so every false alarm
on one of the ~78 % empty images costs a whole point; a classifier trained for the image-level
question can silence those before the UNet speaks. `predict --classifier` applies the gate to
DICOMs; `cascade_scores` measures segmentation-only, classifier-only and the cascade on one
split of a cache, with one image-level truth (the cache's labels[:, 0]) for all three.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.engine.device import inference_setup, resolve_device
from ptxssl.transfer.classify import load_classifier, score
from ptxssl.transfer.metrics import binarise, dice_per_image, gate, image_auroc, image_detection
from ptxssl.transfer.model import load_model
from ptxssl.transfer.predict import cache_masks, postprocess_params, predict_cache
from ptxssl.transfer.protocol import run_batch_size, run_rows


def _image_level(image_score: np.ndarray, called: np.ndarray, label: np.ndarray) -> dict:
    return {"image_auroc": image_auroc(image_score[:, None, None], label[:, None, None]),
            **image_detection(called[:, None, None], label[:, None, None])}


def cascade_scores(seg_run: str | Path, cls_run: str | Path, cache: str | Path, split: str = "test",
                   batch_size: int | None = None, device: str = "auto", precision: str = "auto") -> dict:
    """Segmentation-only vs classifier-only vs cascade on `split` of `cache`.

    Each model sees the cache images at its own size with its own TTA and tuned rule (the
    UNet's post-processing, the classifier's threshold). Image-level truth is the cache's
    labels[:, 0] for all three rows; Dice is against the masks at the UNet's size.

    Returns:
        {"split", "n_images", "n_positive", "gated" (images the classifier called negative),
        "segmentation": {"siim_dice", "positive_dice", "image_auroc", "precision", "recall", "f1"},
        "classifier": {"image_auroc", "precision", "recall", "f1", "threshold"} (no SIIM score:
        a classifier draws no masks), "cascade": like "segmentation"}. An image's score for
        AUROC: segmentation, its maximum probability; classifier, its probability; cascade,
        the segmentation maximum where the classifier passes the image, else 0. An image is
        called positive by segmentation when its post-processed mask is non-empty, by the
        cascade when the classifier passes it too.
    Raises:
        UserError: bad run folders, or runs that split the cache differently.
    """
    device = resolve_device(device)
    precision = inference_setup(device, precision)
    unet, seg_meta = load_model(seg_run)
    classifier, cls_meta = load_classifier(cls_run)
    unet.to(device), classifier.to(device)
    rows = run_rows(seg_run, cache, split)
    if not np.array_equal(rows, run_rows(cls_run, cache, split)):
        raise UserError(f"{seg_run} and {cls_run} split {cache} differently (--resplit / --folds), so their "
                        f"{split} images differ; compare runs made with the same split options")
    data = CacheDataset(cache, with_masks=True, rows=rows, channels=True)
    if data.labels is None or not len(data):
        raise UserError(f"{cache}: no image labels or no {split} images; pass a SIIM cache")
    rule, threshold = postprocess_params(seg_meta, seg_run), float(cls_meta["threshold"])
    probs = predict_cache(unet, seg_meta, data, batch_size or run_batch_size(seg_run), precision)  # (N, s, s)
    truth = cache_masks(data, int(seg_meta["image_size"]))
    pred = binarise(probs, *rule)
    d = {"dice": dice_per_image(pred, truth), "called": pred.any(axis=(1, 2)), "max": probs.max(axis=(1, 2)),
         "prob": predict_cache(classifier, cls_meta, data, batch_size or run_batch_size(cls_run), precision),
         "label": data.labels[data.rows, 0] == 1}
    d["gated_dice"] = dice_per_image(gate(pred, d["prob"], threshold), truth)
    keep, label = d["prob"] >= threshold, d["label"]

    def masks(dice: np.ndarray) -> dict:
        return {"siim_dice": float(dice.mean()),
                "positive_dice": float(dice[label].mean()) if label.any() else float("nan")}

    classifier_only = score(d["prob"], label, threshold)
    return {"split": split, "n_images": len(label), "n_positive": int(label.sum()), "gated": int((~keep).sum()),
            "segmentation": {**masks(d["dice"]), **_image_level(d["max"], d["called"], label)},
            "classifier": {k: classifier_only[k] for k in ("image_auroc", "precision", "recall", "f1", "threshold")},
            "cascade": {**masks(d["gated_dice"]),
                        **_image_level(np.where(keep, d["max"], 0.0), d["called"] & keep, label)}}
