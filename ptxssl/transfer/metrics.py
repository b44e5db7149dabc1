"""The SIIM-ACR metric, image-level AUROC, and the post-processing tuned to maximise it.

SIIM-ACR scored a submission by the mean over test images of the Dice coefficient of the
predicted and true masks, with Dice defined as 1 when both masks are empty. Since ~78 % of
images are empty, that score rewards saying "nothing here" as much as outlining a
pneumothorax, so the positive-only Dice is reported beside it.

Post-processing, as the competition's solutions did it: threshold the probability map, then
drop connected components smaller than a minimum area (spurious specks on an empty image
cost a whole 1.0). The minimum area is a fraction of the image, not a pixel count, so a
value tuned at one resolution keeps its meaning at another: kernels used 2,048-3,500 px at
1024 x 1024, i.e. 0.2-0.33 % of the image.

All arrays are numpy; masks are (N, H, W) bool (anything nonzero counts as foreground).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())  # 0.1 .. 0.9
DEFAULT_AREA_FRACTIONS = (0.0, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005)  # 0 .. 0.5 %
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as cv2.connectedComponents' default


def _stack(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) or (H, W), got shape {a.shape}")
    return a


def dice_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, H, W) x (N, H, W) -> (N,) Dice; 1.0 when both masks are empty, 0.0 when one is."""
    pred, truth = _stack(pred, "pred") != 0, _stack(truth, "truth") != 0
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape")
    inter = np.logical_and(pred, truth).sum(axis=(1, 2), dtype=np.int64)  # (N,)
    total = pred.sum(axis=(1, 2), dtype=np.int64) + truth.sum(axis=(1, 2), dtype=np.int64)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def siim_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """The SIIM-ACR leaderboard score: mean per-image Dice (empty vs empty = 1)."""
    return float(dice_per_image(pred, truth).mean())


def positive_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean Dice over the images whose true mask is non-empty (NaN when there are none)."""
    truth = _stack(truth, "truth") != 0
    positive = truth.any(axis=(1, 2))
    if not positive.any():
        return float("nan")
    return float(dice_per_image(_stack(pred, "pred")[positive], truth[positive]).mean())


def image_auroc(probs: np.ndarray, truth: np.ndarray) -> float:
    """AUROC of "this image has a pneumothorax", scoring each image by its maximum probability.

    The maximum, not the mean: a pneumothorax is a local finding, and one confidently
    segmented region is the evidence; a mean would dilute it by the image area and rank a
    large faint haze above a small certain one. NaN when all images are one class.
    """
    probs, truth = _stack(probs, "probs"), _stack(truth, "truth") != 0
    label = truth.any(axis=(1, 2))
    if label.all() or not label.any():
        return float("nan")
    return float(roc_auc_score(label, probs.reshape(len(probs), -1).max(axis=1)))


def _components(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label 8-connected components of each image separately: (labels (N,H,W), sizes)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _EIGHT  # no connection across the image axis
    labels, _ = ndimage.label(binary, structure=structure)
    return labels, np.bincount(labels.ravel())  # sizes[0] is the background


def postprocess(prob: np.ndarray, threshold: float, min_area_fraction: float) -> np.ndarray:
    """Threshold (prob > threshold), then drop components smaller than
    min_area_fraction x H x W pixels.

    Shape: (H, W) -> (H, W) bool, or (N, H, W) -> (N, H, W) bool.
    """
    prob = np.asarray(prob)
    single = prob.ndim == 2
    probs = _stack(prob, "prob")
    labels, sizes = _components(probs > threshold)
    keep = sizes >= min_area_fraction * probs.shape[1] * probs.shape[2]
    keep[0] = False
    mask = keep[labels]
    return mask[0] if single else mask


def tune_postprocess(probs: np.ndarray, truth: np.ndarray,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     area_fractions: Sequence[float] = DEFAULT_AREA_FRACTIONS) -> dict:
    """Grid-search (threshold, min_area_fraction) maximising `siim_score`.

    Call it on validation predictions only; tuning on the test split would inflate the
    reported score. Components are labelled once per threshold and reused for every area.
    Ties keep the first grid point (lowest threshold, then smallest area).

    Returns:
        {"threshold", "min_area_fraction", "score"} (floats).
    """
    probs, truth = _stack(probs, "probs"), _stack(truth, "truth") != 0
    pixels = probs.shape[1] * probs.shape[2]
    best = {"threshold": float("nan"), "min_area_fraction": float("nan"), "score": -1.0}
    for t in thresholds:
        labels, sizes = _components(probs > t)
        for a in area_fractions:
            keep = sizes >= a * pixels
            keep[0] = False
            score = siim_score(keep[labels], truth)
            if score > best["score"]:
                best = {"threshold": float(t), "min_area_fraction": float(a), "score": score}
    return best


def evaluate(probs: np.ndarray, truth: np.ndarray, threshold: float,
             min_area_fraction: float) -> dict:
    """Post-process `probs` and score them against `truth`.

    Returns:
        {"siim_dice", "positive_dice", "image_auroc", "n_images", "n_positive",
        "threshold", "min_area_fraction"}.
    """
    probs, truth = _stack(probs, "probs"), _stack(truth, "truth") != 0
    pred = postprocess(probs, threshold, min_area_fraction)
    return {"siim_dice": siim_score(pred, truth), "positive_dice": positive_dice(pred, truth),
            "image_auroc": image_auroc(probs, truth), "n_images": len(truth),
            "n_positive": int(truth.any(axis=(1, 2)).sum()), "threshold": float(threshold),
            "min_area_fraction": float(min_area_fraction)}
