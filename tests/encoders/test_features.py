"""Features read from [0, 1] images: the deepest stage of the normalised input, its spatial mean,
and the normalisation applied inside exactly once."""
from __future__ import annotations

import pytest
import torch

from ptxssl.encoders import build_encoder, deepest, normalize, pooled
from tests.helpers import assert_features_close


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    """A random resnet34 in eval mode: in train mode BatchNorm's batch statistics would undo most of
    an affine change of the input, hiding a missing or doubled normalisation."""
    torch.manual_seed(0)
    return build_encoder(1, "resnet34").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_deepest_is_the_last_stage_of_the_normalised_input(encoder, images):
    features = deepest(encoder, images)
    assert features.shape == (2, 512, 2, 2)  # 512 channels at 1/32 of 64 px
    assert torch.equal(features, encoder(normalize(images))[-1])  # the same ops on the same input: bit for bit


@torch.no_grad()
def test_pooled_is_the_spatial_mean_of_deepest(encoder, images):
    features = deepest(encoder, images)
    assert torch.equal(pooled(encoder, images), features.mean(dim=(2, 3)))
    assert not torch.equal(features[0], features[1])  # two images, two feature maps: the batch is not mixed


@torch.no_grad()
def test_images_are_normalised_inside_exactly_once(encoder, images):
    features = pooled(encoder, images)
    twice = encoder(normalize(normalize(images)))[-1].mean(dim=(2, 3))  # a caller that normalised first
    never = encoder(images)[-1].mean(dim=(2, 3))
    assert torch.equal(pooled(encoder, normalize(images)), twice)
    for other in (twice, never):  # measured: they differ by ~3.5x and ~0.7x the features' scale
        with pytest.raises(AssertionError):
            assert_features_close(features, other)


def test_grid_cells_average_to_pooled_and_tell_a_film_from_its_mirror_image():
    """The reason for grid features: the 2 x 2 cells swap sides when a film is mirrored, so they
    move more than the global average (random resnet34s, 4 seeds: 1.3-1.6 times as much)."""
    from ptxssl.encoders import grid

    torch.manual_seed(0)
    encoder = build_encoder(1).eval()
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(3)) * 0.3
    x[..., :20] += 0.6  # a bright left edge: an asymmetric film
    with torch.no_grad():
        cells = grid(encoder, x)  # (1, 4 x 512)
        mirrored = grid(encoder, x.flip(-1))
        g, p = cells.view(1, 512, 4), pooled(encoder, x)
        torch.testing.assert_close(g.mean(-1), p)  # a 2 x 2 deepest map: the cells are the map
        pooled_change = (pooled(encoder, x.flip(-1)) - p).norm() / p.norm()
        grid_change = (mirrored - cells).norm() / cells.norm()
    assert grid_change > 1.1 * pooled_change
