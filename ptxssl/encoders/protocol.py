"""The evaluation protocol: what an encoder's BatchNorm statistics are when its features are read.

A fresh ResNet in eval mode has every BatchNorm's running mean at 0 and variance at 1, so each
BN layer is the identity; a trained encoder normalises with statistics of its training data.
Compared as they come, a "random init" row is a network that no one would deploy, and the
verdict "SSL vs random" can flip with the BN state alone (measured on a 1,600-image phantom
cache, linear-probe AUROC over 14 findings: random with BN at init 0.687, the same weights after
a precise-BN pass 0.603-0.615, an AE trained 300 steps 0.680). So every encoder in one table goes
through the same step:

    precise   (default) re-estimate every BatchNorm's running mean and variance on reference
              images: a no-grad pass with the BN layers in train mode and `momentum=None`, i.e.
              the plain average over the reference batches instead of an exponential one
              ("precise BN": Wu & Johnson 2021, Rethinking "Batch" in BatchNorm, arXiv:2105.07576).
              Deterministic: the same images in the same batches give the same buffers.
    as-is     keep the buffers the encoder came with (a trained encoder's own running
              statistics; a random one's 0 / 1), named explicitly wherever it is used.

Only BatchNorm buffers change; weights, and any layer that is not BatchNorm (dropout), stay as
they are, in eval mode. `precise_bn` restores nothing: callers that must not touch the model
they were given (the trainer's probe callback) use `bn_restored` around it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from ptxssl.errors import UserError

BN_PROTOCOLS = ("precise", "as-is")
DEFAULT_BN = "precise"


def check_bn(protocol: str) -> str:
    """`protocol` if it is one of BN_PROTOCOLS; otherwise a one-line UserError naming --bn."""
    if protocol not in BN_PROTOCOLS:
        raise UserError(f"--bn must be {' or '.join(BN_PROTOCOLS)} (got {protocol!r}): precise re-estimates "
                        "BatchNorm statistics on the reference images, as-is keeps the encoder's own")
    return protocol


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of `model` (1-, 2- and 3-d, SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterable[torch.Tensor], forward: Callable[[torch.Tensor], object]) -> int:
    """Re-estimate the BatchNorm statistics of `model` from `batches`; return the images seen.

    Args:
        model: the module whose BatchNorm buffers are set (an encoder, or a method holding one).
        batches: reference images, already on the model's device, as `forward` takes them.
            Every batch counts equally (PyTorch's cumulative average with `momentum=None`), so
            give equal batches; a batch of one cannot train a BatchNorm after 1x1 pooling and is
            skipped.
        forward: runs `model` on a batch (e.g. `method.embed`).
    Returns:
        the number of images the statistics come from. `model` is left in eval mode.
    Raises:
        UserError: no reference batch of 2 or more images.
    """
    layers = batchnorms(model)
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches, not an exponential one
        m.train()
    seen = 0
    try:
        for x in batches:
            if len(x) < 2:
                continue
            forward(x)
            seen += len(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    if layers and not seen:
        raise UserError("--bn precise needs at least 2 reference images to re-estimate BatchNorm statistics; "
                        "use more images or --bn as-is")
    return seen


@contextlib.contextmanager
def bn_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: `model` as it is; afterwards its BatchNorm buffers and every module's train/eval
    mode are what they were (so a probe can recalibrate a model that is still training)."""
    layers = batchnorms(model)
    buffers = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, saved in zip(layers, buffers):
            m.load_state_dict(saved)
        for m, training in modes:
            m.training = training
