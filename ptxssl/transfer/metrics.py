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

The "triplet" rule of the winning SIIM-ACR solutions separates detection from outlining: an
image is called positive only if at least a minimum area of it exceeds a high (top)
threshold, and a positive image's mask is then drawn at a lower (bottom) threshold, so the
outline is not cut short by the strictness the empty/non-empty call needs. With a minimum
area of 0 every image passes the gate and the rule is plain thresholding at the bottom, so
the triplet grid contains the threshold-only choice.

An image is "called positive" when its post-processed mask is non-empty; image-level
precision, recall and F1 are of that call, at the operating point post-processing chose.

All arrays are numpy; masks are (N, H, W) bool (anything nonzero counts as foreground).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())  # 0.1 .. 0.9
DEFAULT_AREA_FRACTIONS = (0.0, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005)  # 0 .. 0.5 %
TRIPLET_TOPS = tuple(np.round(np.arange(0.5, 0.91, 0.05), 2).tolist())  # 0.5 .. 0.9
TRIPLET_BOTTOMS = tuple(np.round(np.arange(0.2, 0.61, 0.05), 2).tolist())  # 0.2 .. 0.6
POSTPROCESS_MODES = ("tuned", "fixed", "triplet")
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


def postprocess_triplet(prob: np.ndarray, top: float, min_area_fraction: float, bottom: float) -> np.ndarray:
    """The triplet rule: prob > bottom on images where at least min_area_fraction x H x W
    pixels exceed `top`, empty elsewhere; no component filtering.

    Shape: (H, W) -> (H, W) bool, or (N, H, W) -> (N, H, W) bool.
    """
    prob = np.asarray(prob)
    single = prob.ndim == 2
    probs = _stack(prob, "prob")
    count = (probs > top).sum(axis=(1, 2))  # (N,)
    keep = count >= min_area_fraction * probs.shape[1] * probs.shape[2]  # (N,)
    mask = (probs > bottom) & keep[:, None, None]
    return mask[0] if single else mask


def tune_triplet(probs: np.ndarray, truth: np.ndarray, tops: Sequence[float] = TRIPLET_TOPS,
                 area_fractions: Sequence[float] = DEFAULT_AREA_FRACTIONS,
                 bottoms: Sequence[float] = TRIPLET_BOTTOMS) -> dict:
    """Grid-search (top, min_area_fraction, bottom <= top) maximising `siim_score`.

    Validation predictions only, as for `tune_postprocess`. Vectorised: one pass over the
    pixels per top (counts above it) and per bottom (per-image Dice of prob > bottom); the
    whole grid is then scored from those (N,) vectors. Ties keep the first grid point (lowest
    top, then smallest area, then lowest bottom).

    Returns:
        {"threshold" (the top), "min_area_fraction", "bottom", "score"} (floats).
    """
    probs, truth = _stack(probs, "probs"), _stack(truth, "truth") != 0
    tops, areas, bottoms = (np.asarray(v, dtype=np.float64) for v in (tops, area_fractions, bottoms))
    pixels = probs.shape[1] * probs.shape[2]
    counts = np.stack([(probs > t).sum(axis=(1, 2)) for t in tops])  # (T, N)
    kept = np.stack([dice_per_image(probs > b, truth) for b in bottoms])  # (B, N) Dice if kept
    dropped = (~truth.any(axis=(1, 2))).astype(np.float64)  # (N,) Dice of an empty mask
    gate = counts[:, None, :] >= areas[None, :, None] * pixels  # (T, A, N)
    # mean over images of kept where the gate opens, else dropped: dropped.mean() + the gain
    gain = gate.astype(np.float64) @ (kept - dropped).T / len(truth)  # (T, A, B)
    above = tops[:, None] < bottoms[None, :] - 1e-9  # (T, B): bottom > top is not searched
    score = np.where(above[:, None, :], -np.inf, np.round(dropped.mean() + gain, 12))  # rounded: ties stay ties
    if above.all():
        raise ValueError("tune_triplet: every bottom exceeds every top; nothing to search")
    t, a, b = np.unravel_index(np.argmax(score), score.shape)
    pred = postprocess_triplet(probs, tops[t], areas[a], bottoms[b])  # the score, exactly as evaluate has it
    return {"threshold": float(tops[t]), "min_area_fraction": float(areas[a]), "bottom": float(bottoms[b]),
            "score": siim_score(pred, truth)}


