"""`ptxssl transfer`: a UNet with a chosen encoder initialisation, trained on SIIM masks.

The recipe follows the original study by default (focal + Dice loss, Adam lr 1e-4, flips and
small affine changes, batch 8), through the same Lightning engine as pretraining, so devices,
precision, DDP, checkpoints and `--resume` behave the same. The best epoch by validation
score is kept (or the mean weights of the K best, `--average-top-k`); post-processing
(threshold and minimum component area, or the triplet rule; see metrics.py) is tuned on
validation only and then applied once to the fixed test split, both with the test-time
augmentation (`--tta`) that `predict` will use.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ptxssl.datasets.cache import cache_channels
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.files import write_csv, write_json
from ptxssl.engine.config import TrainConfig, opt, resolve
from ptxssl.engine.data import train_loader
from ptxssl.pretrain.encoder import NORMALIZATION
from ptxssl.engine.trainer import clear_run_dir, drop_checkpoints, fit, prepare_run_dir
from ptxssl.transfer.averaging import average_checkpoints, top_k_paths
from ptxssl.transfer.metrics import POSTPROCESS_MODES, binarise, dice_per_image, evaluate, tune_on_val, tuned_rule
from ptxssl.transfer.model import META_FILE, MODEL_DIR, TTA_MODES, build_unet, save_model
from ptxssl.transfer.module import SegmentationModule, predict_loader
from ptxssl.transfer.losses import DEFAULT_LOSS
from ptxssl.transfer.protocol import SPLITS, balanced_subset, run_splits
from ptxssl.transfer.sampling import ScheduleSampler
from ptxssl.transfer.subset import label_subset

BEST = "checkpoints/best.ckpt"


@dataclass
class TransferConfig(TrainConfig):
    """The transfer run's options; the common training options come from TrainConfig."""

    task: str = opt("segment", "segment (a UNet on the masks) or classify (the encoder + a linear head on the "
                               "image labels, threshold tuned for F1 on val).")
    encoder: str = opt("random", "Encoder init: random, imagenet, imagenet:FILE, an encoder.safetensors or "
                                 "a pretrain run folder.")
    arch: str = opt("", "Encoder architecture: any segmentation_models_pytorch encoder name (resnet18, resnet34, "
                        "vgg13, densenet121, efficientnet-b3, ...); empty: the --encoder file's arch, resnet34 "
                        "for random / imagenet.")
    epochs: int = opt(20, "Passes over the labelled training images.")
    batch_size: int = opt(8, "Images per batch and device.")
    lr: float = opt(1e-4, "Adam learning rate of the decoder and head.")
    encoder_lr_scale: float = opt(1.0, "Encoder learning rate as a fraction of --lr (e.g. 0.1).")
    freeze_epochs: int = opt(0, "Train only the decoder for this many first epochs (encoder BatchNorm "
                                "in eval mode too); -1: the whole run (a frozen encoder).")
    loss: str = opt(DEFAULT_LOSS, "Loss terms NAME:WEIGHT, comma-separated, from bce, dice, focal, lovasz "
                                  "(e.g. bce:3,dice:1,focal:4).")
    hflip: float = opt(0.5, "Horizontal flip probability of the training augmentation.")
    augment: bool = opt(True, "Flips and small affine / intensity changes on training images.")
    label_fraction: float = opt(1.0, "Train on this stratified fraction of the training labels.")
    label_count: int = opt(0, "Train on this many labelled images instead (0: use --label-fraction).")
    patience: int = opt(10, "Stop after this many epochs without a better validation score (0: never).")
    resplit: str = opt("", "Split the cache's images afresh into train,val,test fractions (e.g. "
                           "0.7,0.15,0.15), seeded by --split-seed; empty: the cache's patient-level split.")
    split_seed: int = opt(0, "Seed of --resplit, --folds and --balance's negatives.")
    folds: int = opt(0, "K-fold cross-validation by patient, stratified by positive/negative (0: off): "
                        "--fold is the test fold, the next one validates, the rest train.")
    fold: int = opt(0, "Which fold tests, 0..folds-1 (with --folds).")
    balance: bool = opt(False, "Train on a fixed set of every positive plus as many negatives, before "
                               "--label-fraction (a protocol choice; see --sampler for per-epoch schedules).")
    sampler: str = opt("all", "Which labelled images each epoch sees: all, balanced (every positive + fresh "
                              "negatives), sliding (positive share from --pos-rate-start to --pos-rate-end), "
                              "positives.")
    resample_every: int = opt(1, "--sampler balanced: draw new negatives every N epochs.")
    pos_rate_start: float = opt(0.8, "--sampler sliding: positive share of the first epoch.")
    pos_rate_end: float = opt(0.4, "--sampler sliding: positive share of the last epoch.")
    postprocess: str = opt("tuned", "tuned: threshold and minimum area searched on val; fixed: --threshold, "
                                    "no minimum area; triplet: an image is positive if a minimum area exceeds "
                                    "a top threshold, its mask is then drawn at a bottom threshold (all three "
                                    "searched on val).")
    threshold: float = opt(0.5, "Probability threshold when --postprocess fixed.")
    tta: str = opt("none", "Test-time augmentation for val tuning, test and predict: none, or hflip (mean with "
                           "the flipped-back prediction of the mirrored image).")
    mask_input: str = opt("", "--task classify: a transfer run whose UNet, frozen, feeds its probability map "
                              "as a channel beside the image ([map, image, image]: the published cascade).")
    average_top_k: int = opt(0, "Test (and save) the mean weights of the K best epochs by val score; 0 or 1: "
                                "the best epoch.")
    keep_checkpoints: bool = opt(False, "Keep checkpoints/ once the run has finished (weights with optimizer "
                                        "state, ~0.3 GB each for a ResNet-34 UNet), so `--resume --epochs N` "
                                        "can extend it; the trained model is in the run folder either way.")


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


