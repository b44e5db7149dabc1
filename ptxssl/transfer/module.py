"""Lightning's view of a transfer model: the input path, encoder freezing and learning rates
(TransferModule, both tasks), and the UNet's loss and validation score (SegmentationModule)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from tqdm import tqdm

from ptxssl.engine.augment import ChestXrayAugment, label_augment
from ptxssl.engine.config import flat
from ptxssl.engine.data import gather_shards
from ptxssl.engine.device import autocast
from ptxssl.encoders import encoder_input, input_channels, resize
from ptxssl.encoders.protocol import check_bn, precise_bn
from ptxssl.engine.trainer import EngineModule
from ptxssl.transfer.losses import SegmentationLoss
from ptxssl.transfer.model import probabilities

VAL_THRESHOLD = 0.5  # the per-epoch validation score uses a plain threshold; tuning comes after training


def segmentation_augment(hflip: float) -> ChestXrayAugment:
    """Flips and small affine / intensity changes (no crops that could cut a pneumothorax away)."""
    return ChestXrayAugment(label_augment(hflip))


def dice_at(probs: torch.Tensor, masks: torch.Tensor, threshold: float = VAL_THRESHOLD) -> torch.Tensor:
    """(N, 1, S, S) probabilities and masks -> (N,) Dice per image, 1 when both are empty."""
    pred, truth = probs > threshold, masks > 0.5
    inter = (pred & truth).sum((1, 2, 3)).float()
    total = (pred.sum((1, 2, 3)) + truth.sum((1, 2, 3))).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class TransferModule(EngineModule):
    """What both transfer tasks train: a model (`.model`) whose `.encoder` came from an init.

    Images arrive in [0, 1] at the cache's size; `adapt` resizes them (masks with nearest
    neighbour) to the run's size and `forward` feeds them through the one input path
    (`ptxssl.encoders.encoder_input`). The encoder can be frozen for the first epochs (or the
    whole run), its BatchNorm in eval mode too, and learns at its own rate (`encoder_lr_scale`).
    """

    def __init__(self, model: nn.Module, cfg, image_size: int, run_dir: str | Path = ".",
                 in_channels: int | None = None) -> None:
        super().__init__(flat(cfg), Path(run_dir))
        self.model, self.cfg, self.image_size = model, cfg, image_size
        self.in_channels = in_channels or input_channels(model.encoder)  # any arch: not only resnet's conv1
        self.augment = segmentation_augment(cfg.hflip) if cfg.augment else None
        self.frozen_bn = {"protocol": check_bn(cfg.frozen_bn)} if cfg.freeze_epochs else None  # metrics.json

    def adapt(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        return resize(x, self.image_size), None if mask is None else resize(mask, self.image_size, nearest=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, P, S, S) in [0, 1] -> the model's logits."""
        return self.model(encoder_input(x, None, self.in_channels))

    def on_train_start(self) -> None:
        """A frozen encoder under --frozen-bn precise: its BatchNorm statistics re-estimated on the
        labelled training images (un-augmented, through the model's own input path) before the first
        step, so every init is frozen with statistics of this data (a resumed run keeps its own)."""
        if self.frozen_bn is None or self.frozen_bn["protocol"] != "precise" or self.global_step > 0:
            return
        self.model.eval()  # only the encoder's BatchNorm layers learn statistics in this pass
        batches = (self.adapt(batch["image"].to(self.device))[0] for batch in self.trainer.train_dataloader)
        self.frozen_bn["images"] = precise_bn(self.model.encoder, batches, self)
        self.model.train()

    def encoder_frozen(self) -> bool:
        return self.cfg.freeze_epochs < 0 or self.current_epoch < self.cfg.freeze_epochs

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        frozen = self.encoder_frozen()
        self.model.encoder.requires_grad_(not frozen)
        if frozen:  # BatchNorm must not drift while its weights stand still
            self.model.encoder.eval()

    def configure_optimizers(self):
        encoder = list(self.model.encoder.parameters())
        others = [p for n, p in self.model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
        return torch.optim.Adam([{"params": others, "lr": self.cfg.lr},
                                 {"params": encoder, "lr": self.cfg.lr * self.cfg.encoder_lr_scale}])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = current_keys(checkpoint["state_dict"])


def current_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A module state_dict with the model under "model.": checkpoints written before ptxssl 0.1.1
    held it under "unet." (the classifier too), so a run started then still resumes."""
    return {("model." + k[len("unet."):] if k.startswith("unet.") else k): v for k, v in state.items()}


class SegmentationModule(TransferModule):
    """A UNet trained on (image, mask) batches of a SIIM cache with the run's loss; the
    validation score is the mean Dice at a plain 0.5 threshold."""

    def __init__(self, unet: nn.Module, cfg, image_size: int, run_dir: str | Path = ".") -> None:
        super().__init__(unet, cfg, image_size, run_dir)
        self.loss = SegmentationLoss(cfg.loss)
        # a sum and a count, summed over DDP processes: exact with uneven shards (`eval_loader`),
        # where Lightning's own mean of a logged value divides an integer count and truncates it
        self.val_dice = MeanMetric()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, mask = self.adapt(batch["image"], batch["mask"])
        if self.augment is not None:
            x, mask = self.augment.with_mask(x, mask, self._generator())
        losses = self.loss(self(x), mask)
        self.check_finite(losses["loss"])
        self.log_dict({k: v.detach() for k, v in losses.items()}, prog_bar=True, on_step=True, on_epoch=True,
                      batch_size=x.shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, mask = self.adapt(batch["image"], batch["mask"])
        self.val_dice.update(dice_at(torch.sigmoid(self(x)), mask))  # (N,) per image
        self.log("val_score", self.val_dice, on_epoch=True, prog_bar=True)


@torch.no_grad()
def predict_loader(module: TransferModule, loader: DataLoader, progress: bool = False, tta: str = "none",
                   precision: str = "32-true") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, S, S) float32 and masks (N, S, S) bool at the run's size, in dataset order,
    on the module's device in `precision` (resolved). Under DDP, each process scores its
    `eval_loader` shard and rank 0 gets all N (the others keep their shard).

    tta: "none" or "hflip" (`probabilities`); the run tunes and scores with the TTA `predict` uses.
    """
    device = next(module.parameters()).device
    probs, masks = [], []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
        x, mask = module.adapt(batch["image"].to(device), batch["mask"].to(device))
        with autocast(device, precision):
            probs.append(probabilities(module, x, tta)[:, 0].float().cpu().numpy())
        masks.append(mask[:, 0].cpu().numpy() > 0.5)
    n = len(loader.dataset)
    return gather_shards(probs, n, everyone=False), gather_shards(masks, n, everyone=False)
