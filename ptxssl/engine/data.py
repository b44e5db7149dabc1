"""What a pretraining method reads: cache rows, shuffled reproducibly per epoch.

Randomness lives in two seeded places only, so a resumed run sees the same batches as an
uninterrupted one: the sampler's permutation (seed, epoch) and the augmentation generator
the engine derives from (seed, global step, rank).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, persistent_workers=workers > 0)
