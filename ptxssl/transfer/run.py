"""`ptxssl transfer`: a UNet with a chosen encoder initialisation, trained on SIIM masks.

The recipe follows the original study by default (focal + Dice loss, Adam lr 1e-4, flips and
small affine changes, batch 8), through the same Lightning engine as pretraining, so devices,
precision, DDP, checkpoints and `--resume` behave the same. The best epoch by validation
score is kept; post-processing (threshold, minimum component area) is tuned on validation
only and then applied once to the fixed test split.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_json
from ptxssl.pretrain.config import TrainConfig, opt, resolve
from ptxssl.pretrain.data import train_loader
from ptxssl.pretrain.encoder import NORMALIZATION
from ptxssl.pretrain.engine import clear_run_dir, fit, prepare_run_dir
from ptxssl.transfer.model import META_FILE, MODEL_DIR, build_unet, save_model
from ptxssl.transfer.module import SegmentationModule, predict_loader
from ptxssl.transfer.metrics import dice_per_image, evaluate, postprocess, siim_score, tune_postprocess
from ptxssl.transfer.protocol import SPLITS, balanced_subset, split_rows
from ptxssl.transfer.subset import label_subset

BEST = "checkpoints/best.ckpt"


@dataclass
class TransferConfig(TrainConfig):
    """The transfer run's options; the common training options come from TrainConfig."""

    encoder: str = opt("random", "Encoder init: random, imagenet, imagenet:FILE, an encoder.safetensors or "
                                 "a pretrain run folder.")
    epochs: int = opt(20, "Passes over the labelled training images.")
    batch_size: int = opt(8, "Images per batch and device.")
    lr: float = opt(1e-4, "Adam learning rate of the decoder and head.")
    encoder_lr_scale: float = opt(1.0, "Encoder learning rate as a fraction of --lr (e.g. 0.1).")
    freeze_epochs: int = opt(0, "Train only the decoder for this many first epochs (encoder BatchNorm "
                                "in eval mode too); -1: the whole run (a frozen encoder).")
    focal_weight: float = opt(1.0, "Weight of the focal loss term.")
    dice_weight: float = opt(1.0, "Weight of the Dice loss term.")
    hflip: float = opt(0.5, "Horizontal flip probability of the training augmentation.")
    augment: bool = opt(True, "Flips and small affine / intensity changes on training images.")
    label_fraction: float = opt(1.0, "Train on this stratified fraction of the training labels.")
    label_count: int = opt(0, "Train on this many labelled images instead (0: use --label-fraction).")
    patience: int = opt(10, "Stop after this many epochs without a better validation score (0: never).")
    resplit: str = opt("", "Split the cache's images afresh into train,val,test fractions (e.g. "
                           "0.7,0.15,0.15), seeded by --split-seed; empty: the cache's patient-level split.")
    split_seed: int = opt(0, "Seed of --resplit and of --balance's negatives.")
    balance: bool = opt(False, "Train on every positive plus as many negatives, before --label-fraction.")
    postprocess: str = opt("tuned", "tuned: threshold and minimum area searched on val; fixed: --threshold, "
                                    "no minimum area.")
    threshold: float = opt(0.5, "Probability threshold when --postprocess fixed.")


def resolve_config(config_file: str | Path | None = None, overrides: dict | None = None,
                   preset: dict | None = None) -> TransferConfig:
    """Defaults < `preset` (a protocol's options) < `config_file` < `overrides`, as for pretraining."""
    return resolve([TransferConfig], config_file, dict(overrides or {}), "transfer", preset)[0]


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


def _write_csv(path: Path, header: list[str], columns: list) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(zip(*columns))


