"""The one input path: cache images -> what an encoder sees.

Every stage that feeds an encoder (pretraining, the probe, `embed`, transfer, classify,
`predict`) goes through these functions, so an encoder trained on one preparation is never
analysed or fine-tuned on another (`embed` once resized without antialiasing while training
and the probe antialiased: the same encoder gave other features in analysis than in training).

1-channel policy (the same in every stage, recorded in encoder.json and ptxssl.json):
    images are grey in [0, 1] and normalised with ImageNet's grey statistics
    (mean 0.449, std 0.226: the means of its RGB mean/std). ImageNet weights reach 1 channel
    the way smp adapts the first convolution (summing the RGB kernels), so a grey image
    normalised this way gives an ImageNet encoder the same activations as the grey image
    copied into R, G and B. A 3-channel encoder gets the cache's planes (raw, clahe, he)
    when it has them, else the grey image copied three times.

The steps, in order: `resize` (antialiased bilinear for images, nearest for masks),
`planes` (channel selection), `normalize`. `fit_images` is the first two, for the models
that need the [0, 1] image itself (an autoencoder's reconstruction target) and normalise
inside (`ptxssl.encoders.features.deepest`); `encoder_input` is all three.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NORMALIZATION = {"mean": 0.449, "std": 0.226}


def resize(x: torch.Tensor, size: int | None, nearest: bool = False) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, size, size); `size` 0 / None or equal to S: unchanged.

    Images: bilinear with antialiasing (a downscale without it aliases fine lines such as a
    pleural edge; its weights are non-negative, so [0, 1] stays [0, 1]). Masks: nearest, so
    they stay binary.
    """
    if not size or x.shape[-1] == size and x.shape[-2] == size:
        return x
    if nearest:
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def planes(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, P, S, S) -> (N, channels, S, S): as is when P == channels, the grey plane copied
    when P == 1, the raw (first) plane alone for a grey encoder on a cache with extra planes."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1:
        return x[:, :1]
    raise ValueError(f"cannot feed {x.shape[1]} image planes to a {channels}-channel encoder")


def normalize(x: torch.Tensor, normalization: dict | None = None) -> torch.Tensor:
    """[0, 1] images -> the encoder's input scale (NORMALIZATION, or a run's recorded one)."""
    norm = normalization or NORMALIZATION
    return (x - norm["mean"]) / norm["std"]


def fit_images(images: torch.Tensor, size: int | None, channels: int) -> torch.Tensor:
    """(N, P, S, S) in [0, 1] -> (N, channels, size, size) in [0, 1]: resized, then planes."""
    return planes(resize(images, size), channels)


def encoder_input(images: torch.Tensor, size: int | None, channels: int,
                  normalization: dict | None = None) -> torch.Tensor:
    """(N, P, S, S) in [0, 1] -> (N, channels, size, size) normalised encoder / UNet input.

    Args:
        images: cache or letterboxed images in [0, 1]; P = 1 (grey) or the cache's planes.
        size: the model's image size (0 / None: keep S).
        channels: the model's input channels.
        normalization: {"mean", "std"} a run recorded (default NORMALIZATION).
    """
    return normalize(fit_images(images, size, channels), normalization)
