"""What both transfer tasks (segment, classify) share around training: the run's data
(splits, the labelled subset), the record of that subset, training with best-epoch tracking
and early stopping on val_score, and finishing the run folder.

`run.py` (segmentation) and `classify.py` build their own model and scoring on top of this,
so neither imports the other's training code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.engine.data import eval_loader, train_loader
from ptxssl.engine.trainer import drop_checkpoints, fit, on_training_device
from ptxssl.errors import UserError
from ptxssl.files import write_csv, write_json
from ptxssl.transfer.averaging import average_checkpoints, top_k_paths
from ptxssl.transfer.config import TransferConfig
from ptxssl.transfer.metrics import POSTPROCESS_MODES
from ptxssl.transfer.model import TTA_MODES
from ptxssl.transfer.module import current_keys
from ptxssl.transfer.protocol import SPLITS, balanced_subset, run_splits
from ptxssl.transfer.sampling import ScheduleSampler
from ptxssl.transfer.subset import label_subset

BEST = "checkpoints/best.ckpt"


def _labelled_rows(cfg: TransferConfig, train: CacheDataset) -> np.ndarray:
    rows = train.rows
    positive = train.labels[rows, 0] == 1 if train.labels is not None else np.zeros(len(rows), bool)
    if cfg.balance:
        keep = balanced_subset(positive, cfg.split_seed)
        rows, positive = rows[keep], positive[keep]
    if cfg.label_count:
        picked = label_subset(positive, count=cfg.label_count, seed=cfg.seed)
    else:
        picked = label_subset(positive, fraction=cfg.label_fraction, seed=cfg.seed)
    return rows[picked]


def _check_options(cfg: TransferConfig) -> None:
    if cfg.postprocess not in POSTPROCESS_MODES:
        raise UserError(f"--postprocess must be tuned, fixed or triplet (got {cfg.postprocess!r})")
    if cfg.tta not in TTA_MODES:
        raise UserError(f"--tta must be none or hflip (got {cfg.tta!r})")
    if cfg.average_top_k < 0:
        raise UserError(f"--average-top-k must be 0 or more (got {cfg.average_top_k}); 0 keeps the best epoch")


def _best_callback(cfg: TransferConfig, out: Path) -> ModelCheckpoint:
    """best.ckpt, or with --average-top-k K > 1 the K best epochs as best-epoch=E.ckpt."""
    k = max(cfg.average_top_k, 1)
    return ModelCheckpoint(dirpath=out / "checkpoints", filename="best" if k == 1 else "best-{epoch}",
                           monitor="val_score", mode="max", save_top_k=k, save_last=False,
                           enable_version_counter=False)


def _load_best(module: pl.LightningModule, paths: list[Path]) -> list[int]:
    """Load the mean weights of `paths` (best first) into `module`; their epochs, best first."""
    if not paths:  # no validation ran (e.g. --max-steps 0): the weights as they are
        return []
    state, epochs = average_checkpoints(paths)  # one path: exactly its weights
    module.load_state_dict(current_keys(state))
    return epochs


@dataclass
class RunData:
    """A run's images: the three splits, the labelled training subset, the training size."""

    splits: dict[str, np.ndarray]
    train: CacheDataset
    val: CacheDataset
    test: CacheDataset
    labelled: CacheDataset
    size: int

    @property
    def labelled_positive(self) -> np.ndarray:
        return self.labelled.labels[self.labelled.rows, 0] == 1


