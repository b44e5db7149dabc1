"""Build and check an encoder by arch: segmentation-models-pytorch's own encoder, nothing else.

The encoder *is* smp's encoder for `--arch` (default resnet34; any smp encoder name:
resnet18, vgg13, densenet121, efficientnet-b3, ...), built by `build_encoder` and nowhere
else, so a pretrained state_dict loads key-for-key, `strict=True`, into
`smp.Unet(arch, encoder_weights=None, in_channels=C).encoder`. Feature sizes come from the
built encoder (`feature_dim`), never from a constant: a resnet34 ends in 512 channels, a
densenet121 in 1024, an efficientnet-b3 in 384.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import segmentation_models_pytorch as smp
import torch
from torch import nn

from ptxssl.errors import UserError

DEFAULT_ARCH = "resnet34"
# the encoders the pneumothorax studies used; named in errors and tried when a file's
# tensors do not fit the arch it records
STUDY_ARCHS = ("resnet18", "resnet34", "vgg13", "densenet121", "efficientnet-b3")


def check_arch(arch: str) -> str:
    """`arch` if smp knows it (its own encoders, or timm's as `tu-NAME`); otherwise a
    UserError suggesting the nearest names."""
    names = smp.encoders.get_encoder_names()
    if arch in names or (arch.startswith("tu-") and len(arch) > 3):
        return arch
    near = difflib.get_close_matches(arch, names, n=3) or list(STUDY_ARCHS)
    raise UserError(f"--arch {arch!r}: not a segmentation_models_pytorch encoder; did you mean "
                    f"{', '.join(near)}? (all names: segmentation_models_pytorch.encoders.get_encoder_names())")


def build_encoder(in_channels: int = 1, arch: str = DEFAULT_ARCH) -> nn.Module:
    """A randomly initialised smp encoder for `arch` (never downloads anything); the one place
    ptxssl builds an encoder, so pretraining, analysis and transfer share its layout."""
    check_channels(in_channels)
    with smp_build_errors(check_arch(arch), in_channels):
        return smp.encoders.get_encoder(arch, in_channels=in_channels, depth=5, weights=None)


def check_channels(in_channels: int) -> int:
    """`in_channels` if it is 1 (grey, the ptxssl policy) or 3 (planes or grey copied); else a UserError."""
    if in_channels not in (1, 3):
        raise UserError(f"--in-channels must be 1 or 3 (got {in_channels})")
    return in_channels


@contextmanager
def smp_build_errors(arch: str, in_channels: int) -> Iterator[None]:
    """Turn smp's refusal to build `arch` (e.g. an encoder that only takes 3 channels) into a
    one-line UserError; used around every smp constructor ptxssl calls."""
    try:
        yield
    except (KeyError, ValueError, RuntimeError, NotImplementedError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"--arch {arch}: smp cannot build this encoder with {in_channels} input channel(s) "
                        f"({first}); choose another, e.g. {', '.join(STUDY_ARCHS)}") from None


@lru_cache(maxsize=None)
def layout(arch: str, in_channels: int = 1) -> tuple[str, dict[str, torch.Size]]:
    """(name of the input convolution's weight, {tensor name: shape}) of `arch`'s encoder.

    Built once per (arch, channels) on the meta device where smp allows it: names and shapes
    without memory or init cost (a real vgg13 spends ~1 s initialising the classifier smp then
    deletes), so every file check can afford it.
    """
    try:
        with torch.device("meta"):
            encoder = build_encoder(in_channels, arch)
    except UserError:  # a few smp encoders (mit_b*) read tensor values while building: not on meta
        encoder = build_encoder(in_channels, arch)
    shapes = {k: v.shape for k, v in encoder.state_dict().items()}
    return first_conv(encoder)[0] + ".weight", shapes


def feature_dim(encoder: nn.Module) -> int:
    """Channels of the encoder's deepest stage: the size of `pooled` features and of every head."""
    return int(encoder.out_channels[-1])


def first_conv(encoder: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, module) of the input convolution, the one smp's `patch_first_conv` adapts to
    1 channel; its weight's second dimension is the encoder's input channel count."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(encoder).__name__} has no Conv2d")


def input_channels(encoder: nn.Module) -> int:
    """How many input planes `encoder` takes (its first convolution's in_channels)."""
    return int(first_conv(encoder)[1].in_channels)
