"""MoCo v2: a query encoder contrasted against a momentum key encoder and a queue of old keys.

He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning",
https://arxiv.org/abs/1911.05722; Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning" (v2: MLP head, blur, cosine schedule), https://arxiv.org/abs/2003.04297.
Query = head(encoder(view 1)); key = momentum head(momentum encoder(view 2)); InfoNCE with the
key as positive and up to `queue_size` earlier keys as negatives (`QueueInfoNCE` below, on
lightly's memory bank: it enqueues the keys after each step and drops the oldest).

Target (momentum) network: a copy of encoder + head with `requires_grad=False`, updated only
by `after_step` with lightly's `update_momentum` (an EMA of the *parameters*), the momentum
rising from `momentum` to 1 on a cosine schedule. Its BatchNorm follows the module's
train/eval mode like the online one's (as in the MoCo reference code); its running statistics
are never exported (only the online encoder is).

Shuffling BN (He et al. Sec. 3.3): BatchNorm over a batch lets a query "see" which key in the
batch is its own through the batch statistics, a shortcut to a low loss. MoCo computes BN per
GPU and shuffles the keys across GPUs before the key encoder, so a query's and its key's BN
groups differ. Here, in every process, the batch is cut into `bn_splits` groups that
BatchNorm normalises separately (split BN: the one-GPU reference code's SplitBatchNorm, done
by running the encoder on each group) and the keys are shuffled between the groups before the
key encoder and put back after; with several processes the keys are shuffled across all of
them too (lightly's `batch_shuffle(distributed=True)`, MoCo's shuffle BN). On GPUs under DDP
the engine converts BatchNorm to SyncBatchNorm, which makes each group global.

Queue: the negatives are the keys of earlier steps. lightly's memory bank starts as random unit
vectors, which MoCo would contrast against for its first queue_size / batch steps; here only
the real keys enqueued so far are negatives (`filled`), and the very first step, with an empty
queue, contrasts each query with the other keys of its batch. Its length must be a multiple
of the global batch (batch size x processes; the loader drops the last partial batch) or a
batch is truncated when the queue wraps; checked at the first step. Under DDP the keys of all
processes are gathered before they are enqueued, so every process holds the same global
queue. The queue is kept in checkpoints, so a resumed run continues with the queue it had.

Defaults, scaled for small runs: temperature 0.2 (v2), queue 4096 (65536 in the papers, for
ImageNet-sized data and 256-image batches), momentum 0.99 -> 1 cosine instead of a fixed
0.999, which over a few thousand steps would leave the key encoder near its random start,
2 BN groups (8 GPUs of 32 images in the paper: a 32-image CPU batch gives 16 per group).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import batch_shuffle, batch_unshuffle
from lightly.utils import dist
from torch import nn

from ptxssl.errors import UserError
from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH, pooled
from ptxssl.pretrain.methods.two_view import MomentumConfig, MomentumMethod


@dataclass
class MoCoConfig(MomentumConfig):
    temperature: float = opt(0.2, "Softmax temperature of the contrastive (InfoNCE) loss (SimCLR/MoCo).")
    queue_size: int = opt(4096, "Negatives in MoCo's queue of past keys; a multiple of --batch-size x "
                                "processes (MoCo).")
    bn_splits: int = opt(2, "BatchNorm groups per batch, keys shuffled between them (MoCo's split / shuffle BN, "
                            "which stops BN statistics from telling a query its key); a divisor of --batch-size; "
                            "1: one group (MoCo).")


class QueueInfoNCE(nn.Module):
    """InfoNCE of queries against their keys (positives) and a queue of earlier keys (negatives).

    Written here rather than lightly's NTXentLoss with a memory bank, whose bank starts as random
    vectors that count as negatives until overwritten: only the `filled` real keys count here.
    The queue itself is lightly's MemoryBankModule (global under DDP, oldest keys dropped).
    """

    def __init__(self, queue_size: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.memory_bank = MemoryBankModule((queue_size, dim), gather_distributed=True, feature_dim_first=False)
        bank = self.memory_bank  # kept in checkpoints (lightly registers them non-persistent)
        bank.register_buffer("bank", bank.bank, persistent=True)
        bank.register_buffer("bank_ptr", bank.bank_ptr, persistent=True)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # real keys in the queue
        self.negatives = 0  # how many the last call contrasted against

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(N, D) queries and keys -> the mean loss; the keys are enqueued when `query` carries
        gradients (training), not when the loss is only evaluated."""
        q, k = F.normalize(query, dim=1), F.normalize(key.detach(), dim=1)
        positive = (q * k).sum(1, keepdim=True)  # (N, 1)
        filled = int(self.filled)
        if filled:
            negative = q @ self.memory_bank.bank[:filled].clone().T  # (N, filled); a copy: enqueuing edits the bank
        else:  # nothing queued yet: the batch's other keys
            negative = (q @ k.T).masked_fill(torch.eye(len(q), dtype=torch.bool, device=q.device), float("-inf"))
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        self.negatives = negative.shape[1] - (0 if filled else 1)  # what this step contrasted against
        if query.requires_grad:
            self.memory_bank(k, update=True)  # gathers every process's keys first
            self.filled.fill_(min(len(self.memory_bank.bank), filled + len(k) * dist.world_size()))
        return loss

    def _load_from_state_dict(self, state: dict, prefix: str, *args, **kwargs) -> None:
        """A checkpoint from before `filled` existed: its whole queue counts, as it did then."""
        state.setdefault(prefix + "filled", torch.tensor(len(self.memory_bank.bank)))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