def binarise(probs: np.ndarray, threshold: float, min_area_fraction: float,
             bottom: float | None = None) -> np.ndarray:
    """The chosen post-processing: the triplet rule when `bottom` is given (threshold = top),
    else threshold + minimum component area."""
    if bottom is None:
        return postprocess(probs, threshold, min_area_fraction)
    return postprocess_triplet(probs, threshold, min_area_fraction, bottom)


def tune_on_val(mode: str, probs: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict:
    """The post-processing for `--postprocess mode`, chosen on validation predictions.

    tuned: (threshold, min area) searched; fixed: `threshold`, no minimum area; triplet:
    (top, min area, bottom) searched. Returns {"mode", "threshold", "min_area_fraction",
    ["bottom",] "score"}: what `evaluate`, `binarise` and ptxssl.json take.
    """
    if mode == "fixed":
        found = {"threshold": float(threshold), "min_area_fraction": 0.0,
                 "score": siim_score(postprocess(probs, threshold, 0.0), truth)}
    elif mode == "triplet":
        found = tune_triplet(probs, truth)
    elif mode == "tuned":
        found = tune_postprocess(probs, truth)
    else:
        raise ValueError(f"postprocess mode must be one of {POSTPROCESS_MODES}, got {mode!r}")
    return {"mode": mode, **found}


def tuned_rule(tuned: dict) -> tuple[float, float, float | None]:
    """(threshold, min_area_fraction, bottom) of a `tune_on_val` result, as `binarise` and
    `evaluate` take them (bottom None unless the triplet rule was tuned)."""
    return tuned["threshold"], tuned["min_area_fraction"], tuned.get("bottom")


def image_detection(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of "this image has a pneumothorax", calling an image positive
    when its predicted mask is non-empty. NaN where undefined (no predicted positives for
    precision, no true positives for recall, neither for F1)."""
    called = (_stack(pred, "pred") != 0).any(axis=(1, 2))
    label = (_stack(truth, "truth") != 0).any(axis=(1, 2))
    tp = int((called & label).sum())
    fp, fn = int((called & ~label).sum()), int((~called & label).sum())

    def ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def evaluate(probs: np.ndarray, truth: np.ndarray, threshold: float,
             min_area_fraction: float, bottom: float | None = None) -> dict:
    """Post-process `probs` (`binarise`: the triplet rule when `bottom` is given) and score
    them against `truth`.

    Returns:
        {"siim_dice", "positive_dice", "image_auroc", "precision", "recall", "f1" (image
        level, at this post-processing), "n_images", "n_positive", "threshold",
        "min_area_fraction"[, "bottom"]}.
    """
    probs, truth = _stack(probs, "probs"), _stack(truth, "truth") != 0
    pred = binarise(probs, threshold, min_area_fraction, bottom)
    out = {"siim_dice": siim_score(pred, truth), "positive_dice": positive_dice(pred, truth),
           "image_auroc": image_auroc(probs, truth), **image_detection(pred, truth), "n_images": len(truth),
           "n_positive": int(truth.any(axis=(1, 2)).sum()), "threshold": float(threshold),
           "min_area_fraction": float(min_area_fraction)}
    if bottom is not None:
        out["bottom"] = float(bottom)
    return out


def gate(masks: np.ndarray, probs: np.ndarray, threshold: float) -> np.ndarray:
    """Empty the masks of images the classifier calls negative (probability below `threshold`).

    Shape: (N, H, W) masks, (N,) probabilities -> (N, H, W) bool.
    """
    keep = np.asarray(probs, np.float64) >= threshold  # (N,)
    return (np.asarray(masks) != 0) & keep[:, None, None]
