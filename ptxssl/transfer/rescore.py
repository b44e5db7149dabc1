"""Score a finished segmentation run again under another post-processing rule or TTA.

Neither `--postprocess` nor `--tta` touches training (the per-epoch validation score is a
plain 0.5 threshold without TTA), so runs that differ only in them end with the same
weights. Re-scoring the saved UNet answers "would the triplet rule / flip TTA have helped?"
on those very weights, image by image, for two predictions instead of a training run: the
rule is tuned on the run's validation images and applied to its test images, as `transfer`
does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.engine.config import load_yaml
from ptxssl.engine.device import inference_setup, resolve_device
from ptxssl.bootstrap import paired_bootstrap
from ptxssl.transfer.metrics import (POSTPROCESS_MODES, binarise, dice_per_image, evaluate, tune_on_val,
                                     tuned_rule)
from ptxssl.transfer.model import TTA_MODES, load_model
from ptxssl.transfer.predict import cache_masks, predict_cache
from ptxssl.transfer.protocol import run_batch_size, run_rows


def rescore(run_dir: str | Path, cache: str | Path, postprocess: str = "tuned", tta: str = "none",
            threshold: float = 0.5, batch_size: int | None = None, device: str = "auto",
            precision: str = "auto") -> dict:
    """Tune `postprocess` on the run's val images with `tta`, then score its test images
    (`threshold`: the fixed rule's, as `transfer --threshold`; `batch_size`: default the run's
    own, so its images go through the network in the same batches as when it was scored, and
    float32 sums in the same order).

    Returns {"val_tuned" and "test": like metrics.json's; "dice" and "max_prob": (N,) per test
    image, test_dice.csv's columns in its order}. With the run's own options the result is
    its metrics.json and test_dice.csv (a test checks this).
    """
    if postprocess not in POSTPROCESS_MODES:
        raise UserError(f"postprocess must be one of {', '.join(POSTPROCESS_MODES)} (got {postprocess!r})")
    if tta not in TTA_MODES:
        raise UserError(f"tta must be one of {', '.join(TTA_MODES)} (got {tta!r})")
    device = resolve_device(device)
    precision = inference_setup(device, precision)
    unet, meta = load_model(run_dir)
    unet.to(device)
    batch_size = batch_size or run_batch_size(run_dir)
    meta, size = {**meta, "tta": tta}, int(meta["image_size"])
    scored = {}
    for split in ("val", "test"):
        data = CacheDataset(cache, with_masks=True, rows=run_rows(run_dir, cache, split), channels=True)
        if not len(data):
            raise UserError(f"{cache}: no {split} images for {run_dir}; pass the cache the run was trained on")
        scored[split] = predict_cache(unet, meta, data, batch_size, precision), cache_masks(data, size)
    tuned = tune_on_val(postprocess, *scored["val"], threshold=threshold)
    rule = tuned_rule(tuned)
    probs, truth = scored["test"]
    return {"val_tuned": tuned, "test": evaluate(probs, truth, *rule),
            "dice": dice_per_image(binarise(probs, *rule), truth), "max_prob": probs.max(axis=(1, 2))}


def against_run(run_dir: str | Path, rescored: dict) -> dict:
    """The run as trained beside `rescored` (a `rescore` result) on the same test images:
    {"trained": {"postprocess", "tta", "val_tuned", "test"} from its config.yaml and
    metrics.json, "siim_difference": (mean per-image Dice difference = the SIIM score's, 95 %
    paired bootstrap interval low, high)}."""
    run_dir = Path(run_dir)
    config = load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    own = pd.read_csv(run_dir / "test_dice.csv")["dice"].to_numpy()
    diff = np.asarray(rescored["dice"]) - own
    return {"trained": {"postprocess": config.get("postprocess", "tuned"), "tta": config.get("tta", "none"),
                        "val_tuned": metrics["val_tuned"], "test": metrics["test"]},
            "siim_difference": (float(diff.mean()), *paired_bootstrap(diff))}
