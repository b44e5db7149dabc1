"""The one input path: resize (antialiased images, nearest masks), channel planes, normalisation."""
from __future__ import annotations

import pytest
import torch

from ptxssl.encoders import NORMALIZATION, encoder_input, fit_images, planes, resize


def stripes(size: int) -> torch.Tensor:
    """(1, 1, size, size) one-pixel vertical lines every third column (mean 1/3): detail far above
    the Nyquist frequency of a 4x downscale, like a pleural line on a full-size film."""
    return (torch.arange(size) % 3 == 0).float().expand(size, size)[None, None]


def test_encoder_input_normalises_and_copies_grey_to_rgb():
    x = torch.full((2, 1, 4, 4), NORMALIZATION["mean"] + NORMALIZATION["std"])
    one = encoder_input(x, None, 1)
    three = encoder_input(x, None, 3)
    assert one.shape == (2, 1, 4, 4) and torch.allclose(one, torch.ones_like(one))
    assert three.shape == (2, 3, 4, 4) and torch.allclose(three, torch.ones_like(three))


def test_a_recorded_normalisation_is_the_one_applied():
    x = torch.full((1, 1, 4, 4), 0.7)
    out = encoder_input(x, None, 1, {"mean": 0.5, "std": 0.1})
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_downscaling_is_antialiased_and_stays_in_range():
    lines = stripes(64)
    small = resize(lines, 16)
    # antialiased: the lines average out to a near-flat 1/3; plain bilinear samples them (0 to 0.5: aliasing)
    plain = torch.nn.functional.interpolate(lines, size=(16, 16), mode="bilinear", align_corners=False)
    assert small.shape == (1, 1, 16, 16)
    assert (small - 1 / 3).abs().max() < 0.05
    assert (plain - 1 / 3).abs().max() > 0.15
    assert small.min() >= 0 and small.max() <= 1


def test_masks_resize_by_nearest_and_stay_binary():
    mask = (torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    small = resize(mask, 16, nearest=True)
    assert set(small.unique().tolist()) <= {0.0, 1.0}
    assert resize(mask, 64) is mask and resize(mask, 0) is mask  # the same size, or 0: untouched


def test_planes_copy_grey_select_raw_and_refuse_the_impossible():
    raw = torch.rand(2, 1, 8, 8)
    stack = torch.cat([raw, raw * 0.5, raw * 0.25], dim=1)  # raw, clahe, he stand-ins
    assert torch.equal(planes(raw, 3), raw.expand(-1, 3, -1, -1))
    assert torch.equal(planes(stack, 3), stack)
    assert torch.equal(planes(stack, 1), raw)  # a grey model on a cache with extra planes: raw only
    with pytest.raises(ValueError, match="2 image planes"):
        planes(stack[:, :2], 3)


def test_fit_images_is_resize_then_planes_and_encoder_input_adds_only_normalisation():
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    fitted = fit_images(x, 32, 3)
    assert fitted.shape == (2, 3, 32, 32)
    assert torch.equal(fitted, resize(x, 32).expand(-1, 3, -1, -1))
    expected = (fitted - NORMALIZATION["mean"]) / NORMALIZATION["std"]
    assert torch.equal(encoder_input(x, 32, 3), expected)
