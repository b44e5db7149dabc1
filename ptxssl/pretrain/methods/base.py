"""What every pretraining method is: an encoder, the heads its loss needs, one step.

A method is a small `nn.Module` (lightly's examples are the model): `step(batch)` returns
named loss terms with the total under "loss", and `embed(x)` gives the (N, D) pooled features
the analysis stage and the probe use. D = `self.feature_dim` is read from the built encoder
(512 for a resnet34, 1024 for a densenet121) and every head sizes itself by it, so a method
works with any `--arch`. The engine (Lightning) owns devices, precision, DDP, checkpoints and
logging; a method never moves tensors between devices itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.engine.config import opt
from ptxssl.engine.schedule import SCHEDULES
from ptxssl.encoders import DEFAULT_ARCH, build_encoder, feature_dim, pooled


SCHEDULE_HELP = ("Learning-rate schedule: cosine (per optimizer step: linear warm-up over --warmup of the run, then "
                 "cosine decay to 0, as SimCLR / MoCo v2 / BYOL), constant, or plateau (supervised only, its default: "
                 "the original study's SGD recipe, lr x 0.1 when the epoch loss has not fallen for 5 epochs).")


@dataclass
class MethodConfig:
    """Options every method has; a method's own config subclasses this with its defaults."""

    lr: float = opt(1e-3, "Peak learning rate.")
    weight_decay: float = opt(1e-5, "Weight decay.")
    schedule: str = opt("cosine", SCHEDULE_HELP)
    warmup: float = opt(0.1, "Warm-up share of the run's optimizer steps (the papers: 10 of 100-1000 epochs; a short "
                             "CPU run keeps the shape, not the epoch count).")


class Method(nn.Module):
    """Base class: subclasses set `name`, `title`, `config_class`, `inputs` and implement `step`.

    `name` is the registry key (`--method`, folder names); `title` is the human name that
    figures and the demo report print ("MoCo v2" for moco), kept here, beside the method, so
    every place that names a method agrees with the one that implements it.

    `inputs` says what the data pipeline feeds `step`:
        "image"  -> batch["image"] (N, C, S, S) in [0, 1]
        "views"  -> batch["views"] = (view1, view2), two augmented copies of each image
        "labels" -> batch["image"] and batch["target"] ((N, K) float, NaN = unknown, or (N,) long)
    """

    name: ClassVar[str]
    title: ClassVar[str]  # the human name, e.g. "MoCo v2": figure titles, the demo report
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    inputs: ClassVar[str] = "image"
    schedules: ClassVar[tuple[str, ...]] = SCHEDULES  # the --schedule values it takes
    # option -> (the paper's value, where it comes from): `--print-config` notes each departure,
    # most of them forced by CPU-sized runs (small batches, few steps, no LARS)
    paper: ClassVar[dict[str, tuple[object, str]]] = {}
    # methods with their own classifier (supervised) score it on the val split every epoch and
    # export the best epoch's encoder: `validation_dataset` gives the val images with targets
    validates: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig, in_channels: int = 1, image_size: int = 64,
                 num_classes: int = 0, arch: str = DEFAULT_ARCH) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.arch = arch
        self.encoder = build_encoder(in_channels, arch)
        self.feature_dim = feature_dim(self.encoder)  # channels of the deepest stage

    @classmethod
    def make_dataset(cls, cfg: MethodConfig, train: CacheDataset) -> tuple[Dataset, int, np.ndarray | None]:
        """The training dataset, the number of classes for the head (0: none), and per-item
        sampling weights (None: uniform). Label-based methods override this."""
        return train, 0, None

    @classmethod
    def validation_dataset(cls, cfg: MethodConfig, data: CacheDataset) -> Dataset | None:
        """`data` (a val or test split) with the targets `validates` scores (None: nothing to score)."""
        return None

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One training step's loss terms; "loss" is the one that is minimised."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) in [0, 1] -> (N, feature_dim) global-average-pooled encoder features."""
        return pooled(self.encoder, x)

    def latent(self, x: torch.Tensor) -> torch.Tensor | None:
        """(N, C, S, S) -> (N, L) the method's own code (AE latent, VAE μ); None if it has none."""
        return None

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        """(N, C, S, S) -> (N, C, S, S) in [0, 1] decoded images; None without a decoder."""
        return None

    def after_step(self, progress: float) -> None:
        """Called after each optimizer step with training progress in [0, 1] (momentum updates)."""

    def configure_optimizer(self) -> tuple[torch.optim.Optimizer, dict | None]:
        """AdamW on every trainable parameter; methods from the literature override this."""
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay), None

    @torch.no_grad()
    def write_figures(self, batch: dict, out_dir) -> list:
        """Write method-specific pictures (e.g. reconstructions) for a fixed batch; return paths."""
        return []


class LabelMethod(Method):
    """A method that classifies labels (weak labels, pseudo-labels): encoder -> pooled -> linear."""

    inputs = "labels"

    def __init__(self, cfg: MethodConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 1,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.head = nn.Linear(self.feature_dim, max(num_classes, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))  # (N, num_classes)
