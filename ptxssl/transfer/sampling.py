"""Which labelled images a segmentation epoch sees: the SIIM-ACR solutions' sampling schedules.

With ~78 % empty masks, an epoch over every image mostly teaches "nothing here". The
published pipelines reweighted by sampling instead:

    all        every labelled image once per epoch (the default);
    balanced   every positive plus as many negatives, the negatives drawn afresh every
               `resample_every` epochs;
    sliding    epochs as long as the labelled set, with a positive share moving linearly
               from `pos_rate_start` (0.8) at the first epoch to `pos_rate_end` (0.4) at the
               last; positives and negatives are cycled through shuffled, so each is reused
               only once all of its class has been seen;
    positives  positive images only (as one study did; validation and test stay complete).

Each epoch's draw depends only on (seed, epoch), like the pretraining sampler, so a resumed
run sees the batches an uninterrupted one would. Epoch length is fixed per mode (Lightning
sizes an epoch once).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from ptxssl.errors import UserError

SAMPLERS = ("all", "balanced", "sliding", "positives")


class ScheduleSampler(Sampler[int]):
    """Indices into the labelled set for one epoch, per the mode (see the module docstring)."""

    def __init__(self, positive: np.ndarray, mode: str = "all", seed: int = 0, epochs: int = 1,
                 resample_every: int = 1, pos_rate_start: float = 0.8, pos_rate_end: float = 0.4) -> None:
        if mode not in SAMPLERS:
            raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)} (got {mode!r})")
        self.positive = np.asarray(positive, bool)
        self.pos, self.neg = np.flatnonzero(self.positive), np.flatnonzero(~self.positive)
        if mode != "all" and not len(self.pos):
            raise UserError(f"--sampler {mode} needs positive images among the labelled ones; there are none")
        if mode == "sliding" and not (0 < pos_rate_end <= 1 and 0 < pos_rate_start <= 1):
            raise UserError("--pos-rate-start and --pos-rate-end must be in (0, 1]")
        if resample_every < 1:
            raise UserError(f"--resample-every must be >= 1 (got {resample_every})")
        self.mode, self.seed, self.epochs, self.epoch = mode, seed, max(1, epochs), 0
        self.resample_every, self.start, self.end = resample_every, pos_rate_start, pos_rate_end

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return {"all": len(self.positive), "balanced": len(self.pos) + min(len(self.pos), len(self.neg)),
                "sliding": len(self.positive), "positives": len(self.pos)}[self.mode]

    def positive_rate(self, epoch: int) -> float:
        """The sliding schedule's positive share at `epoch` (0-based)."""
        t = min(epoch, self.epochs - 1) / max(1, self.epochs - 1)
        return self.start + t * (self.end - self.start)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 31, *key])

    def _cycled(self, group: np.ndarray, start: int, count: int, key: int) -> np.ndarray:
        """`count` items of `group` from position `start` of an endless sequence of shuffles."""
        if not count:
            return group[:0]
        rounds = range(start // len(group), (start + count - 1) // len(group) + 1)
        stream = np.concatenate([self._rng(key, r).permutation(group) for r in rounds])
        offset = start - rounds[0] * len(group)
        return stream[offset: offset + count]

    def indices(self, epoch: int) -> np.ndarray:
        """This epoch's indices, shuffled."""
        if self.mode == "all":
            chosen = np.arange(len(self.positive))
        elif self.mode == "positives":
            chosen = self.pos
        elif self.mode == "balanced":
            draw = self._rng(1, epoch // self.resample_every).permutation(self.neg)[: min(len(self.pos), len(self.neg))]
            chosen = np.concatenate([self.pos, draw])
        else:
            n = len(self)
            k_pos = min(n, round(self.positive_rate(epoch) * n)) if len(self.neg) else n
            seen_pos = sum(min(n, round(self.positive_rate(e) * n)) for e in range(epoch)) if len(self.neg) else epoch * n
            seen_neg = epoch * n - seen_pos
            chosen = np.concatenate([self._cycled(self.pos, seen_pos, k_pos, 2),
                                     self._cycled(self.neg, seen_neg, n - k_pos, 3)])
        return self._rng(0, epoch).permutation(chosen)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices(self.epoch).tolist())
