"""Pictures a pretraining run writes: image grids (inputs, reconstructions, samples, views).

Drawn on a bare `matplotlib.figure.Figure` (no pyplot), so importing this module never
switches the backend of a notebook or GUI session that imports ptxssl.
"""
from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from ptxssl.engine.augment import ChestXrayAugment
from ptxssl.files import atomic_path


def image_grid(rows: list[torch.Tensor], path: str | Path, title: str,
               row_labels: list[str] | None = None) -> Path:
    """Write rows of (N, C, H, W) [0, 1] images (first channel shown, grey) as one titled PNG."""
    n_cols = max(len(r) for r in rows)
    fig = Figure(figsize=(1.6 * n_cols, 1.7 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j, 0].detach().float().cpu().clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return Path(path)


@torch.no_grad()
def views_figure(augment: ChestXrayAugment, x: torch.Tensor, out_dir: Path, method: str) -> Path:
    """figures/views.png: images (top) and two augmented views of each, from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    x = x[:8]
    return image_grid([x, augment(x, g), augment(x, g)], Path(out_dir) / "views.png",
                      title=f"{method}: input (top) and two augmented views", row_labels=["input", "view 1", "view 2"])
