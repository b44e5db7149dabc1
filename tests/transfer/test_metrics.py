"""The SIIM metric, AUROC and post-processing on hand-made masks with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from ptxssl.transfer.metrics import (
    dice_per_image,
    evaluate,
    image_auroc,
    image_detection,
    positive_dice,
    postprocess,
    siim_score,
    tune_postprocess,
)


def _mask(h: int, w: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def test_dice_empty_and_one_sided_cases():
    empty, full = _mask(8, 8), _mask(8, 8, (0, 8, 0, 8))
    pred = np.stack([empty, full, empty])
    truth = np.stack([empty, empty, full])
    np.testing.assert_array_equal(dice_per_image(pred, truth), [1.0, 0.0, 0.0])


def test_dice_partial_overlap_exact_value():
    pred = _mask(10, 10, (0, 4, 0, 5))  # 20 px
    truth = _mask(10, 10, (2, 6, 0, 5))  # 20 px, overlap rows 2-3 x 5 cols = 10 px
    assert dice_per_image(pred[None], truth[None])[0] == pytest.approx(2 * 10 / 40)
    # a single (H, W) pair works too, and uint8 0/255 counts as foreground
    assert dice_per_image((pred * 255).astype(np.uint8), truth)[0] == pytest.approx(0.5)


def test_siim_score_and_positive_dice():
    empty = _mask(10, 10)
    a, b = _mask(10, 10, (0, 4, 0, 5)), _mask(10, 10, (2, 6, 0, 5))
    pred = np.stack([empty, a, a, b])
    truth = np.stack([empty, b, a, empty])  # Dice 1, 0.5, 1, 0
    assert siim_score(pred, truth) == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert positive_dice(pred, truth) == pytest.approx((0.5 + 1) / 2)  # images 1 and 2 only
    assert np.isnan(positive_dice(pred, np.zeros_like(truth)))


def test_image_auroc_ranks_by_max_probability():
    probs = np.zeros((4, 6, 6))
    probs[0, 0, 0], probs[1, 3, 3], probs[2, :, :], probs[3, 5, 5] = 0.9, 0.8, 0.3, 0.1
    positive = np.zeros((4, 6, 6), dtype=bool)
    positive[[0, 1], 2, 2] = True
    # positives have the two highest maxima (a small confident spot beats a wide faint haze)
    assert image_auroc(probs, positive) == 1.0
    positive_swapped = np.zeros_like(positive)
    positive_swapped[[2, 3], 0, 0] = True
    assert image_auroc(probs, positive_swapped) == 0.0
    assert np.isnan(image_auroc(probs, np.zeros_like(positive)))


def test_postprocess_drops_small_component_keeps_large():
    prob = np.zeros((32, 32))
    prob[2:4, 2:4] = 0.9  # 4 px component
    prob[10:20, 10:20] = 0.8  # 100 px component
    prob[25:30, 25:30] = 0.4  # below the threshold
    out = postprocess(prob, threshold=0.5, min_area_fraction=10 / 1024)  # 10 px at 32 x 32
    assert out.dtype == bool and out.shape == (32, 32)
    np.testing.assert_array_equal(out, _mask(32, 32, (10, 20, 10, 20)))
    kept_all = postprocess(prob, threshold=0.5, min_area_fraction=0.0)
    assert kept_all.sum() == 104


def test_postprocess_diagonal_pixels_are_one_component_and_images_are_separate():
    prob = np.zeros((2, 8, 8))
    idx = np.arange(4)
    prob[0, idx, idx] = 1.0  # 4 diagonal pixels: one 8-connected component
    prob[1, 0, 0] = 1.0  # 1 px in another image: must not join image 0's component
    out = postprocess(prob, 0.5, min_area_fraction=3 / 64)
    assert out[0].sum() == 4 and out[1].sum() == 0


def test_postprocess_area_threshold_scales_with_image_size():
    small = np.zeros((32, 32))
    small[4:8, 4:8] = 0.9  # 16 px = 1.56 % of the image
    big = np.kron(small, np.ones((4, 4)))  # the same picture at 128 px: 256 px, same 1.56 %
    for fraction, kept in ((0.015, True), (0.016, False)):
        assert postprocess(small, 0.5, fraction).any() == kept
        assert postprocess(big, 0.5, fraction).any() == kept


def test_tune_postprocess_finds_the_known_best():
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 32, 32), dtype=bool)
    truth[:3, 8:20, 8:20] = True
    # inside the true masks 0.7; background noise up to 0.55 with small specks of 0.65
    probs = rng.uniform(0.0, 0.55, size=truth.shape)
    probs[truth] = 0.7
    probs[3:, 2, 2] = 0.65  # one-pixel specks on the empty images
    best = tune_postprocess(probs, truth, thresholds=(0.3, 0.5, 0.6, 0.68, 0.8),
                            area_fractions=(0.0, 0.002))
    # 0.6 keeps the specks unless the area filter drops them; 0.68 separates perfectly
    assert best == {"threshold": 0.6, "min_area_fraction": 0.002, "score": 1.0}
    only_threshold = tune_postprocess(probs, truth, thresholds=(0.3, 0.5, 0.6, 0.68, 0.8),
                                      area_fractions=(0.0,))
    assert only_threshold["threshold"] == 0.68 and only_threshold["score"] == 1.0
    assert tune_postprocess(probs, truth, thresholds=(0.8,), area_fractions=(0.0,))["score"] == 0.5


def test_evaluate_reports_everything():
    truth = np.zeros((2, 16, 16), dtype=bool)
    truth[0, 4:8, 4:8] = True
    probs = np.where(truth, 0.9, 0.1)
    out = evaluate(probs, truth, threshold=0.5, min_area_fraction=0.0)
    assert out == {"siim_dice": 1.0, "positive_dice": 1.0, "image_auroc": 1.0, "precision": 1.0, "recall": 1.0,
                   "f1": 1.0, "n_images": 2, "n_positive": 1, "threshold": 0.5, "min_area_fraction": 0.0}
    assert evaluate(probs, truth, threshold=0.95, min_area_fraction=0.0)["siim_dice"] == 0.5


def test_image_precision_recall_f1_hand_case():
    truth = np.zeros((6, 4, 4), dtype=bool)
    truth[:4, 1, 1] = True  # images 0-3 have a pneumothorax
    pred = np.zeros_like(truth)
    pred[0, 2, 2] = True  # true positive (a wrong place still calls the image positive)
    pred[4, 0, 0] = True  # false positive; images 1-3 are false negatives, image 5 a true negative
    assert image_detection(pred, truth) == {"precision": 0.5, "recall": 0.25, "f1": pytest.approx(1 / 3)}
    none = image_detection(np.zeros_like(truth), truth)
    assert np.isnan(none["precision"]) and none["recall"] == 0.0 and none["f1"] == 0.0
    assert all(np.isnan(v) for v in image_detection(np.zeros_like(truth), np.zeros_like(truth)).values())


def test_evaluate_detection_is_at_the_post_processed_operating_point():
    truth = np.zeros((3, 16, 16), dtype=bool)
    truth[:2, 4:8, 4:8] = True
    probs = np.where(truth, 0.6, 0.1)
    probs[0, 5:7, 5:7] = 0.9  # image 0: 4 px above top; image 1: none; image 2 (negative): a faint 0.5 patch
    probs[2, 10:14, 10:14] = 0.5
    triplet = evaluate(probs, truth, threshold=0.8, min_area_fraction=2 / 256, bottom=0.4)
    # only image 0 passes the gate, and its mask at 0.4 is exactly the truth
    assert (triplet["precision"], triplet["recall"], triplet["bottom"]) == (1.0, 0.5, 0.4)
    assert triplet["siim_dice"] == pytest.approx(2 / 3) and triplet["positive_dice"] == 0.5
    plain = evaluate(probs, truth, threshold=0.4, min_area_fraction=0.0)  # every patch is called
    assert (plain["precision"], plain["recall"], plain["f1"]) == (pytest.approx(2 / 3), 1.0, 0.8)
    assert "bottom" not in plain
