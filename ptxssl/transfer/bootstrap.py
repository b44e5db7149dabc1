"""Paired bootstrap intervals over test images, for the differences `compare` reports.

Both rows of a comparison scored the same test images, so resampling images (and keeping each
image's pair together) measures how much the difference owes to which images happened to be
in the test split; the spread between seeds is reported beside it as ± std.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

N_BOOT = 2000


def resample(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement; the same seed gives every metric the same draws."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def interval(values: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles, ignoring NaN draws."""
    return float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))


def paired_bootstrap(diff: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of paired per-image differences, resampling images."""
    diff = np.asarray(diff, np.float64)
    return interval(diff[resample(len(diff), n_boot, seed)].mean(axis=1))


def auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row: (B, n) bool labels and (B, n) scores -> (B,), NaN for a one-class row.

    The Mann-Whitney form with average ranks for ties, which is what sklearn's roc_auc_score
    computes, vectorised over the bootstrap draws.
    """
    labels = np.asarray(labels, bool)
    ranks = rankdata(scores, axis=1)
    pos = labels.sum(axis=1)
    neg = labels.shape[1] - pos
    u = (ranks * labels).sum(axis=1) - pos * (pos + 1) / 2
    return np.where((pos > 0) & (neg > 0), u / np.maximum(pos * neg, 1), np.nan)


def auroc_difference(labels: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean image AUROC of `a` minus that of `b`, with a paired bootstrap 95% interval.

    labels: (n,) bool; a, b: (seeds, n) image scores of each row's runs on the same images
    (the row's AUROC is the mean over its runs, as in the table). Returns (difference, lo, hi).
    """
    labels = np.asarray(labels, bool)
    a, b = np.atleast_2d(a), np.atleast_2d(b)

    def mean_auroc(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.mean([auroc_rows(labels[idx], s[idx]) for s in scores], axis=0)

    whole = np.arange(len(labels))[None]
    diff = float((mean_auroc(a, whole) - mean_auroc(b, whole))[0])
    idx = resample(len(labels), n_boot, seed)
    return (diff, *interval(mean_auroc(a, idx) - mean_auroc(b, idx)))
