"""BYOL: an online network predicts a slowly moving target network's projection of another view.

Grill et al. 2020, "Bootstrap Your Own Latent", https://arxiv.org/abs/2006.07733. Online:
encoder -> projection -> prediction; target: EMA copy of encoder -> projection. No negatives:
the loss is the negative cosine similarity between the online prediction of one view and the
target projection of the other, symmetrised over the two views (lightly's
`NegativeCosineSimilarity`: -cos, in [-1, 1]; the paper's 2 - 2 cos up to scale and shift).

Target network: a copy of encoder + projection with `requires_grad=False`, updated only by
`after_step` with lightly's `update_momentum` (an EMA of the *parameters*), the momentum rising
from `momentum` to 1 on the paper's cosine schedule. BatchNorm: the target follows the
module's train/eval mode like the online network, so in training its BN normalises with the
statistics of the batch it sees (as in the reference implementation); its running statistics
are updated by its own forward passes, not EMA'd, and are never exported (only the online
encoder is). Under DDP use SyncBatchNorm (the paper's BN statistics are over the global batch);
the loss itself has no negatives and needs no gathering.

Defaults, scaled for small CPU runs: projection 256-d as in the paper, hidden layers 1024
wide instead of 4096 (the paper's 4096 with a 2048-d ResNet-50 feature; 1024 = 2 x our 512-d
feature keeps the heads small next to ResNet-34), momentum 0.99 -> 1 (the paper's 0.996 suits
its 300k+ steps; short runs need a faster-moving target), AdamW lr 1e-3 instead of LARS
(LARS is for the paper's 4096-image batches).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH, pooled
from ptxssl.pretrain.methods.two_view import MomentumConfig, MomentumMethod


@dataclass
class BYOLConfig(MomentumConfig):
    proj_dim: int = opt(256, "Output size of the projection head (SimCLR/MoCo/BYOL).")
    hidden_dim: int = opt(1024, "Hidden size of the projection head and of BYOL's prediction head "
                                "(SimCLR/MoCo/BYOL).")


class BYOL(MomentumMethod):
    name = "byol"
    config_class = BYOLConfig
    title = "BYOL"
    paper = {"batch_size": (4096, "BYOL, Grill et al. 2020"),
             "momentum": (0.996, "BYOL, Grill et al. 2020: 0.996 raised to 1 on a cosine"),
             "hidden_dim": (4096, "BYOL projector and predictor"),
             "lr": (4.8, "BYOL: LARS, 0.2 x batch / 256 at batch 4096; AdamW here")}

    def __init__(self, cfg: BYOLConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.projection = BYOLProjectionHead(self.feature_dim, cfg.hidden_dim, cfg.proj_dim)
        self.prediction = BYOLPredictionHead(cfg.proj_dim, cfg.hidden_dim, cfg.proj_dim)
        self.make_target("encoder", "encoder_momentum")
        self.make_target("projection", "projection_momentum")
        self.criterion = NegativeCosineSimilarity()

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.projection(pooled(self.encoder, x)))  # (N, proj_dim)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_momentum(pooled(self.encoder_momentum, x))  # (N, proj_dim)

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, g = batch["image"], batch["generator"]
        v0, v1 = self.augment(x, g), self.augment(x, g)
        loss = 0.5 * (self.criterion(self.online(v0), self.target(v1)) +
                      self.criterion(self.online(v1), self.target(v0)))
        return {"loss": loss}
