"""Autoencoder: encoder (--arch, ResNet-34 by default) -> latent vector -> convolutional decoder.

Reconstruction loss: binary cross-entropy on [0, 1] pixels (default) or MSE, *mean* over
pixels and batch (a per-pixel scale, comparable across image sizes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH, deepest
from ptxssl.pretrain.methods.base import Method, MethodConfig
from ptxssl.pretrain.methods.decoder import Bottleneck, ConvDecoder


@dataclass
class AEConfig(MethodConfig):
    latent_dim: int = opt(128, "Latent vector size (AE/VAE).")
    recon_loss: str = opt("bce", "Reconstruction loss: bce or mse (AE/VAE).")


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str,
                        reduction: str = "mean") -> torch.Tensor:
    """BCE on logits or MSE on sigmoid(logits) against [0, 1] images."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
    if kind == "mse":
        return F.mse_loss(torch.sigmoid(logits), target, reduction=reduction)
    raise ValueError(f"recon_loss must be bce or mse (got {kind!r})")


class AE(Method):
    name = "ae"
    title = "autoencoder"
    config_class = AEConfig

    def __init__(self, cfg: AEConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.to_latent = Bottleneck(self.encoder, image_size, cfg.latent_dim)
        self.decoder = ConvDecoder(cfg.latent_dim, image_size, in_channels)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> (N, latent_dim) codes, for the decoder and the analysis stage."""
        return self.to_latent(deepest(self.encoder, x))  # (N, latent_dim)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> (N, C, S, S) in [0, 1]."""
        return torch.sigmoid(self.decoder(self.latent(x)))

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"]
        recon = reconstruction_loss(self.decoder(self.latent(x)), x, self.cfg.recon_loss)
        return {"loss": recon, "recon": recon}

    @torch.no_grad()
    def write_figures(self, batch: dict, out_dir: Path) -> list[Path]:
        from ptxssl.pretrain.figures import image_grid

        x = batch["image"][:8]
        recon = self.reconstruct(x)
        return [image_grid([x, recon], Path(out_dir) / "reconstructions.png",
                           title="Autoencoder: input (top) and reconstruction (bottom)")]
