"""The learning-rate schedule of self-supervised pretraining: linear warm-up, then cosine decay.

SimCLR (Chen et al. 2020, arXiv:2002.05709: 10 warm-up epochs, then cosine decay without
restarts), MoCo v2 (Chen et al. 2020, arXiv:2003.04297: cosine) and BYOL (Grill et al. 2020,
arXiv:2006.07733: 10 warm-up epochs, cosine) all train this way; a constant rate overshoots
early (large random gradients) and never settles late. Stepped per optimizer step, so a short
CPU run gets the same shape as a long GPU one: warm-up is a fraction of the run (`warmup`),
where the papers' 10 of 100-1000 epochs are 1-10 %.
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "constant")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply each base rate by (step + 1) / (W + 1) for the first W = round(warmup * total)
    steps, then by a cosine from 1 (the peak, at step W) down to 0 at `total_steps`."""
    total = max(int(total_steps), 1)
    warm = min(max(int(round(warmup * total)), 0), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
