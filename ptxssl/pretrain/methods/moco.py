"""MoCo v2: a query encoder contrasted against a momentum key encoder and a queue of old keys.

He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning",
https://arxiv.org/abs/1911.05722; Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning" (v2: MLP head, blur, cosine schedule), https://arxiv.org/abs/2003.04297.
Query = head(encoder(view 1)); key = momentum head(momentum encoder(view 2)); InfoNCE with the
key as positive and `queue_size` earlier keys as negatives (lightly's `NTXentLoss` with a
memory bank is the queue: it enqueues the keys after each step and drops the oldest).

Target (momentum) network: a copy of encoder + head with `requires_grad=False`, updated only
by `after_step` with lightly's `update_momentum` (an EMA of the *parameters*), the momentum
rising from `momentum` to 1 on a cosine schedule. BatchNorm: the momentum network follows
the module's train/eval mode like the online one, so in training its BN normalises with the
statistics of the key batch (as in the MoCo reference code); its running statistics are
updated by its own forward passes, not EMA'd, and are never exported (only the online
encoder is). No shuffling BN: in one process the batch is one BN batch, so there is nothing
to shuffle; under DDP use SyncBatchNorm, the "global BN" SimCLR gives as the alternative to
shuffling (Chen et al. 2020, Sec. 2.2).

Queue: its length must be a multiple of the global batch (batch size x processes; the loader
drops the last partial batch) or lightly silently truncates a batch when the queue wraps;
checked at the first step. Under DDP the keys of all processes are gathered before they are
enqueued (`gather_distributed=True`), so every process holds the same global queue. The queue
is kept in checkpoints (lightly registers it as non-persistent; we re-register it), so a
resumed run continues with the queue it had.

Defaults, scaled for small runs: temperature 0.2 (v2), queue 4096 (65536 in the papers, for
ImageNet-sized data and 256-image batches), momentum 0.99 -> 1 cosine instead of a fixed
0.999, which over a few thousand steps would leave the key encoder near its random start.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.utils import dist

from ptxssl.errors import UserError
from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH, pooled
from ptxssl.pretrain.methods.two_view import MomentumConfig, MomentumMethod


@dataclass
class MoCoConfig(MomentumConfig):
    temperature: float = opt(0.2, "Softmax temperature of the contrastive (InfoNCE) loss (SimCLR/MoCo).")
    queue_size: int = opt(4096, "Negatives in MoCo's queue of past keys; a multiple of --batch-size x "
                                "processes (MoCo).")


class MoCo(MomentumMethod):
    name = "moco"
    config_class = MoCoConfig
    title = "MoCo v2"
    paper = {"batch_size": (256, "MoCo v2, 8 GPUs"),
             "queue_size": (65536, "MoCo v2, Chen et al. 2020, for ImageNet-sized data and batch 256"),
             "momentum": (0.999, "MoCo v2, fixed; here raised to 1 on a cosine, for short runs"),
             "hidden_dim": (2048, "MoCo v2 projection head"),
             "lr": (0.03, "MoCo v2: SGD momentum 0.9 at batch 256; AdamW here")}

    def __init__(self, cfg: MoCoConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        if cfg.queue_size <= 0:
            raise UserError(f"--queue-size must be positive (got {cfg.queue_size}); try 4096")
        self.head = MoCoProjectionHead(self.feature_dim, cfg.hidden_dim, cfg.proj_dim)
        self.make_target("encoder", "encoder_momentum")
        self.make_target("head", "head_momentum")
        self.criterion = NTXentLoss(temperature=cfg.temperature, memory_bank_size=(cfg.queue_size, cfg.proj_dim),
                                    gather_distributed=True)
        bank = self.criterion.memory_bank  # keep the queue in checkpoints (lightly: non-persistent)
        bank.register_buffer("bank", bank.bank, persistent=True)
        bank.register_buffer("bank_ptr", bank.bank_ptr, persistent=True)
        self._queue_checked = False

    def check_queue(self, batch_size: int) -> None:
        """The queue must hold a whole number of global batches (UserError naming the options)."""
        world = dist.world_size()
        global_batch = batch_size * world
        q = self.cfg.queue_size
        if q % global_batch:
            fit = max(global_batch, round(q / global_batch) * global_batch)
            raise UserError(f"--queue-size {q} is not a multiple of the global batch ({global_batch} = --batch-size "
                            f"{batch_size} x {world} process(es)); use e.g. --queue-size {fit}")
        self._queue_checked = True

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, g = batch["image"], batch["generator"]
        if not self._queue_checked:
            self.check_queue(x.shape[0])
        query = self.head(pooled(self.encoder, self.augment(x, g)))  # (N, proj_dim)
        with torch.no_grad():
            key = self.head_momentum(pooled(self.encoder_momentum, self.augment(x, g)))  # (N, proj_dim)
        loss = self.criterion(query, key)  # enqueues `key` when `query` requires grad
        return {"loss": loss, "negatives": torch.tensor(float(self.cfg.queue_size), device=loss.device)}
