"""Lightning's view of a pretraining method (ptxssl/pretrain/methods): the engine's base module
plus the method's step, optimizer and momentum hook; for a method with its own classifier
(`Method.validates`), that classifier's AUROC on the val split at every epoch end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ptxssl.encoders import fit_images
from ptxssl.engine.data import gather_shards
from ptxssl.engine.schedule import warmup_cosine
from ptxssl.engine.trainer import EngineModule
from ptxssl.pretrain.methods.base import Method
from ptxssl.pretrain.probe import mean_label_auroc


class MethodModule(EngineModule):
    """Lightning's view of a method: one `step` per batch, its optimizer, its momentum hook."""

    def __init__(self, method: Method, config: dict, run_dir: Path) -> None:
        super().__init__(config, run_dir)
        self.method = method

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Cache images -> the method's [0, 1] input at its size and planes (the one input path)."""
        return fit_images(x, self.method.image_size, self.method.in_channels)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.embed(self.adapt(x))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.method.step({**batch, "image": self.adapt(batch["image"]), "generator": self._generator()})
        loss = losses["loss"]
        self.check_finite(loss)
        self.log_dict({k: v.detach() for k, v in losses.items()}, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches:
            return  # a micro-batch of gradient accumulation: no optimizer step yet
        if not hasattr(self, "_total_steps"):  # Lightning recomputes this property on every call
            self._total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        self.method.after_step(min(1.0, self.global_step / self._total_steps))

    def configure_optimizers(self):
        """The method's optimizer; its own scheduler if it has one (supervised's plateau), else the
        method config's --schedule (warm-up + cosine by default), stepped per optimizer step."""
        optimizer, scheduler = self.method.configure_optimizer()
        cfg = self.method.cfg
        if scheduler is None and cfg.schedule != "constant":
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            scheduler = {"scheduler": warmup_cosine(optimizer, total, cfg.warmup), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer


class ValidatedModule(MethodModule):
    """A method with its own classifier (supervised): `val_auroc`, the mean AUROC of its head on
    the val split (every image once under DDP, `eval_loader`), logged at each epoch end; the
    run keeps the best epoch by it."""

    def on_validation_epoch_start(self) -> None:
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def head_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Cache images (n, P, S, S) -> (n, K) float32 probabilities of the method's own head."""
        return torch.sigmoid(self.method.logits(self.adapt(images)).float())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val.append((self.head_probs(batch["image"]).cpu(), batch["target"].float().cpu()))

    def on_validation_epoch_end(self) -> None:
        n = len(self.trainer.val_dataloaders.dataset)
        probs, targets = (gather_shards([t[i].numpy() for t in self._val], n) for i in (0, 1))
        auroc = mean_label_auroc(probs, targets)
        self.log("val_auroc", 0.5 if np.isnan(auroc) else auroc, prog_bar=True)  # NaN: a val split of one class
