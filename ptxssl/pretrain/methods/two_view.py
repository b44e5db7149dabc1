"""What the two-view methods share (SimCLR, MoCo, BYOL): their options, the augmentation that
makes the two views, the views figure, and, for MoCo and BYOL, the momentum (EMA) target.

The target network is a frozen deep copy of online modules; after each optimizer step its
parameters move towards the online ones with a momentum raised from `--momentum` to 1 on a
cosine schedule (lightly's `update_momentum` touches parameters only, not BatchNorm buffers).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule

from ptxssl.errors import UserError
from ptxssl.engine.augment import ChestXrayAugment, augment_preset
from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH
from ptxssl.pretrain.methods.base import Method, MethodConfig


@dataclass
class TwoViewConfig(MethodConfig):
    """Options of the methods that compare two augmented views of an image (SimCLR, MoCo, BYOL)."""

    proj_dim: int = opt(128, "Output size of the projection head (SimCLR/MoCo/BYOL).")
    hidden_dim: int = opt(512, "Hidden size of the projection head and of BYOL's prediction head "
                               "(SimCLR/MoCo/BYOL).")
    hflip: float = opt(0.0, "Horizontal-flip probability per augmented view; 0 because a flip puts the "
                            "heart on the wrong side (SimCLR/MoCo/BYOL).")
    augment: str = opt("standard", "View augmentation: standard (crop, rotation, shift, intensity, blur, "
                                   "noise) or moco-cxr (rotation only: crops and blur can cut a finding "
                                   "out of a view) (SimCLR/MoCo/BYOL).")

    def __post_init__(self) -> None:
        augment_preset(self.augment)  # a bad --augment fails when the config is resolved


@dataclass
class MomentumConfig(TwoViewConfig):
    """Two-view methods with a momentum (EMA) target network (MoCo, BYOL)."""

    momentum: float = opt(0.99, "Starting momentum of the target network's EMA, raised to 1 on a cosine "
                                "schedule (MoCo/BYOL).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.momentum <= 1:
            raise UserError(f"--momentum must be in [0, 1] (got {self.momentum}); try 0.99")


class TwoViewMethod(Method):
    """A method that compares two augmented views of each image, made from batch["generator"]."""

    inputs = "image"

    def __init__(self, cfg: TwoViewConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.augment = ChestXrayAugment(augment_preset(cfg.augment, cfg.hflip))

    @torch.no_grad()
    def write_figures(self, batch: dict, out_dir: Path) -> list[Path]:
        from ptxssl.pretrain.figures import views_figure  # matplotlib only when a run draws

        return [views_figure(self.augment, batch["image"], out_dir, self.title)]


class MomentumMethod(TwoViewMethod):
    """A two-view method with a momentum target: `make_target` copies online modules."""

    def __init__(self, cfg: MomentumConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.current_momentum = cfg.momentum
        self._pairs: list[tuple[str, str]] = []

    def make_target(self, online: str, target: str) -> None:
        """self.<target> = a frozen copy of self.<online>, updated by EMA in `after_step`."""
        copied = copy.deepcopy(getattr(self, online))
        deactivate_requires_grad(copied)
        setattr(self, target, copied)
        self._pairs.append((online, target))

    def after_step(self, progress: float) -> None:
        """EMA of the online parameters into the target network, cosine momentum -> 1."""
        self.current_momentum = cosine_schedule(round(progress * 1000), 1001, self.cfg.momentum, 1.0)
        for online, target in self._pairs:
            update_momentum(getattr(self, online), getattr(self, target), m=self.current_momentum)