def load_run_data(cfg: TransferConfig, masks: bool) -> RunData:
    """Check the cache and options, split it, and take the labelled subset (both tasks)."""
    if not cfg.data or not Path(cfg.data).is_file():
        raise UserError(f"--data {cfg.data or '(missing)'}: cache file not found (make one with "
                        "`ptxssl prepare --dataset siim`)")
    if not cfg.out:
        raise UserError("--out is required: the run folder to write")
    _check_options(cfg)
    splits = run_splits(cfg)
    multi = cfg.in_channels == 3  # a cache with raw,clahe,he feeds them; otherwise grey is copied
    train, val, test = (CacheDataset(cfg.data, with_masks=masks, rows=splits[s], channels=multi) for s in SPLITS)
    if not len(val) or not len(test):
        raise UserError(f"{cfg.data}: transfer needs val and test images (val {len(val)}, test {len(test)}); "
                        "prepare the cache with a larger --split share for them")
    if train.labels is None:
        raise UserError(f"{cfg.data}: no image labels; transfer needs a SIIM cache (prepare --dataset siim)")
    size = cfg.image_size or train.size
    if size % 32:
        raise UserError(f"--image-size must be a multiple of 32 (got {size}); the cache is {train.size} px")
    labelled = CacheDataset(cfg.data, with_masks=masks, rows=_labelled_rows(cfg, train), channels=multi)
    if len(labelled) < 2:
        raise UserError(f"only {len(labelled)} labelled training image(s) selected; use a larger "
                        "--label-fraction or --label-count (at least 2)")
    return RunData(splits, train, val, test, labelled, size)


def record_subset(cfg: TransferConfig, data: RunData, out: Path) -> None:
    """labelled.csv (the training subset) and, for a fresh split or folds, split.csv: part of the result."""
    if rank_zero_only.rank != 0:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "labelled.csv", ["image_id", "pneumothorax"],
              zip(data.labelled.ids, data.labelled_positive.astype(int)))
    if cfg.resplit or cfg.folds:
        write_csv(out / "split.csv", ["image_id", "split"],
                  zip(np.concatenate([CacheDataset(cfg.data, rows=r).ids for r in data.splits.values()]),
                      np.repeat(SPLITS, [len(r) for r in data.splits.values()])))


def fit_best(module: pl.LightningModule, data: RunData, cfg: TransferConfig, out: Path, ckpt: Path | None,
             progress: bool) -> tuple[pl.Trainer, list[int], DataLoader]:
    """Train with the sampler, early stopping and best-checkpoint tracking on val_score, then
    load the best (or the mean of the K best) weights in eval mode, on the training device, in
    every process. Returns the trainer, the epochs the weights came from (best first) and the
    val loader (each process's shard, `eval_loader`)."""
    # full batches only (BatchNorm cannot train on a last batch of one), unless the labelled
    # set is smaller than a batch: then each step sees all of it
    sampler = ScheduleSampler(data.labelled_positive, cfg.sampler, cfg.seed, cfg.epochs,
                              cfg.resample_every, cfg.pos_rate_start, cfg.pos_rate_end)
    loader = train_loader(data.labelled, cfg.batch_size, cfg.workers, cfg.seed,
                          drop_last=len(sampler) >= cfg.batch_size, sampler=sampler)
    val_loader = eval_loader(data.val, cfg.batch_size, cfg.workers, persistent=True)
    best_callback = _best_callback(cfg, out)
    callbacks: list[pl.Callback] = [best_callback]
    if cfg.patience:
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", patience=cfg.patience))
    trainer = fit(module, loader, cfg, out, ckpt, callbacks, progress, val_loader=val_loader)
    # every process: under DDP each scores its shard of val and test (`eval_loader`)
    paths = top_k_paths(best_callback) if cfg.average_top_k > 1 else [p for p in [out / BEST] if p.is_file()]
    epochs = _load_best(module, paths)
    on_training_device(module, trainer).eval()  # the tuning and scoring that follow run where training ran
    return trainer, epochs, val_loader


def finish_run(cfg: TransferConfig, out: Path, metrics: dict) -> dict:
    """Write metrics.json last (`compare` takes a cell with it as finished), then drop the
    checkpoints unless --keep-checkpoints: a grid of runs would otherwise fill the disk."""
    write_json(out / "metrics.json", metrics)
    if not cfg.keep_checkpoints:
        drop_checkpoints(out)
    return metrics
