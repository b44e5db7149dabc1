"""Seeded, stratified subsets of the labelled training images ("few labels" experiments).

Stratified so a 1 % subset keeps the positive share of the full set (with ~22 % positives a
plain random 1 % could hold almost none). Nested: each class is shuffled once by the seed
and a subset takes the first k of each, so with one seed the 5 % subset contains the 1 %
subset, and a Dice-vs-fraction curve measures more labels, not different labels.
"""
from __future__ import annotations

import numpy as np

from ptxssl.errors import UserError


def label_subset(positive: np.ndarray, fraction: float | None = None, count: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """Sorted row indices of a stratified subset of the images.

    Args:
        positive: (N,) bool, True for an image with a pneumothorax.
        fraction: share of the N images to keep, in (0, 1] (at least one image is kept).
        count: number of images to keep, 1..N. Give exactly one of fraction / count.
        seed: the same seed gives the same (and nested) subsets.
    Returns:
        (k,) int64 sorted indices. Positives and negatives in the full set's proportion,
        with at least one of each when both classes exist and k >= 2.
    Raises:
        UserError: naming --label-fraction / --label-count for a bad value.
    """
    positive = np.asarray(positive, dtype=bool).ravel()
    n = positive.size
    if (fraction is None) == (count is None):
        raise UserError("give exactly one of --label-fraction or --label-count")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise UserError(f"--label-fraction must be in (0, 1] (got {fraction})")
        k = max(1, round(fraction * n)) if n else 0
    else:
        k = int(count)  # type: ignore[arg-type]
        if k != count or not 1 <= k <= n:
            raise UserError(f"--label-count must be a whole number from 1 to {n}, the number of "
                            f"training images (got {count})")
    if k == 0:
        raise UserError("--label-fraction: there are no training images to take a subset of")
    rng = np.random.default_rng(seed)
    pos = rng.permutation(np.flatnonzero(positive))
    neg = rng.permutation(np.flatnonzero(~positive))
    k_pos = round(k * pos.size / n)
    if pos.size and neg.size and k >= 2:
        k_pos = min(max(k_pos, 1), k - 1)
    k_pos = min(max(k_pos, k - neg.size), pos.size)  # never more than a class holds
    return np.sort(np.concatenate((pos[:k_pos], neg[:k - k_pos]))).astype(np.int64)
