"""Paired bootstrap intervals over held-out images, for the differences `compare`, `rescore` and
`probe` report.

Both rows of a comparison scored the same test images, so resampling images (and keeping each
image's pair together) measures how much the difference owes to which images happened to be
in the test split; the spread between seeds is reported beside it as ± std.
"""
from __future__ import annotations

import warnings

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
    """Mean AUROC over the rows of `a` minus that over the rows of `b`, with a paired bootstrap
    95% interval over the images (columns). Returns (difference, lo, hi).

    a, b: (rows, n) scores on the same n images: the runs (seeds) of two table rows, with
    labels (n,) shared by every run; or one score per finding, with labels (rows, n) one per
    finding. A row whose draw holds one class only is left out of that draw's mean.
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    labels = np.asarray(labels, bool)

    def mean_auroc(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
        rows = np.broadcast_to(labels, scores.shape)
        aurocs = np.array([auroc_rows(y[idx], s[idx]) for y, s in zip(rows, scores)])  # (rows, B)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a draw where every row is one-class
            return np.nanmean(aurocs, axis=0)

    whole = np.arange(a.shape[1])[None]
    diff = float((mean_auroc(a, whole) - mean_auroc(b, whole))[0])
    idx = resample(a.shape[1], n_boot, seed)
    return (diff, *interval(mean_auroc(a, idx) - mean_auroc(b, idx)))
