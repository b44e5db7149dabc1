"""ChestXrayAugment: reproducible from the generator, random per sample, grey and in range,
no flip by default, and the identity when every strength is zero."""
from __future__ import annotations

import pytest
import torch

from ptxssl.errors import UserError
from ptxssl.engine.augment import AugmentConfig, ChestXrayAugment, augment_preset


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Smooth, structured images in [0, 1]: (8, 1, 32, 32)."""
    g = gen(123)
    coarse = torch.rand(8, 1, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)


def test_same_seed_same_views_other_seed_other_views(images):
    aug = ChestXrayAugment()
    a, b, c = aug(images, gen(0)), aug(images, gen(0)), aug(images, gen(1))
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.02


def test_each_sample_gets_its_own_parameters(images):
    x = images[:1].expand(16, -1, -1, -1).contiguous()  # one image, 16 times
    y = ChestXrayAugment()(x, gen(0))
    flat = y.flatten(1)
    dists = torch.cdist(flat, flat)[~torch.eye(16, dtype=torch.bool)]  # off-diagonal pairs
    assert dists.min() > 1e-3


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_range_dtype_kept_and_grey_stays_grey(images, channels):
    x = images.expand(-1, channels, -1, -1).contiguous()
    strong = AugmentConfig(brightness=0.5, contrast=0.8, noise_p=1.0, noise_std=0.2, hflip=0.5)
    y = ChestXrayAugment(strong)(x, gen(3))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same transform (and noise) in every channel


def test_no_horizontal_flip_by_default_but_switchable():
    """A film brighter on its left stays brighter on the left on average (heart side kept)."""
    x = torch.full((64, 1, 32, 32), 0.2)
    x[..., :16] = 0.8

    def left_minus_right(cfg: AugmentConfig) -> float:
        aug = ChestXrayAugment(cfg)
        mean = torch.stack([aug(x, gen(s)) for s in range(4)]).mean(dim=(0, 1, 2))  # (32, 32)
        return float(mean[..., :16].mean() - mean[..., 16:].mean())

    assert AugmentConfig().hflip == 0.0
    assert left_minus_right(AugmentConfig()) > 0.3
    assert left_minus_right(AugmentConfig(hflip=1.0)) < -0.3
    assert abs(left_minus_right(AugmentConfig(hflip=0.5))) < 0.15


def test_all_strengths_zero_is_the_identity(images):
    y = ChestXrayAugment(AugmentConfig.identity())(images, gen(0))
    torch.testing.assert_close(y, images, atol=1e-5, rtol=0)


def test_blur_smooths_and_zero_sigma_leaves_the_image(images):
    aug = ChestXrayAugment()
    noise = torch.rand(4, 1, 32, 32, generator=gen(5))
    assert torch.equal(aug.blur(noise, torch.zeros(4, dtype=torch.float64)), noise)
    sigma = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    blurred = aug.blur(noise, sigma)
    spread = blurred.std(dim=(1, 2, 3))  # more blur, less pixel variance
    assert torch.equal(blurred[0], noise[0])
    assert (spread[1:] < spread[:-1]).all()
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3)), noise.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)



def test_masks_follow_the_image_geometry_and_stay_binary():
    square = torch.zeros(4, 1, 64, 64)
    square[:, :, 10:30, 20:44] = 1
    cfg = AugmentConfig(rotate=15, translate=0.1, hflip=0.5, crop_scale=(0.5, 1.0),
                        brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0)
    aug = ChestXrayAugment(cfg)
    image, mask = aug.with_mask(square.clone(), square.clone(), torch.Generator().manual_seed(3))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(mask, square)  # it moved
    inter = ((image > 0.5) & (mask > 0.5)).sum((1, 2, 3)).float()
    union = ((image > 0.5) | (mask > 0.5)).sum((1, 2, 3)).float()
    assert (inter / union).min() > 0.9
    # the image part is exactly what forward() gives for the same seed
    same = aug(square.clone(), torch.Generator().manual_seed(3))
    assert torch.equal(same, image)


def test_moco_cxr_views_only_rotate_about_the_centre():
    """A centred radial blob is rotation-invariant: MoCo-CXR's views leave it in place (no
    crop, shift, intensity change, blur or noise), the standard views do not."""
    coords = torch.linspace(-1, 1, 32)
    disc = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / 0.2)[None, None].expand(8, 1, 32, 32)
    rotated = ChestXrayAugment(augment_preset("moco-cxr"))(disc, gen(0))
    assert (rotated - disc).abs().max() < 0.05
    assert (ChestXrayAugment(augment_preset("standard"))(disc, gen(0)) - disc).abs().max() > 0.3
    corner = torch.zeros(1, 1, 32, 32)
    corner[..., :6, :6] = 1  # off-centre: a rotation moves it, so the views are not the identity
    assert (ChestXrayAugment(augment_preset("moco-cxr"))(corner.expand(8, -1, -1, -1), gen(0)) - corner).abs().max() > 0.3
    assert augment_preset("moco-cxr", hflip=0.5).hflip == 0.5


def test_an_unknown_augment_preset_names_the_option_and_choices():
    with pytest.raises(UserError, match="--augment must be one of standard, moco-cxr"):
        augment_preset("imagenet")


def test_the_augment_option_reaches_the_two_view_methods():
    from ptxssl.pretrain.methods import get_method
    from ptxssl.pretrain.run import resolve_config

    _, mcfg = resolve_config("byol", None, {"augment": "moco-cxr"})
    assert get_method("byol")(mcfg, image_size=32).augment.cfg == augment_preset("moco-cxr")
    with pytest.raises(UserError, match="--augment must be one of"):
        resolve_config("simclr", None, {"augment": "imagenet"})
