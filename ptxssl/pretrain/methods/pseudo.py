"""Pretraining on pseudo-labels: classify the clusters `ptxssl cluster` found.

Reads `labels.csv` (`image_id,label`, label -1 = noise / unassigned). Noise images are dropped
(`--noise drop`) or kept as one more class (`--noise keep`). Cache train images without a row
are left out; the number is reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.engine.config import opt
from ptxssl.engine.data import WithTargets
from ptxssl.pretrain.methods.base import LabelMethod, MethodConfig


@dataclass
class PseudoConfig(MethodConfig):
    labels: str = opt("", "pseudo: labels.csv from `ptxssl cluster` (image_id,label; -1 = noise).")
    noise: str = opt("drop", "pseudo: label -1 is dropped (drop) or kept as its own class (keep).")


def read_pseudo_labels(path: str | Path) -> pd.Series:
    """image_id -> int label from a pseudo-label CSV; bad files are UserErrors naming them."""
    path = Path(path)
    if not str(path) or not path.is_file():
        raise UserError(f"--labels {path}: file not found (write one with `ptxssl cluster`)")
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"--labels {path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    if list(frame.columns[:2]) != ["image_id", "label"]:
        raise UserError(f"--labels {path}: expected columns image_id,label; found {','.join(map(str, frame.columns))}")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if labels.isna().any() or (labels % 1 != 0).any():
        bad = frame.loc[labels.isna() | (labels % 1 != 0), "label"].iloc[0]
        raise UserError(f"--labels {path}: label {bad!r} is not an integer")
    if frame["image_id"].duplicated().any():
        raise UserError(f"--labels {path}: image_id {frame.loc[frame['image_id'].duplicated(), 'image_id'].iloc[0]} "
                        "appears twice")
    return pd.Series(labels.astype(int).to_numpy(), index=frame["image_id"])


class Pseudo(LabelMethod):
    name = "pseudo"
    title = "pseudo-labels"
    config_class = PseudoConfig

    @classmethod
    def make_dataset(cls, cfg: PseudoConfig, train: CacheDataset) -> tuple[Dataset, int, np.ndarray | None]:
        if cfg.noise not in ("drop", "keep"):
            raise UserError(f"--noise must be drop or keep (got {cfg.noise!r})")
        labels = read_pseudo_labels(cfg.labels)
        if cfg.noise == "drop":
            labels = labels[labels != -1]
        found = labels.reindex(train.ids)  # aligned to the train rows; NaN = no row
        keep = found.notna().to_numpy()
        if not keep.any():
            raise UserError(f"--labels {cfg.labels}: none of its image_ids is in the train split of "
                            f"{train.path}; was it made from embeddings of this cache?")
        classes = np.unique(found[keep].to_numpy())  # sorted; -1 (kept noise) becomes class 0
        targets = np.searchsorted(classes, found[keep].to_numpy()).astype(np.int64)
        subset = CacheDataset(train.path, split="train", rows=train.rows[keep])
        return WithTargets(subset, targets), len(classes), None

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(self.logits(batch["image"]), batch["target"])
        return {"loss": loss, "ce": loss}
