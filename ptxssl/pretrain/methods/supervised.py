"""Weakly supervised pretraining on the labels a cache carries (ChestX-ray14, CheXpert).

`--target all`: every label column, multi-label BCE with unknown (NaN) entries masked out.
`--target pneumothorax`: the Pneumothorax column alone, binary, with a class-balanced sampler.

An upper bound has to be trained like one. By default: AdamW at --lr 1e-3 with warm-up and a
cosine decay (every method's schedule), the mild augmentation transfer trains with
(`label_augment`), and the best epoch by its own head's AUROC on the val split, whose weights
are the ones exported; that AUROC on val and test is written to encoder.json (`head_auroc`),
so a probe of the encoder can be read beside what the network itself achieves.
`--optimizer sgd --schedule plateau` is the original pneumothorax study's recipe (SGD lr 1e-3,
momentum 0.9, lr ÷10 after 5 epochs without improvement of the epoch's training loss), which
ran to convergence over many epochs: in a few hundred steps it barely moves the weights
(measured: a median 0.43 % change of the conv weights after 300 steps), which the CLI says.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.engine.augment import ChestXrayAugment, label_augment
from ptxssl.engine.config import opt
from ptxssl.engine.data import WithTargets
from ptxssl.engine.schedule import SCHEDULES
from ptxssl.encoders import DEFAULT_ARCH
from ptxssl.pretrain.methods.base import SCHEDULE_HELP, LabelMethod, MethodConfig

TARGETS = ("all", "pneumothorax")
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class SupervisedConfig(MethodConfig):
    target: str = opt("all", "supervised: all (every label, multi-label BCE) or pneumothorax (binary, balanced).")
    optimizer: str = opt("adamw", "supervised: adamw (trains in a short run) or sgd (with --sgd-momentum: the "
                                  "original study's recipe, with --schedule plateau, for runs of many epochs).")
    sgd_momentum: float = opt(0.9, "supervised: SGD momentum.")
    schedule: str = opt("cosine", SCHEDULE_HELP)
    train_augment: bool = opt(True, "supervised: augment the training images as transfer does (crops keeping "
                                    "85-100 %, rotation up to 10 degrees, shifts, intensity; no flips).")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the known (non-NaN) entries of a (N, K) target."""
    known = ~torch.isnan(target)
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


class Supervised(LabelMethod):
    name = "supervised"
    schedules = (*SCHEDULES, "plateau")
    title = "supervised (weak labels)"
    config_class = SupervisedConfig
    validates = True
    paper = {"optimizer": ("sgd", "the pneumothorax study: SGD, momentum 0.9, run to convergence over many epochs"),
             "schedule": ("plateau", "the pneumothorax study: lr x 0.1 after 5 epochs without a lower loss")}

    def __init__(self, cfg: SupervisedConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 1,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.augment = ChestXrayAugment(label_augment()) if cfg.train_augment else None

    @classmethod
    def targets(cls, cfg: SupervisedConfig, data: CacheDataset) -> np.ndarray:
        """(N, K) float targets of `data`'s rows for --target (NaN = unknown; K = 1 for pneumothorax)."""
        if data.labels is None:
            raise UserError(f"--method supervised needs a cache with labels (chestxray14 or chexpert); "
                            f"{data.path} has none")
        if cfg.target not in TARGETS:
            raise UserError(f"--target must be one of {', '.join(TARGETS)} (got {cfg.target!r})")
        labels = data.labels[data.rows]  # (N, K)
        if cfg.target == "all":
            return labels
        if "Pneumothorax" not in data.label_names:
            raise UserError(f"--target pneumothorax: {data.path} has no Pneumothorax label "
                            f"(labels: {', '.join(data.label_names)})")
        return np.nan_to_num(labels[:, [data.label_names.index("Pneumothorax")]])  # (N, 1)

    @classmethod
    def make_dataset(cls, cfg: SupervisedConfig, train: CacheDataset) -> tuple[Dataset, int, np.ndarray | None]:
        y = cls.targets(cfg, train)
        if cfg.target == "all":
            return WithTargets(train, y), y.shape[1], None
        positive = y[:, 0] > 0
        if positive.all() or not positive.any():
            raise UserError(f"--target pneumothorax: the train split of {train.path} has only one class")
        weights = np.where(positive, 0.5 / positive.sum(), 0.5 / (~positive).sum())  # balanced classes
        return WithTargets(train, y), 1, weights

    @classmethod
    def validation_dataset(cls, cfg: SupervisedConfig, data: CacheDataset) -> Dataset | None:
        return WithTargets(data, cls.targets(cfg, data)) if len(data) else None

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"]
        if self.augment is not None and self.training:
            x = self.augment(x, batch["generator"])
        loss = masked_bce(self.logits(x), batch["target"].float())
        return {"loss": loss, "bce": loss}

    def configure_optimizer(self):
        if self.cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.cfg.lr, momentum=self.cfg.sgd_momentum,
                                        weight_decay=self.cfg.weight_decay)
        if self.cfg.schedule != "plateau":
            return optimizer, None  # the module applies --schedule cosine / constant
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=5)
        return optimizer, {"scheduler": plateau, "monitor": "loss_epoch", "interval": "epoch"}
