"""Seeded per-epoch sampling and the training loader: the permutation depends on (seed, epoch)
only, weights are drawn with replacement, an epoch smaller than a batch is refused, targets ride along."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from ptxssl.engine.data import EpochSampler, WithTargets, train_loader
from ptxssl.errors import UserError


class Rows(Dataset):
    """`n` items that say which row they are."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "image": torch.full((1, 2, 2), float(i))}


def _epoch(sampler: EpochSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_the_permutation_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    first = _epoch(a, 0)
    assert sorted(first) == list(range(50)) and len(a) == 50
    assert first != list(range(50))  # shuffled
    assert _epoch(a, 0) == first  # iterating again changes nothing
    second = _epoch(a, 1)
    assert sorted(second) == list(range(50)) and second != first
    assert _epoch(b, 1) == second  # a resumed run that jumps straight to epoch 1 sees the same order
    assert _epoch(b, 0) == first
    assert _epoch(EpochSampler(50, seed=4), 0) != first


def test_weights_are_drawn_with_replacement_following_them():
    n = 4000
    weights = np.zeros(n)
    weights[:3] = [1.0, 3.0, 0.0]  # row 2 and rows 3.. weigh nothing
    sampler = EpochSampler(n, seed=0, weights=weights)
    draws = np.array(_epoch(sampler, 0))
    assert len(draws) == n == len(sampler)
    assert set(draws.tolist()) == {0, 1}  # with replacement, and zero weight never drawn
    # P(row 1) = 0.75; the binomial standard deviation of the share is sqrt(0.75 * 0.25 / 4000) = 0.007
    assert abs(np.mean(draws == 1) - 0.75) < 0.03
    assert _epoch(EpochSampler(n, seed=0, weights=weights), 0) == draws.tolist()
    assert _epoch(sampler, 1) != draws.tolist()


def test_train_loader_follows_the_seeded_sampler_and_drops_the_last_partial_batch():
    loader = train_loader(Rows(10), batch_size=4, workers=0, seed=5, drop_last=True)
    order = _epoch(EpochSampler(10, seed=5), 2)
    loader.sampler.set_epoch(2)  # what Lightning does each epoch
    batches = [b["index"].tolist() for b in loader]
    assert batches == [order[:4], order[4:8]]  # the last 2 rows are dropped
    kept = train_loader(Rows(10), batch_size=4, workers=0, seed=5, drop_last=False)
    assert [len(b["index"]) for b in kept] == [4, 4, 2]


def test_an_epoch_smaller_than_a_batch_is_refused_when_batches_must_be_full():
    with pytest.raises(UserError) as err:
        train_loader(Rows(5), batch_size=8, workers=0, seed=0, drop_last=True)
    message = str(err.value)
    assert "\n" not in message and "--batch-size 8" in message and "5 images" in message
    assert len(list(train_loader(Rows(5), batch_size=8, workers=0, seed=0, drop_last=False))) == 1


def test_with_targets_adds_each_rows_target():
    labels = np.array([[0, 1], [1, 0], [1, 1]])  # per-row label vectors
    ds = WithTargets(Rows(3), labels)
    assert len(ds) == 3
    item = ds[2]
    assert item["index"] == 2 and torch.equal(item["image"], Rows(3)[2]["image"])
    assert torch.equal(item["target"], torch.tensor([1, 1]))
    assert WithTargets(Rows(3), np.array([2, 0, 1]))[0]["target"].item() == 2  # class ids
