"""`transfer --average-top-k K`: the test model is the mean of the K best epochs' weights.

Neighbouring good epochs sit in one basin of the loss; their average is usually at least as
good as the single best epoch and less tied to the one epoch validation happened to favour
(the weight averaging several SIIM-ACR solutions used). Floating tensors are averaged;
integer ones (BatchNorm's num_batches_tracked) are counters, not weights, and are taken from
the best checkpoint. Checkpoints are read weights-only (no unpickling of arbitrary objects).
"""
from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint


def top_k_paths(callback: ModelCheckpoint) -> list[Path]:
    """The checkpoints `callback` kept, best validation score first (only files that exist)."""
    descending = callback.mode == "max"
    ranked = sorted(callback.best_k_models.items(), key=lambda kv: float(kv[1]), reverse=descending)
    return [Path(p) for p, _ in ranked if Path(p).is_file()]


def average_checkpoints(paths: list[Path]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The mean of the checkpoints' "state_dict"s and their epochs; `paths[0]` (the best)
    supplies every non-floating tensor. All must hold the same keys. Read one at a time, so
    memory holds one checkpoint (with its optimiser state) and a float64 running sum."""
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    total: dict[str, torch.Tensor] = {}
    best: dict[str, torch.Tensor] = {}
    epochs = []
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
        epochs.append(int(ckpt["epoch"]))
        if not best:
            best = state
            total = {k: v.to(torch.float64) for k, v in state.items() if v.is_floating_point()}
            continue
        if state.keys() != best.keys():
            raise ValueError(f"average_checkpoints: {path} holds other tensors than {paths[0]}")
        for key in total:
            total[key] += state[key].to(torch.float64)
    averaged = {k: (total[k] / len(paths)).to(v.dtype) if k in total else v for k, v in best.items()}
    return averaged, epochs
