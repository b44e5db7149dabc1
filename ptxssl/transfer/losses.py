"""The segmentation loss: a weighted sum of terms from segmentation-models-pytorch.

`--loss focal:1,dice:1` (the default) or any mix of bce, dice, focal and lovasz, e.g. the
`bce:3,dice:1,focal:4` of a SIIM-ACR solution. Why focal + Dice by default: ~78 % of SIIM
masks are empty and a positive mask covers a few percent of the image, so plain BCE is
dominated by easy background pixels. Focal loss (Lin et al. 2017, gamma = 2, no alpha)
down-weights those easy pixels; soft Dice (Milletari et al. 2016) optimises the overlap the
metric measures and does not care how large the background is. Lovasz hinge (Berman et al.
2018) optimises the Jaccard index directly.

What smp computes (read before changing the weights):
    bce:    mean over every pixel of the batch of the binary cross-entropy.
    focal:  mean over every pixel of the batch of (1 - p_t)^2 * BCE.
    dice:   1 - 2 sum(p t) / (sum(p) + sum(t)), the sums over the whole batch (one "batch
            Dice", not a mean of per-image Dice), and 0 when the batch has no positive pixel
            at all (smp zeroes the undefined term), so all-empty batches train on the others.
    lovasz: Lovasz hinge over the whole batch (per_image=False).
"""
from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss, SoftBCEWithLogitsLoss
from torch import nn

from ptxssl.errors import UserError

TERMS = {"bce": SoftBCEWithLogitsLoss, "dice": lambda: DiceLoss("binary", from_logits=True),
         "focal": lambda: FocalLoss("binary"), "lovasz": lambda: LovaszLoss("binary")}
DEFAULT_LOSS = "focal:1,dice:1"


def parse_loss(spec: str) -> dict[str, float]:
    """"bce:3,dice:1" -> {"bce": 3.0, "dice": 1.0}; a bad spec is a UserError naming --loss."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if name not in TERMS or value < 0 or name in weights:
            raise UserError(f"--loss {spec!r}: write terms as NAME:WEIGHT, comma-separated, each once, weights "
                            f">= 0, names from {', '.join(TERMS)} (e.g. {DEFAULT_LOSS})")
        weights[name] = value
    if not weights or sum(weights.values()) == 0:
        raise UserError(f"--loss {spec!r}: give at least one term with a weight > 0 (e.g. {DEFAULT_LOSS})")
    return weights


class SegmentationLoss(nn.Module):
    """The weighted sum of the terms in `spec` (see `parse_loss`), returning the named terms.

    Shape:
        logits: (N, 1, H, W) raw model outputs; masks: (N, 1, H, W) in {0, 1} (any dtype).
    Returns:
        {"loss", <each term>}: 0-d tensors; "loss" carries the gradient.
    """

    def __init__(self, spec: str = DEFAULT_LOSS) -> None:
        super().__init__()
        self.weights = parse_loss(spec)
        self.terms = nn.ModuleDict({name: TERMS[name]() for name in self.weights})

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        if logits.shape != masks.shape or logits.ndim != 4 or logits.shape[1] != 1:
            raise ValueError(f"expected logits and masks of the same shape (N, 1, H, W), got "
                             f"{tuple(logits.shape)} and {tuple(masks.shape)}")
        masks = masks.to(logits.dtype)
        values = {name: term(logits, masks) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return {"loss": total, **{name: value.detach() for name, value in values.items()}}
