"""Torch `Dataset` over a prepared cache, safe with several DataLoader workers.

The HDF5 file is opened lazily in each process (an h5py handle must not cross a fork), and
only the small per-row arrays (ids, split, labels) are held in memory.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ptxssl.errors import UserError

SPLITS = ("train", "val", "test")


class CacheDataset(Dataset):
    """Rows of a cache as dicts of tensors.

    Each item: `image` (1, S, S) float32 in [0, 1]; `index` (row in the cache); `mask`
    (1, S, S) float32 when `with_masks`; `labels` (K,) float32 (NaN = unknown) when the cache
    has labels.

    Args:
        path: a cache written by `ptxssl prepare`.
        split: "train", "val", "test", a list of them, or None for every row.
        with_masks: also return masks (SIIM caches).
        rows: restrict to these cache rows (e.g. a labelled subset), after the split filter.
        channels: return the cache's extra channels (`prepare --channels`) after the raw
            image, `image` then (1 + K, S, S); ignored for a cache without them.
    """

    def __init__(self, path: str | Path, split: str | list[str] | None = None, with_masks: bool = False,
                 rows: np.ndarray | None = None, channels: bool = False) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._open: dict[str, h5py.Dataset] = {}
        try:
            with h5py.File(self.path, "r") as h5:
                self.all_split = all_split = h5["split"].asstr()[:]
                self.anomaly = h5["anomaly"].asstr()[:] if "anomaly" in h5 else None
                self.all_ids = h5["ids"].asstr()[:]
                self.labels = h5["labels"][:] if "labels" in h5 else None
                self.label_names = list(h5["labels"].attrs["names"]) if "labels" in h5 else []
                self.size = int(h5.attrs["size"])
                if with_masks and "masks" not in h5:
                    raise UserError(f"{self.path}: this cache has no masks; prepare a SIIM-style "
                                    "dataset (--dataset siim)")
        except (OSError, KeyError) as e:
            raise UserError(f"{self.path}: not a readable ptxssl cache ({e}); "
                            "rebuild it with `ptxssl prepare`") from None
        wanted = [split] if isinstance(split, str) else split
        bad = [s for s in wanted or [] if s not in SPLITS]
        if bad:
            raise UserError(f"unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
        keep = np.isin(all_split, wanted) if wanted else np.ones(len(all_split), bool)
        self.rows = np.flatnonzero(keep)
        if rows is not None:
            self.rows = np.intersect1d(self.rows, rows)
        self.with_masks = with_masks
        self.channels = channels

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> np.ndarray:
        return self.all_ids[self.rows]

    @property
    def split(self) -> np.ndarray:
        return self.all_split[self.rows]

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """The open HDF5 datasets of this process (opened on first use, after any fork)."""
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
            wanted = ("images", "masks", "channels") if self.channels else ("images", "masks")
            self._open = {name: self._h5[name] for name in wanted if name in self._h5}
        return self._open

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None, "_open": {}}  # each worker opens its own handle

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        data = self._datasets()
        image = data["images"][row][None]  # (1, S, S)
        if "channels" in data:
            image = np.concatenate([image, data["channels"][row]])  # (1 + K, S, S)
        item = {"image": torch.from_numpy(image).float().div_(255), "index": torch.tensor(row)}
        if self.with_masks:
            item["mask"] = torch.from_numpy(data["masks"][row]).float().unsqueeze(0)
        if self.labels is not None:
            item["labels"] = torch.from_numpy(self.labels[row])
        return item
