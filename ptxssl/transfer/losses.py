"""The segmentation loss: focal + soft Dice, both from segmentation-models-pytorch.

Why both: ~78 % of SIIM masks are empty and a positive mask covers a few percent of the
image, so plain BCE is dominated by easy background pixels. Focal loss (Lin et al. 2017,
"Focal Loss for Dense Object Detection", gamma = 2, no alpha) down-weights those easy pixels
per pixel; soft Dice (Milletari et al. 2016, "V-Net") optimises the overlap the metric
measures and does not care how large the background is. The pair (usually with BCE in
place of focal) is what most SIIM-ACR solutions trained with.

What smp computes (read before changing the weights):
    focal: mean over every pixel of the batch of (1 - p_t)^2 * BCE.
    dice:  1 - 2 sum(p t) / (sum(p) + sum(t)), the sums over the whole batch (one "batch
           Dice", not a mean of per-image Dice), and 0 when the batch has no positive pixel
           at all (smp zeroes the undefined term), so all-empty batches train on focal only.
"""
from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn


class SegmentationLoss(nn.Module):
    """focal_weight * focal + dice_weight * dice, returning the named terms.

    Shape:
        logits: (N, 1, H, W) raw model outputs; masks: (N, 1, H, W) in {0, 1} (any dtype).
    Returns:
        {"loss", "focal", "dice"}: 0-d tensors; "loss" carries the gradient.
    """

    def __init__(self, focal_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        if focal_weight < 0 or dice_weight < 0 or focal_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0 (got focal "
                             f"{focal_weight}, dice {dice_weight})")
        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.focal = FocalLoss("binary")  # gamma 2, alpha None, mean over pixels
        self.dice = DiceLoss("binary", from_logits=True)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        if logits.shape != masks.shape or logits.ndim != 4 or logits.shape[1] != 1:
            raise ValueError(f"expected logits and masks of the same shape (N, 1, H, W), got "
                             f"{tuple(logits.shape)} and {tuple(masks.shape)}")
        masks = masks.to(logits.dtype)
        focal = self.focal(logits, masks)
        dice = self.dice(logits, masks)
        return {"loss": self.focal_weight * focal + self.dice_weight * dice,
                "focal": focal.detach(), "dice": dice.detach()}
