"""SimCLR: two augmented views of each image, pulled together against all other views.

Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
https://arxiv.org/abs/2002.05709. Encoder -> pooled feature (512-d for ResNet-34) -> MLP projection head ->
NT-Xent (InfoNCE over the 2N views of the batch: one positive and 2N - 2 negatives each).

Defaults, scaled for small runs:
    temperature 0.5: best in the paper's CIFAR-10 runs (App. B.9), the setting nearest to
        ours (small images, small batches), and lightly's default; 0.1 was its ImageNet
        choice with batches of 4096.
    proj_dim 128, hidden_dim 512: the paper's 128-d output; the hidden layer as wide as the
        encoder output (2048 for ResNet-50 there, 512 for ResNet-34 here; other --arch keep 512).
    AdamW, lr 1e-3: LARS exists to keep very large batches (4096+) stable; at 32-256 images
        per batch plain AdamW trains as well and needs no warm-up schedule.

Distributed: `NTXentLoss(gather_distributed=True)` gathers the projections of every process,
so each view is contrasted with the whole global batch (the step output "negatives" reports
2 x global batch - 2). BatchNorm should then be SyncBatchNorm, the paper's "global BN"
(Sec. 2.2), which stops a process exploiting the statistics of its local batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils import dist

from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH, pooled
from ptxssl.pretrain.methods.two_view import TwoViewConfig, TwoViewMethod


@dataclass
class SimCLRConfig(TwoViewConfig):
    temperature: float = opt(0.5, "Softmax temperature of the contrastive (InfoNCE) loss (SimCLR/MoCo).")


class SimCLR(TwoViewMethod):
    name = "simclr"
    config_class = SimCLRConfig
    title = "SimCLR"
    paper = {"batch_size": (4096, "SimCLR, Chen et al. 2020 (negatives come from the batch)"),
             "temperature": (0.1, "SimCLR, Chen et al. 2020, batch 4096 (0.5 suits small batches)"),
             "hidden_dim": (2048, "SimCLR projection head"),
             "lr": (4.8, "SimCLR: LARS, 0.3 x batch / 256 at batch 4096; AdamW here")}

    def __init__(self, cfg: SimCLRConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.head = SimCLRProjectionHead(self.feature_dim, cfg.hidden_dim, cfg.proj_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=True)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pooled(self.encoder, x))  # (N, proj_dim)

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, g = batch["image"], batch["generator"]
        z0, z1 = self.project(self.augment(x, g)), self.project(self.augment(x, g))
        loss = self.criterion(z0, z1)
        negatives = 2 * x.shape[0] * dist.world_size() - 2  # per positive, over the global batch
        return {"loss": loss, "negatives": torch.tensor(float(negatives), device=loss.device)}
