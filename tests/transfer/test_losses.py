"""SegmentationLoss: reference values for its terms, and it falls when fitting a mask."""
from __future__ import annotations

import pytest
import torch

from ptxssl.errors import UserError
from ptxssl.transfer.losses import SegmentationLoss, parse_loss


def _reference(logits: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    p = torch.sigmoid(logits.double())
    t = masks.double()
    pt = torch.where(t == 1, p, 1 - p)
    focal = (-(1 - pt) ** 2 * torch.log(pt)).mean()  # gamma 2, no alpha, mean over all pixels
    dice = 1 - 2 * (p * t).sum() / (p.sum() + t.sum())  # batch Dice
    return float(focal), float(dice)


def test_terms_match_reference_and_weights_combine():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=g)
    masks = (torch.rand(3, 1, 8, 8, generator=g) > 0.7).float()
    focal, dice = _reference(logits, masks)
    out = SegmentationLoss()(logits, masks)
    assert set(out) == {"loss", "focal", "dice"}
    assert out["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice, rel=1e-5)
    weighted = SegmentationLoss("focal:2,dice:0.5")(logits, masks)
    assert weighted["loss"].item() == pytest.approx(2 * focal + 0.5 * dice, rel=1e-5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks).item()
    mixed = SegmentationLoss("bce:3,dice:1,focal:4")(logits, masks)
    assert set(mixed) == {"loss", "bce", "dice", "focal"}
    assert mixed["loss"].item() == pytest.approx(3 * bce + dice + 4 * focal, rel=1e-5)


@pytest.mark.parametrize("spec", ["", "dice:-1", "dice:x", "cross:1", "dice:1,dice:2", "dice:0"])
def test_bad_loss_specs_name_the_option(spec):
    with pytest.raises(UserError, match="--loss"):
        parse_loss(spec)


def test_lovasz_term_falls_to_zero_on_a_perfect_margin():
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, 2:5, 2:5] = 1
    loss = SegmentationLoss("lovasz:1")
    assert loss(10 * (2 * masks - 1), masks)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss(torch.zeros_like(masks), masks)["loss"].item() > 0.5


def test_all_empty_batch_has_zero_dice_term():
    logits = torch.randn(2, 1, 8, 8)
    out = SegmentationLoss()(logits, torch.zeros(2, 1, 8, 8))
    assert out["dice"].item() == 0.0 and out["loss"].item() == pytest.approx(out["focal"].item())


def test_loss_falls_when_fitting_a_mask():
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, 0, 4:10, 4:10] = 1
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    loss_fn, opt = SegmentationLoss(), torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(100):
        out = loss_fn(logits, masks)
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.2 * first
    assert ((logits.detach() > 0) == masks.bool()).all()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        SegmentationLoss()(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))
