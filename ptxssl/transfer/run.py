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

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from ptxssl.datasets.cache import cache_channels
from ptxssl.encoders import NORMALIZATION
from ptxssl.engine.data import eval_loader
from ptxssl.engine.trainer import clear_run_dir, prepare_run_dir
from ptxssl.files import write_csv
from ptxssl.transfer.classify import classify
from ptxssl.transfer.config import TransferConfig, check_task, resolve_config
from ptxssl.transfer.harness import finish_run, fit_best, load_run_data, record_subset
from ptxssl.transfer.metrics import binarise, dice_per_image, evaluate, tune_on_val, tuned_rule
from ptxssl.transfer.model import META_FILE, MODEL_DIR, build_unet, save_model
from ptxssl.transfer.module import SegmentationModule, predict_loader

__all__ = ["TransferConfig", "resolve_config", "transfer"]


def transfer(cfg: TransferConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train, pick the best epoch, tune post-processing on val, score test; return metrics.

    The run folder gets config.yaml, labelled.csv (the training subset), metrics.csv,
    metrics.json, model/ (smp `save_pretrained`), ptxssl.json, and checkpoints/ while it trains
    (kept afterwards with --keep-checkpoints).
    """
    check_task(cfg)  # a known task, and no option of the other task
    if cfg.task == "classify":
        return classify(cfg, resume, overwrite, progress)
    data = load_run_data(cfg, masks=True)
    out = Path(cfg.out)
    ckpt = prepare_run_dir(out, resume, overwrite, finished="metrics.json")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the weights are drawn
    unet, init = build_unet(cfg.encoder, cfg.in_channels, cfg.arch or None)
    cfg = replace(cfg, arch=init["arch"])  # the resolved arch goes into config.yaml: a rerun builds the same UNet
    module = SegmentationModule(unet, cfg, data.size, out)
    if overwrite and ckpt is None:
        clear_run_dir(out, ("metrics.json", "test_dice.csv", META_FILE, MODEL_DIR, "checkpoints"))  # all top-k
    record_subset(cfg, data, out)
    trainer, epochs, val_loader = fit_best(module, data, cfg, out, ckpt, progress)
    labelled, test, size = data.labelled, data.test, data.size
    precision = trainer.runtime["precision"]  # scored as trained
    val_probs, val_masks = predict_loader(module, val_loader, progress, cfg.tta, precision)
    test_loader = eval_loader(test, cfg.batch_size, cfg.workers)
    test_probs, test_masks = predict_loader(module, test_loader, progress, cfg.tta, precision)
    if trainer.global_rank != 0:  # it scored its shards; rank 0 tunes, scores and writes
        return {}
    tuned = tune_on_val(cfg.postprocess, val_probs, val_masks, cfg.threshold)
    rule = tuned_rule(tuned)
    scores = evaluate(test_probs, test_masks, *rule)
    dice = dice_per_image(binarise(test_probs, *rule), test_masks)
    metrics = {"test": scores, "val_tuned": tuned, "encoder": init, "frozen_bn": module.frozen_bn,
               "labelled_images": len(labelled),
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
    if cfg.save_model:
        save_model(module.model, out, meta, card=_card(cfg, metrics), metrics=scores, dataset=str(cfg.data))
    return finish_run(cfg, out, metrics)


def _card(cfg: TransferConfig, metrics: dict) -> str:
    test = metrics["test"]
    return (f"UNet ({cfg.arch} encoder, init `{cfg.encoder}`) trained by ptxssl on `{cfg.data}` "
            f"({metrics['labelled_images']} labelled images, {cfg.image_size or 'cache'} px).\n\n"
            f"Test SIIM score {test['siim_dice']:.4f}, positive-image Dice {test['positive_dice']:.4f}, "
            f"image AUROC {test['image_auroc']:.4f} on {metrics['test_images']} images.\n\n"
            f"Command: `ptxssl transfer --config config.yaml` in the run folder.")

