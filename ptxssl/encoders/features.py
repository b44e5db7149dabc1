"""What an encoder's output is read as: the deepest feature map, its global average, or a
coarse grid of averages that keeps left from right (a global average barely changes when a film
is mirrored, so flipped films and the side of a finding are lost in it).

Both take [0, 1] images already at the model's size and planes (`fit_images`) and normalise
them here, so a method with a decoder can reconstruct the same [0, 1] tensor it encoded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptxssl.encoders.input import normalize


def deepest(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D, H/32, W/32), D = feature_dim: the last stage, no skip features."""
    return encoder(normalize(x))[-1]


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D) global-average-pooled features, D = feature_dim."""
    return deepest(encoder, x).mean(dim=(2, 3))


def grid(encoder: nn.Module, x: torch.Tensor, cells: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D * cells^2): the deepest map averaged over a cells x cells
    grid, channel-major (each channel's cells together); their mean over cells is `pooled` when
    the map divides evenly."""
    return grid_of(deepest(encoder, x), cells)


def grid_of(maps: torch.Tensor, cells: int = 2) -> torch.Tensor:
    """`grid` of deepest maps already computed (N, D, h, w) -> (N, D * cells^2), for a caller that
    also pools them (`embed`: one pass through the encoder for both)."""
    return F.adaptive_avg_pool2d(maps, cells).flatten(1)
