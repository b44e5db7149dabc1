"""Lightning's view of a pretraining method (ptxssl/pretrain/methods): the engine's base module
plus the method's step, optimizer and momentum hook."""
from __future__ import annotations

from pathlib import Path

import torch

from ptxssl.encoders import fit_images
from ptxssl.engine.schedule import warmup_cosine
from ptxssl.engine.trainer import EngineModule
from ptxssl.pretrain.methods.base import Method


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
