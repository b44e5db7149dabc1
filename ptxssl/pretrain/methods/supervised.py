"""Weakly supervised pretraining on the labels a cache carries (ChestX-ray14, CheXpert).

`--target all`: every label column, multi-label BCE with unknown (NaN) entries masked out.
`--target pneumothorax`: the Pneumothorax column alone, binary, with a class-balanced sampler,
as in the original pneumothorax study: SGD lr 1e-3, momentum 0.9, lr ÷10 after 5 epochs
without improvement of the epoch's training loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.engine.config import opt
from ptxssl.engine.data import WithTargets
from ptxssl.engine.schedule import SCHEDULES
from ptxssl.pretrain.methods.base import SCHEDULE_HELP, LabelMethod, MethodConfig

TARGETS = ("all", "pneumothorax")


@dataclass
class SupervisedConfig(MethodConfig):
    target: str = opt("all", "supervised: all (every label, multi-label BCE) or pneumothorax (binary, balanced).")
    sgd_momentum: float = opt(0.9, "supervised: SGD momentum.")
    schedule: str = opt("plateau", SCHEDULE_HELP)


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

    @classmethod
    def make_dataset(cls, cfg: SupervisedConfig, train: CacheDataset) -> tuple[Dataset, int, np.ndarray | None]:
        if train.labels is None:
            raise UserError(f"--method supervised needs a cache with labels (chestxray14 or chexpert); "
                            f"{train.path} has none")
        if cfg.target not in TARGETS:
            raise UserError(f"--target must be one of {', '.join(TARGETS)} (got {cfg.target!r})")
        labels = train.labels[train.rows]  # (N, K)
        if cfg.target == "all":
            return WithTargets(train, labels), labels.shape[1], None
        if "Pneumothorax" not in train.label_names:
            raise UserError(f"--target pneumothorax: {train.path} has no Pneumothorax label "
                            f"(labels: {', '.join(train.label_names)})")
        y = labels[:, [train.label_names.index("Pneumothorax")]]  # (N, 1)
        y = np.nan_to_num(y)
        positive = y[:, 0] > 0
        if positive.all() or not positive.any():
            raise UserError(f"--target pneumothorax: the train split of {train.path} has only one class")
        weights = np.where(positive, 0.5 / positive.sum(), 0.5 / (~positive).sum())  # balanced classes
        return WithTargets(train, y), 1, weights

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        loss = masked_bce(self.logits(batch["image"]), batch["target"].float())
        return {"loss": loss, "bce": loss}

    def configure_optimizer(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.cfg.lr, momentum=self.cfg.sgd_momentum,
                                    weight_decay=self.cfg.weight_decay)
        if self.cfg.schedule != "plateau":
            return optimizer, None  # the module applies --schedule cosine / constant
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=5)
        return optimizer, {"scheduler": plateau, "monitor": "loss_epoch", "interval": "epoch"}