def _check_options(cfg: TransferConfig) -> None:
    if cfg.postprocess not in POSTPROCESS_MODES:
        raise UserError(f"--postprocess must be tuned, fixed or triplet (got {cfg.postprocess!r})")
    if cfg.tta not in TTA_MODES:
        raise UserError(f"--tta must be none or hflip (got {cfg.tta!r})")
    if cfg.mask_input and cfg.task != "classify":
        raise UserError("--mask-input is for --task classify (a cascade classifier reading a UNet's map)")
    if cfg.average_top_k < 0:
        raise UserError(f"--average-top-k must be 0 or more (got {cfg.average_top_k}); 0 keeps the best epoch")


def _best_callback(cfg: TransferConfig, out: Path) -> ModelCheckpoint:
    """best.ckpt, or with --average-top-k K > 1 the K best epochs as best-epoch=E.ckpt."""
    k = max(cfg.average_top_k, 1)
    return ModelCheckpoint(dirpath=out / "checkpoints", filename="best" if k == 1 else "best-{epoch}",
                           monitor="val_score", mode="max", save_top_k=k, save_last=False,
                           enable_version_counter=False)


def _load_best(module: SegmentationModule, paths: list[Path]) -> list[int]:
    """Load the mean weights of `paths` (best first) into `module`; their epochs, best first."""
    if not paths:  # no validation ran (e.g. --max-steps 0): the weights as they are
        return []
    state, epochs = average_checkpoints(paths)  # one path: exactly its weights
    module.load_state_dict(state)
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
    load the best (or the mean of the K best) weights in eval mode. Returns the trainer, the
    epochs the weights came from (best first) and the val loader."""
    # full batches only (BatchNorm cannot train on a last batch of one), unless the labelled
    # set is smaller than a batch: then each step sees all of it
    sampler = ScheduleSampler(data.labelled_positive, cfg.sampler, cfg.seed, cfg.epochs,
                              cfg.resample_every, cfg.pos_rate_start, cfg.pos_rate_end)
    loader = train_loader(data.labelled, cfg.batch_size, cfg.workers, cfg.seed,
                          drop_last=len(sampler) >= cfg.batch_size, sampler=sampler)
    val_loader = DataLoader(data.val, batch_size=cfg.batch_size, num_workers=cfg.workers)
    best_callback = _best_callback(cfg, out)
    callbacks: list[pl.Callback] = [best_callback]
    if cfg.patience:
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", patience=cfg.patience))
    trainer = fit(module, loader, cfg, out, ckpt, callbacks, progress, val_loader=val_loader)
    epochs: list[int] = []
    if trainer.global_rank == 0:
        paths = top_k_paths(best_callback) if cfg.average_top_k > 1 else [p for p in [out / BEST] if p.is_file()]
        epochs = _load_best(module, paths)
        module.eval()
    return trainer, epochs, val_loader


def transfer(cfg: TransferConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train, pick the best epoch, tune post-processing on val, score test; return metrics.

    The run folder gets config.yaml, labelled.csv (the training subset), metrics.csv,
    metrics.json, model/ (smp `save_pretrained`), ptxssl.json, and checkpoints/ while it trains
    (kept afterwards with --keep-checkpoints).
    """
    if cfg.task != "segment":  # classify, or a one-line error naming --task
        from ptxssl.transfer.classify import classify  # here, not at the top: classify.py imports this module
        return classify(cfg, resume, overwrite, progress)
    data = load_run_data(cfg, masks=True)
    out = Path(cfg.out)
    ckpt = prepare_run_dir(out, resume, overwrite)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the weights are drawn
    unet, init = build_unet(cfg.encoder, cfg.in_channels, cfg.arch or None)
    cfg = replace(cfg, arch=init["arch"])  # the resolved arch goes into config.yaml: a rerun builds the same UNet
    module = SegmentationModule(unet, cfg, data.size, out)
    if overwrite and ckpt is None:
        clear_run_dir(out, ("metrics.json", "test_dice.csv", META_FILE, MODEL_DIR, "checkpoints"))  # all top-k
    record_subset(cfg, data, out)
    trainer, epochs, val_loader = fit_best(module, data, cfg, out, ckpt, progress)
    if trainer.global_rank != 0:
        return {}
    labelled, test, size = data.labelled, data.test, data.size
    val_probs, val_masks = predict_loader(module, val_loader, progress, cfg.tta)
    tuned = tune_on_val(cfg.postprocess, val_probs, val_masks, cfg.threshold)
    rule = tuned_rule(tuned)
    test_loader = DataLoader(test, batch_size=cfg.batch_size, num_workers=cfg.workers)
    test_probs, test_masks = predict_loader(module, test_loader, progress, cfg.tta)
    scores = evaluate(test_probs, test_masks, *rule)
    dice = dice_per_image(binarise(test_probs, *rule), test_masks)
    metrics = {"test": scores, "val_tuned": tuned, "encoder": init, "labelled_images": len(labelled),
               "labelled_positive": int(data.labelled_positive.sum()),
               "best_epoch": epochs[0] if epochs else None, "weights_from_epochs": epochs,
               "epochs_run": trainer.current_epoch, "steps": trainer.global_step,
               "image_size": size, "test_images": len(test), "seed": cfg.seed,
               "seconds": round(trainer.fit_seconds, 1)}
    write_csv(out / "test_dice.csv", ["image_id", "dice", "max_prob"],  # per image, for paired comparisons
              zip(test.ids, np.round(dice, 6), np.round(test_probs.max(axis=(1, 2)), 6)))
    meta = {"image_size": size, "in_channels": cfg.in_channels, "arch": cfg.arch, "normalization": NORMALIZATION,
            "postprocess": tuned["mode"], "threshold": tuned["threshold"],
            "min_area_fraction": tuned["min_area_fraction"], **({"bottom": rule[2]} if rule[2] is not None else {}),
            "tta": cfg.tta, "encoder": init, "channels": cache_channels(cfg.data) if cfg.in_channels == 3 else []}
    save_model(module.unet, out, meta, card=_card(cfg, metrics), metrics=scores, dataset=str(cfg.data))
    return finish_run(cfg, out, metrics)


def finish_run(cfg: TransferConfig, out: Path, metrics: dict) -> dict:
    """Write metrics.json last (`compare` takes a cell with it as finished), then drop the
    checkpoints unless --keep-checkpoints: a grid of runs would otherwise fill the disk."""
    write_json(out / "metrics.json", metrics)
    if not cfg.keep_checkpoints:
        drop_checkpoints(out)
    return metrics


def _card(cfg: TransferConfig, metrics: dict) -> str:
    test = metrics["test"]
    return (f"UNet ({cfg.arch} encoder, init `{cfg.encoder}`) trained by ptxssl on `{cfg.data}` "
            f"({metrics['labelled_images']} labelled images, {cfg.image_size or 'cache'} px).\n\n"
            f"Test SIIM score {test['siim_dice']:.4f}, positive-image Dice {test['positive_dice']:.4f}, "
            f"image AUROC {test['image_auroc']:.4f} on {metrics['test_images']} images.\n\n"
            f"Command: `ptxssl transfer --config config.yaml` in the run folder.")

