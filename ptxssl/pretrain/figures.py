"""Pictures a pretraining run writes: image grids (inputs, reconstructions, samples)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ptxssl.files import atomic_path  # noqa: E402


def image_grid(rows: list[torch.Tensor], path: str | Path, title: str,
               row_labels: list[str] | None = None) -> Path:
    """Write rows of (N, C, H, W) [0, 1] images (first channel shown, grey) as one titled PNG."""
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.7 * len(rows) + 0.5),
                             squeeze=False)
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
    plt.close(fig)
    return Path(path)
