"""The image decoder shared by the autoencoder and the β-VAE.

It decodes from a latent *vector* made from the deepest encoder stage only: no skip
connections, which would let the network copy the input and learn the identity.
"""
from __future__ import annotations

import torch
from torch import nn

from ptxssl.encoders import feature_dim

_STRIDE = 32  # the decoder upsamples by 2**5, from an S/32 grid to S


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """(N, D, h, w) deepest features -> (N, out_dim) vector (flatten + linear keeps where
    things are, which global pooling would throw away). D and h = w = image_size / stride
    come from the encoder it follows, so any smp encoder fits."""

    def __init__(self, encoder: nn.Module, image_size: int, out_dim: int) -> None:
        super().__init__()
        side = image_size // encoder.output_stride
        self.proj = nn.Linear(feature_dim(encoder) * side * side, out_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(feats.flatten(1))  # (N, out_dim)


class ConvDecoder(nn.Module):
    """(N, latent_dim) -> (N, C, S, S) logits: a linear map to a (256, S/32, S/32) grid and five
    2x upsampling conv blocks."""

    def __init__(self, latent_dim: int, image_size: int, out_channels: int = 1) -> None:
        super().__init__()
        if image_size % _STRIDE:
            raise ValueError(f"image size must be a multiple of {_STRIDE} (got {image_size})")
        self.side = image_size // _STRIDE
        self.fc = nn.Linear(latent_dim, 256 * self.side * self.side)
        widths = [256, 128, 64, 32, 16]
        self.blocks = nn.Sequential(*[_up(a, b) for a, b in zip(widths, widths[1:] + [16])])
        self.head = nn.Conv2d(16, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 256, self.side, self.side)  # (N, 256, S/32, S/32)
        return self.head(self.blocks(x))  # (N, C, S, S) logits
