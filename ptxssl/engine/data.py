"""The loaders every training and evaluation command reads cache rows through.

Training: shuffled reproducibly per epoch. Randomness lives in two seeded places only, so a
resumed run sees the same batches as an uninterrupted one: the sampler's permutation (seed,
epoch) and the augmentation generator the engine derives from (seed, global step, rank).
Under DDP, Lightning wraps the sampler so each process trains on a disjoint shard and forwards
`set_epoch` to it (tests/engine/test_ddp.py checks both over two epochs).

Evaluation: each DDP process scores its own shard, no image twice (`EvalShards`), and
`gather_shards` puts the results back in dataset order.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ptxssl.errors import UserError


class EpochSampler(Sampler[int]):
    """A random permutation (or, with `weights`, a weighted draw with replacement) that depends
    only on (seed, epoch); Lightning calls `set_epoch`."""

    def __init__(self, n: int, seed: int, weights: np.ndarray | None = None) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class WithTargets(Dataset):
    """Adds `target` to each item of a dataset: a per-row array of class ids or label vectors."""

    def __init__(self, base: Dataset, targets: np.ndarray) -> None:
        self.base, self.targets = base, torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return {**self.base[i], "target": self.targets[i]}


def train_loader(ds: Dataset, batch_size: int, workers: int, seed: int, drop_last: bool,
                 weights: np.ndarray | None = None, sampler: Sampler | None = None) -> DataLoader:
    """The training DataLoader: seeded per-epoch shuffling (or `sampler`, any sampler with
    `set_epoch`); `drop_last` keeps batch sizes equal (MoCo's queue needs it)."""
    sampler = sampler or EpochSampler(len(ds), seed, weights)
    if drop_last and len(sampler) < batch_size:
        raise UserError(f"--batch-size {batch_size} is larger than an epoch ({len(sampler)} images); lower it")
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def world() -> tuple[int, int]:
    """(processes, this process's rank) of the running DDP job; (1, 0) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class EvalShards(DistributedSampler):
    """Rows rank, rank + W, rank + 2W, ... of an evaluation set for process `rank` of W: every
    image exactly once over the job, which Lightning's default DistributedSampler does not give
    (it repeats images to even out the shards, skewing a validation score and the best epoch).

    A DistributedSampler subclass only so that Lightning leaves it in place; the job's size is
    read when iterated, since loaders are built before Lightning starts the process group.
    """

    def __init__(self, n: int) -> None:  # no super().__init__(): it would ask for the process group now
        self.n, self.epoch = n, 0

    def __iter__(self) -> Iterator[int]:
        size, rank = world()
        return iter(range(rank, self.n, size))

    def __len__(self) -> int:
        size, rank = world()
        return len(range(rank, self.n, size))


def eval_loader(ds: Dataset, batch_size: int, workers: int, persistent: bool = False) -> DataLoader:
    """An evaluation DataLoader: the process's `EvalShards` shard in order, pinned memory on CUDA
    machines; `persistent` keeps the workers between passes (a validation loader, read every epoch)."""
    return DataLoader(ds, batch_size=batch_size, sampler=EvalShards(len(ds)), num_workers=workers,
                      persistent_workers=persistent and workers > 0, pin_memory=torch.cuda.is_available())


def gather_shards(batches: list[np.ndarray], n: int, everyone: bool = True) -> np.ndarray | None:
    """The per-batch arrays every process computed on its `EvalShards` shard, joined and put back
    in dataset order (row i came from process i mod W); outside a DDP job, just joined.
    `everyone=False` gathers on rank 0 only (the others get their own shard back, None if it was
    empty): what post-fit scoring needs, where every process holding every probability map would
    multiply the memory by W. A process with no image (fewer images than processes) sends None."""
    size, rank = world()
    if size == 1:
        return np.concatenate(batches)
    local = np.concatenate(batches) if batches else None
    parts: list = [None] * size
    # numpy arrays of different lengths: torch's all_gather needs equal shapes
    if everyone:
        dist.all_gather_object(parts, local)
    else:
        dist.gather_object(local, parts if rank == 0 else None, dst=0)
        if rank != 0:
            return local
    like = next(part for part in parts if part is not None)
    out = np.empty((n, *like.shape[1:]), dtype=like.dtype)
    for rank, part in enumerate(parts):
        if part is not None:
            out[rank::size] = part
    return out
