"""Batched, per-sample-random augmentations for grey chest X-rays (the contrastive views).

Everything runs on the batch tensor on its own device (no per-image PIL work): per-sample
parameters are drawn on the CPU from the caller's `torch.Generator` and moved to the batch's
device, so the same generator seed gives the same views on any device and a resumed run
repeats them. The geometry (random resized crop, rotation, translation, optional flip) is
one affine matrix per sample applied with a single `F.affine_grid` / `F.grid_sample`.

Unlike SimCLR's ImageNet recipe (Chen et al. 2020, https://arxiv.org/abs/2002.05709) there
is no colour jitter or greyscale conversion (the images are grey), and no horizontal flip by
default: chest anatomy is left-right asymmetric (the heart lies on the patient's left), so a
flipped view is an anatomically different image (dextrocardia), and the anomaly stage flags
flipped films. Intensity jitter (brightness, contrast, gamma), blur and noise stand in for
the differences between X-ray machines, exposures and post-processing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ptxssl.errors import UserError


@dataclass
class AugmentConfig:
    """Augmentation strengths; `AugmentConfig.identity()` switches every one of them off."""

    crop_scale: tuple[float, float] = (0.35, 1.0)  # crop area fraction: keeps at least a lung and the mediastinum
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect (w/h), SimCLR's range: mild anatomical stretch
    rotate: float = 10.0  # max degrees: patient positioning varies by a few degrees, never upside down
    translate: float = 0.05  # max shift, fraction of the image side: off-centre positioning
    hflip: float = 0.0  # flip probability; 0 because a flip moves the heart to the wrong side
    brightness: float = 0.1  # max additive offset on [0, 1] pixels: exposure differences
    contrast: float = 0.2  # max relative change of contrast about the image mean: kVp / windowing
    gamma: float = 0.25  # max |log gamma|: non-linear post-processing curves of different vendors
    blur_p: float = 0.5  # probability of a Gaussian blur (SimCLR's 0.5): detector sharpness
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # sigma range in pixels at 224 px (SimCLR), scaled with size
    noise_p: float = 0.5  # probability of additive Gaussian noise: quantum mottle of low-dose films
    noise_std: float = 0.03  # max noise std on [0, 1] pixels (the std is drawn per sample)

    @classmethod
    def identity(cls) -> AugmentConfig:
        """All strengths zero: the augmentation returns its input (up to float rounding)."""
        return cls(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotate=0.0, translate=0.0, hflip=0.0,
                   brightness=0.0, contrast=0.0, gamma=0.0, blur_p=0.0, noise_p=0.0)


AUGMENT_PRESETS = ("standard", "moco-cxr")


def label_augment(hflip: float = 0.0) -> AugmentConfig:
    """The mild augmentation of training on labels (supervised pretraining, transfer): crops that
    keep 85-100 % of the image (never cutting a finding out), rotation up to 10 degrees, small
    shifts and intensity changes, no blur or noise; flips with probability `hflip`."""
    return AugmentConfig(crop_scale=(0.85, 1.0), crop_ratio=(0.9, 1.1), rotate=10.0, translate=0.05, hflip=hflip,
                         brightness=0.05, contrast=0.1, gamma=0.1, blur_p=0.0, noise_p=0.0)


def augment_preset(name: str, hflip: float = 0.0) -> AugmentConfig:
    """The view augmentation `--augment NAME` selects (UserError naming the choices otherwise).

    standard: the defaults above. moco-cxr: rotation up to 10 degrees only, as MoCo-CXR
    (Sowrirajan et al. 2021, https://arxiv.org/abs/2010.05352) chose for chest X-rays, because
    random crops and blur can remove the finding from a view (it also flipped; here --hflip).
    """
    if name == "standard":
        return AugmentConfig(hflip=hflip)
    if name == "moco-cxr":
        return replace(AugmentConfig.identity(), rotate=10.0, hflip=hflip)
    raise UserError(f"--augment must be one of {', '.join(AUGMENT_PRESETS)} (got {name!r})")


def _uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) CPU parameters -> (N, 1, 1, 1) on the batch's device and dtype."""
    return t.to(like.device, like.dtype).view(-1, 1, 1, 1)


class ChestXrayAugment(nn.Module):
    """Random views of a batch of grey chest X-rays, different for every sample.

    Args:
        cfg: the strengths (defaults: `AugmentConfig()`).

    Shape:
        forward(x (N, C, S, S) in [0, 1], generator) -> (N, C, S, S) in [0, 1], same dtype/device.

    The number and order of random draws does not depend on which operations are on, so
    switching one off leaves the others' parameters unchanged for the same generator state.
    """

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or AugmentConfig()

    def affine(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 8) uniforms -> (N, 2, 3) matrices mapping output to input coordinates in [-1, 1].

        input = R(angle) @ diag(w * flip, h) @ output + centre: the output is a w x h box of
        the input (fractions of the side), rotated about its centre, shifted by `translate`.
        """
        c = self.cfg
        area = _uniform(u[:, 0], *c.crop_scale)
        ratio = _uniform(u[:, 1], math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1])).exp()
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # (N,)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = _uniform(u[:, 2], -1.0, 1.0) * (1 - w) + _uniform(u[:, 4], -2.0, 2.0) * c.translate
        cy = _uniform(u[:, 3], -1.0, 1.0) * (1 - h) + _uniform(u[:, 5], -2.0, 2.0) * c.translate
        angle = torch.deg2rad(_uniform(u[:, 6], -c.rotate, c.rotate))
        flip = torch.where(u[:, 7] < c.hflip, -1.0, 1.0).to(u.dtype)
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos * w * flip, -sin * h, cx], 1),
                            torch.stack([sin * w * flip, cos * h, cy], 1)], 1)  # (N, 2, 3)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.with_mask(x, None, generator)[0]

    def with_mask(self, x: torch.Tensor, mask: torch.Tensor | None,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment images and move their masks (N, 1, S, S) with the same geometry (nearest
        neighbour, so a mask stays binary); intensity changes touch the images only."""
        c, (n, ch, size, _) = self.cfg, x.shape
        u = torch.rand(n, 14, generator=generator, dtype=torch.float64)  # (N, 14), on the CPU
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))

        # geometry: crop, rotation, translation and flip as one resampling
        theta = self.affine(u[:, :8]).to(x.device, x.dtype)  # (N, 2, 3)
        grid = F.affine_grid(theta, [n, ch, size, size], align_corners=False)  # (N, S, S, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if mask is not None:
            mask = F.grid_sample(mask.to(x.dtype), grid, mode="nearest", padding_mode="zeros",
                                 align_corners=False)

        # intensity: gamma on [0, 1], then contrast about the per-image mean, then brightness
        gamma = _per_sample(_uniform(u[:, 8], -c.gamma, c.gamma).exp(), x)
        contrast = _per_sample(_uniform(u[:, 9], 1 - c.contrast, 1 + c.contrast), x)
        brightness = _per_sample(_uniform(u[:, 10], -c.brightness, c.brightness), x)
        x = x.clamp(0, 1) ** gamma
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        x = (x - mean) * contrast + mean + brightness

        # blur with a per-sample sigma (a delta kernel for the samples not blurred)
        sigma = _uniform(u[:, 12], *c.blur_sigma) * size / 224
        x = self.blur(x, torch.where(u[:, 11] < c.blur_p, sigma, 0.0))

        # noise: std uniform in [0, noise_std) for the samples drawn (u < p), one grey plane per
        # sample shared by the channels; drawn on x's device from a generator seeded by `generator`
        std = _per_sample(torch.where(u[:, 13] < c.noise_p, u[:, 13] / max(c.noise_p, 1e-12) * c.noise_std, 0.0), x)
        if c.noise_p > 0 and c.noise_std > 0:
            g = torch.Generator(device=x.device).manual_seed(noise_seed)
            x = x + std * torch.randn((n, 1, size, size), generator=g, device=x.device, dtype=x.dtype)
        return x.clamp(0, 1), mask

    def blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur, sigma (N,) in pixels per sample (0 = unchanged); reflect padding.

        One grouped convolution per axis: each (sample, channel) plane is its own group.
        """
        n, ch, size, _ = x.shape
        if float(sigma.max()) <= 0:
            return x
        radius = min(int(math.ceil(3 * float(sigma.max()))), size - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)  # (K,)
        kernel = torch.exp(-offsets**2 / (2 * sigma.clamp(min=1e-6)[:, None] ** 2))  # (N, K)
        kernel = kernel / kernel.sum(1, keepdim=True)  # sigma -> 0 gives a delta kernel
        kernel = kernel.to(x.device, x.dtype).repeat_interleave(ch, 0)  # (N*C, K)
        planes = F.pad(x.reshape(1, n * ch, size, size), [radius] * 4, mode="reflect")
        planes = F.conv2d(planes, kernel.view(n * ch, 1, -1, 1), groups=n * ch)  # along H
        planes = F.conv2d(planes, kernel.view(n * ch, 1, 1, -1), groups=n * ch)  # along W
        return planes.view(n, ch, size, size)
