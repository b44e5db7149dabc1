"""QC anomalies: each change is the one named, and masks follow geometric ones."""
from __future__ import annotations

import numpy as np
import pytest

from ptxssl.datasets.qc import apply_anomaly


def test_anomalies_move_masks_with_the_image():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8)).astype(np.float32)
    mask = np.zeros((8, 8), bool)
    mask[1, 0] = True
    flipped, (fm,) = apply_anomaly(image, [mask], "flipped", rng)
    assert np.array_equal(flipped, image[:, ::-1]) and fm[1, 7]
    rotated, (rm,) = apply_anomaly(image, [mask], "rotated", rng)
    assert any(np.array_equal(rotated, np.rot90(image, k)) and np.array_equal(rm, np.rot90(mask, k)) for k in (1, 3))
    inverted, (im,) = apply_anomaly(image, [mask], "inverted", rng)
    assert np.allclose(inverted, 1 - image) and np.array_equal(im, mask)


def test_no_anomaly_is_the_identity_and_an_unknown_one_is_refused():
    image = np.random.default_rng(0).random((4, 6))
    assert apply_anomaly(image, [], "", np.random.default_rng(0))[0] is image
    with pytest.raises(ValueError, match="mirrored"):
        apply_anomaly(image, [], "mirrored", np.random.default_rng(0))
