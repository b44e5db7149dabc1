"""Pictures of embeddings: UMAP scatter plots and score histograms that stay readable at 100k
points.

A 112k-point scatter with default markers is a solid blob and a 50 MB vector file, so points
shrink and fade as N grows, are drawn in a shuffled order (no category hides under another
just because it was drawn first), and are rasterized inside an otherwise vector figure.
The legend keeps the ~15 largest categories and folds the rest into "other".

The figure builders return the matplotlib `Figure` (so tests can inspect titles and labels);
`save_figure` writes it atomically. Figures are bare `matplotlib.figure.Figure` objects (no
pyplot, no backend switch), so importing ptxssl never changes a notebook's backend.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ptxssl.files import atomic_path

MAX_CATEGORIES = 15
_GREY = (0.75, 0.75, 0.75, 1.0)
_MUTED = {"noise", "other", "unknown", "normal", "no finding"}  # drawn grey: the background


def umap_2d(features: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
            sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed `features` (N, D) in 2-d with UMAP (McInnes et al. 2018, arXiv:1802.03426).

    `low_memory=True` keeps the nearest-neighbour descent within a few GB at 112k points. A
    fixed `random_state` makes the same command give the same picture, at the price of
    umap-learn running single-threaded. The first call in a process compiles numba code
    (~15 s).

    Args:
        sample: embed only this many rows, drawn with `seed` (all rows if None or >= N).

    Returns:
        (M, 2) float32 coordinates and the (M,) row indices they belong to, sorted.
    """
    import umap  # deferred: importing umap-learn pulls in numba (seconds)

    n = len(features)
    rows = np.arange(n)
    if sample is not None and sample < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(rows) - 1), min_dist=min_dist,
                        random_state=seed, low_memory=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # the seed's single-thread note
        xy = reducer.fit_transform(np.asarray(features[rows], np.float32))  # (M, 2)
    return xy.astype(np.float32), rows


def marker_style(n: int) -> dict:
    """Marker size (points^2) and alpha that keep N points readable: both fall with N."""
    return {"s": float(np.clip(3000 / max(n, 1), 0.3, 20)), "alpha": float(np.clip(2000 / max(n, 1), 0.15, 0.9))}


def top_categories(categories: np.ndarray, limit: int = MAX_CATEGORIES) -> np.ndarray:
    """`categories` (N,) str with all but the `limit` - 1 most frequent folded into "other"
    (nothing is folded when there are at most `limit`)."""
    values, counts = np.unique(categories, return_counts=True)
    if len(values) <= limit:
        return categories
    keep = values[np.argsort(-counts, kind="stable")[:limit - 1]]
    return np.where(np.isin(categories, keep), categories, "other")


def _colours(names: list[str]) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab20"].colors
    colours, i = {}, 0
    for name in names:
        if name in _MUTED:
            colours[name] = _GREY
        else:
            colours[name] = palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]  # dark shades first
            i += 1
    return colours


def scatter(ax, xy: np.ndarray, categories: np.ndarray, title: str, seed: int = 0) -> None:
    """Draw (N, 2) points coloured by (N,) category strings on `ax`, with a legend."""
    cats = top_categories(np.asarray(categories, dtype=str))
    values, counts = np.unique(cats, return_counts=True)
    order = [values[i] for i in np.argsort(-counts, kind="stable")]
    order = [v for v in order if v not in _MUTED] + [v for v in order if v in _MUTED]  # background last
    colours = _colours(order)
    draw = np.random.default_rng(seed).permutation(len(xy))  # shuffled: no category hides another
    style = marker_style(len(xy))
    ax.scatter(xy[draw, 0], xy[draw, 1], c=[colours[c] for c in cats[draw]], linewidths=0,
               rasterized=True, **style)
    size = dict(zip(values, counts))
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[v], label=f"{v} ({size[v]})")
               for v in order]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False,
              markerscale=1.2, handletextpad=0.2)
    ax.set_title(title)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])


def scatter_figure(xy: np.ndarray, panels: list[tuple[str, np.ndarray]], title: str, seed: int = 0) -> Figure:
    """One scatter panel per (panel title, (N,) categories), side by side, under `title`."""
    fig = Figure(figsize=(6.5 * len(panels), 5))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (panel_title, categories) in zip(axes[0], panels):
        scatter(ax, xy, categories, panel_title, seed=seed)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def histogram_figure(groups: dict[str, np.ndarray], title: str, xlabel: str,
                     threshold: float | None = None) -> Figure:
    """Overlaid density histograms of `groups` (name -> (n,) values) on shared bins.

    Bins span the union of each group's 0.5-99.5th percentiles, and values beyond are
    clipped into the edge bins: a few extreme scores among 100k normal images cannot
    squeeze everything into one bar, while a group that is all tail (an anomaly kind) keeps
    its own range.
    """
    spans = np.array([np.percentile(np.asarray(v, np.float64), [0.5, 99.5]) for v in groups.values() if len(v)])
    lo, hi = (spans[:, 0].min(), spans[:, 1].max()) if len(spans) else (0.0, 1.0)
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    hi = hi if hi > lo else lo + 1.0
    bins = np.linspace(lo, hi, 61)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    colours = _colours(list(groups))
    for name, v in groups.items():
        if len(v):
            ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", linewidth=1.5,
                    color=colours[name] if name not in _MUTED else "0.35", label=f"{name} ({len(v)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` to `path` atomically (format from the suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight")
    return Path(path)