class MoCo(MomentumMethod):
    name = "moco"
    config_class = MoCoConfig
    title = "MoCo v2"
    paper = {"batch_size": (256, "MoCo v2, 8 GPUs"),
             "queue_size": (65536, "MoCo v2, Chen et al. 2020, for ImageNet-sized data and batch 256"),
             "momentum": (0.999, "MoCo v2, fixed; here raised to 1 on a cosine, for short runs"),
             "hidden_dim": (2048, "MoCo v2 projection head"),
             "lr": (0.03, "MoCo v2: SGD momentum 0.9 at batch 256; AdamW here"),
             "bn_splits": (8, "MoCo Sec. 3.3: shuffling BN over 8 GPUs of 32 images; the one-GPU reference code "
                              "splits its batch in 8")}

    def __init__(self, cfg: MoCoConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        if cfg.queue_size <= 0:
            raise UserError(f"--queue-size must be positive (got {cfg.queue_size}); try 4096")
        if cfg.bn_splits < 1:
            raise UserError(f"--bn-splits must be at least 1 (got {cfg.bn_splits}); try 2")
        self.head = MoCoProjectionHead(self.feature_dim, cfg.hidden_dim, cfg.proj_dim)
        self.make_target("encoder", "encoder_momentum")
        self.make_target("head", "head_momentum")
        self.criterion = QueueInfoNCE(cfg.queue_size, cfg.proj_dim, cfg.temperature)
        self._checked = False

    def check_queue(self, batch_size: int) -> None:
        """The queue must hold a whole number of global batches, and the batch split into the BN
        groups (UserError naming the options)."""
        world = dist.world_size()
        global_batch = batch_size * world
        q = self.cfg.queue_size
        if q % global_batch:
            fit = max(global_batch, round(q / global_batch) * global_batch)
            raise UserError(f"--queue-size {q} is not a multiple of the global batch ({global_batch} = --batch-size "
                            f"{batch_size} x {world} process(es)); use e.g. --queue-size {fit}")
        if batch_size % self.cfg.bn_splits or batch_size < 2 * self.cfg.bn_splits:
            raise UserError(f"--bn-splits {self.cfg.bn_splits} does not cut --batch-size {batch_size} into groups "
                            "of 2 or more images; use a divisor of the batch size, or 1")
        self._checked = True

    def _grouped(self, encoder: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """head(pooled(encoder(x))) per BN group while training: each group's BatchNorm statistics
        are its own (split BN); evaluation uses the running statistics, so one pass."""
        groups = x.chunk(self.cfg.bn_splits) if self.training and self.cfg.bn_splits > 1 else (x,)
        return torch.cat([head(pooled(encoder, group)) for group in groups])

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, g = batch["image"], batch["generator"]
        if not self._checked:
            self.check_queue(x.shape[0])
        query = self._grouped(self.encoder, self.head, self.augment(x, g))  # (N, proj_dim)
        with torch.no_grad():
            views = self.augment(x, g)
            across = dist.world_size() > 1
            if across:  # MoCo's shuffle BN: keys from a random share of the global batch
                views, order = batch_shuffle(views, distributed=True)
            else:  # between the split-BN groups; seeded like the views, so a resume repeats it
                perm = torch.randperm(len(views), generator=g).to(views.device)
                views, order = views[perm], torch.argsort(perm)
            key = self._grouped(self.encoder_momentum, self.head_momentum, views)
            key = batch_unshuffle(key, order, distributed=True) if across else key[order]  # (N, proj_dim)
        loss = self.criterion(query, key)  # enqueues `key` when `query` requires grad
        return {"loss": loss, "negatives": torch.tensor(float(self.criterion.negatives), device=loss.device)}