def transfer(cfg: TransferConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train, pick the best epoch, tune post-processing on val, score test; return metrics.

    The run folder gets config.yaml, labelled.csv (the training subset), metrics.csv,
    checkpoints/, metrics.json, model/ (smp `save_pretrained`) and ptxssl.json.
    """
    if not cfg.data or not Path(cfg.data).is_file():
        raise UserError(f"--data {cfg.data or '(missing)'}: cache file not found (make one with "
                        "`ptxssl prepare --dataset siim`)")
    if not cfg.out:
        raise UserError("--out is required: the run folder to write")
    out = Path(cfg.out)
    ckpt = prepare_run_dir(out, resume, overwrite)
    if cfg.postprocess not in ("tuned", "fixed"):
        raise UserError(f"--postprocess must be tuned or fixed (got {cfg.postprocess!r})")
    splits = split_rows(cfg.data, cfg.resplit, cfg.split_seed)
    train, val, test = (CacheDataset(cfg.data, with_masks=True, rows=splits[s]) for s in SPLITS)
    if not len(val) or not len(test):
        raise UserError(f"{cfg.data}: transfer needs val and test images (val {len(val)}, test {len(test)}); "
                        "prepare the cache with a larger --split share for them")
    size = cfg.image_size or train.size
    if size % 32:
        raise UserError(f"--image-size must be a multiple of 32 (got {size}); the cache is {train.size} px")
    rows = _labelled_rows(cfg, train)
    labelled = CacheDataset(cfg.data, with_masks=True, rows=rows)
    if len(labelled) < 2:
        raise UserError(f"only {len(labelled)} labelled training image(s) selected; use a larger "
                        "--label-fraction or --label-count (at least 2)")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the weights are drawn
    unet, init = build_unet(cfg.encoder, cfg.in_channels)
    module = SegmentationModule(unet, cfg, size, out)
    if overwrite and ckpt is None:
        clear_run_dir(out, ("metrics.json", "test_dice.csv", META_FILE, MODEL_DIR, BEST))
    if rank_zero_only.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        positive = (labelled.labels[labelled.rows, 0] == 1).astype(int)
        _write_csv(out / "labelled.csv", ["image_id", "pneumothorax"], [labelled.ids, positive])
        if cfg.resplit:  # the split is part of the result: keep it with the run
            _write_csv(out / "split.csv", ["image_id", "split"],
                       [np.concatenate([CacheDataset(cfg.data, rows=r).ids for r in splits.values()]),
                        np.repeat(SPLITS, [len(r) for r in splits.values()])])
    # full batches only (BatchNorm cannot train on a last batch of one), unless the labelled
    # set is smaller than a batch: then each step sees all of it
    loader = train_loader(labelled, cfg.batch_size, cfg.workers, cfg.seed,
                          drop_last=len(labelled) >= cfg.batch_size)
    val_loader = DataLoader(val, batch_size=cfg.batch_size, num_workers=cfg.workers)
    callbacks: list[pl.Callback] = [ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_score",
                                                    mode="max", save_top_k=1, save_last=False,
                                                    enable_version_counter=False)]
    if cfg.patience:
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", patience=cfg.patience))
    trainer = fit(module, loader, cfg, out, ckpt, callbacks, progress, val_loader=val_loader)
    if trainer.global_rank != 0:
        return {}
    best = out / BEST
    if best.is_file():  # the best epoch's weights (no unpickling of arbitrary objects)
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    module.eval()
    val_probs, val_masks = predict_loader(module, val_loader, progress)
    if cfg.postprocess == "fixed":
        tuned = {"threshold": cfg.threshold, "min_area_fraction": 0.0,
                 "score": siim_score(postprocess(val_probs, cfg.threshold, 0.0), val_masks)}
    else:
        tuned = tune_postprocess(val_probs, val_masks)
    test_loader = DataLoader(test, batch_size=cfg.batch_size, num_workers=cfg.workers)
    test_probs, test_masks = predict_loader(module, test_loader, progress)
    scores = evaluate(test_probs, test_masks, tuned["threshold"], tuned["min_area_fraction"])
    dice = dice_per_image(postprocess(test_probs, tuned["threshold"], tuned["min_area_fraction"]), test_masks)
    metrics = {"test": scores, "val_tuned": tuned, "encoder": init, "labelled_images": len(labelled),
               "labelled_positive": int((labelled.labels[labelled.rows, 0] == 1).sum()),
               "best_epoch": _best_epoch(best), "epochs_run": trainer.current_epoch, "steps": trainer.global_step,
               "image_size": size, "test_images": len(test), "seed": cfg.seed,
               "seconds": round(trainer.fit_seconds, 1)}
    _write_csv(out / "test_dice.csv", ["image_id", "dice"], [test.ids, np.round(dice, 6)])  # per image, for paired comparisons
    meta = {"image_size": size, "in_channels": cfg.in_channels, "normalization": NORMALIZATION,
            "threshold": tuned["threshold"], "min_area_fraction": tuned["min_area_fraction"], "encoder": init}
    save_model(module.unet, out, meta, card=_card(cfg, metrics), metrics=scores, dataset=str(cfg.data))
    write_json(out / "metrics.json", metrics)  # last: `compare` takes a cell with metrics.json as finished
    return metrics


def _best_epoch(best: Path) -> int | None:
    if not best.is_file():
        return None
    return int(torch.load(best, map_location="cpu", weights_only=True)["epoch"])


def _card(cfg: TransferConfig, metrics: dict) -> str:
    test = metrics["test"]
    return (f"UNet (ResNet-34 encoder, init `{cfg.encoder}`) trained by ptxssl on `{cfg.data}` "
            f"({metrics['labelled_images']} labelled images, {cfg.image_size or 'cache'} px).\n\n"
            f"Test SIIM score {test['siim_dice']:.4f}, positive-image Dice {test['positive_dice']:.4f}, "
            f"image AUROC {test['image_auroc']:.4f} on {metrics['test_images']} images.\n\n"
            f"Command: `ptxssl transfer --config config.yaml` in the run folder.")

