"""What an encoder's output is read as: the deepest feature map, or its global average.

Both take [0, 1] images already at the model's size and planes (`fit_images`) and normalise
them here, so a method with a decoder can reconstruct the same [0, 1] tensor it encoded.
"""
from __future__ import annotations

import torch
from torch import nn

from ptxssl.encoders.input import normalize


def deepest(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D, H/32, W/32), D = feature_dim: the last stage, no skip features."""
    return encoder(normalize(x))[-1]


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D) global-average-pooled features, D = feature_dim."""
    return deepest(encoder, x).mean(dim=(2, 3))
