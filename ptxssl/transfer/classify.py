"""`ptxssl transfer --task classify`: image-level pneumothorax detection with the same encoders.

The encoder comes from `ptxssl.encoders.init_encoder` (so every init — random, imagenet, imagenet:FILE, an
encoder file or pretrain run — is loaded and verified tensor by tensor in one place) and gets
a head: global average pool of the deepest feature map -> linear -> 1 logit, trained with
BCE on the cache's image labels (labels[:, 0]: positive = non-empty mask). Splits, label
subsets, samplers, seeds, checkpoints, --resume, --freeze-epochs, --tta and --average-top-k
are the segmentation run's. The validation score is image AUROC; the operating threshold
maximises F1 on validation and is applied once to test.

`--mask-input SEG_RUN` builds the published cascade's classifier instead: a trained UNet,
frozen (weights and BatchNorm statistics), draws its probability map and the encoder sees
[probability map, image, image] as three channels (the encoder adapted to 3 channels the way
smp adapts ImageNet weights). The UNet's weights are saved inside classifier.safetensors, so
the run folder stands alone.

Run folder: config.yaml, labelled.csv, metrics.csv, checkpoints/ (while training, or with
--keep-checkpoints), metrics.json,
test_scores.csv (image_id, probability, label), classifier.safetensors (tensors only) and
classifier.json (what `load_classifier` and `predict --classifier` need).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from ptxssl.datasets.cache import cache_channels
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, file_sha1, write_csv, write_json
from ptxssl.encoders import NORMALIZATION, build_encoder, feature_dim, init_encoder, input_channels, normalize
from ptxssl.engine.data import eval_loader, gather_shards
from ptxssl.engine.device import autocast
from ptxssl.engine.trainer import clear_run_dir, prepare_run_dir
from ptxssl.transfer.config import check_task
from ptxssl.transfer.metrics import image_auroc, image_detection
from ptxssl.transfer.model import MODEL_DIR, TTA_MODES, load_model, probabilities, unet_arch
from ptxssl.transfer.module import TransferModule
from ptxssl.transfer.harness import finish_run, fit_best, load_run_data, record_subset

WEIGHTS, META = "classifier.safetensors", "classifier.json"


class ImageClassifier(nn.Module):
    """An smp encoder, global average pooling of its deepest features and a linear layer;
    with `mask_model` (a 1-channel UNet, frozen) the encoder sees [its probability map, image, image].

    Shape: (N, C, S, S) normalised input (C = 1 with a mask model) -> (N, 1) logits.
    """

    def __init__(self, encoder: nn.Module, mask_model: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder, self.head, self.mask_model = encoder, nn.Linear(feature_dim(encoder), 1), mask_model
        if mask_model is not None:
            mask_model.requires_grad_(False).eval()

    @property
    def input_channels(self) -> int:
        return 1 if self.mask_model is not None else input_channels(self.encoder)

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if self.mask_model is not None:
            self.mask_model.eval()  # its BatchNorm keeps the statistics it was trained with
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_model is not None:
            with torch.no_grad():
                prob = torch.sigmoid(self.mask_model(x))  # (N, 1, S, S), on the image's scale below
            x = torch.cat([normalize(prob), x, x], dim=1)
        return self.head(self.encoder(x)[-1].mean(dim=(2, 3)))  # (N, D, s, s) -> (N, D) -> (N, 1)


class ClassifyModule(TransferModule):
    """An ImageClassifier trained with BCE on the image labels; the validation score is the
    image AUROC over the whole val split. Resizing, freezing and learning rates: TransferModule."""

    def __init__(self, classifier: ImageClassifier, cfg, image_size: int, run_dir: str | Path = ".") -> None:
        # the input is 1 channel with a mask model, whose output makes the encoder's 3
        super().__init__(classifier, cfg, image_size, run_dir, in_channels=classifier.input_channels)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, _ = self.adapt(batch["image"])
        if self.augment is not None:
            x = self.augment(x, self._generator())
        target = (batch["labels"][:, 0] == 1).float()  # (N,)
        loss = F.binary_cross_entropy_with_logits(self(x)[:, 0], target)
        self.check_finite(loss)
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, _ = self.adapt(batch["image"])
        self._val.append((torch.sigmoid(self(x)[:, 0].float()), (batch["labels"][:, 0] == 1).float()))  # (n,) each

    def on_validation_epoch_end(self) -> None:
        # over the whole val split (all ranks: an AUROC is not a mean of per-batch values)
        n = len(self.trainer.val_dataloaders.dataset)
        probs, labels = (gather_shards([t[i].cpu().numpy() for t in self._val], n) for i in (0, 1))
        auroc = image_auroc(probs[:, None, None], labels[:, None, None] > 0.5)  # every rank: the same value
        # val holds both classes (checked before training): NaN only from NaN outputs, scored as chance
        self.log("val_score", 0.5 if np.isnan(auroc) else auroc, prog_bar=True)


@torch.no_grad()
def predict_scores(module: ClassifyModule, loader: DataLoader, tta: str = "none", precision: str = "32-true"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float32 probabilities and (N,) bool labels, in dataset order (`probabilities` with
    `tta`: on (N, 1) logits its flip-back is a no-op, so hflip is the mean over both views), in
    `precision` (resolved); under DDP each process scores its `eval_loader` shard and rank 0
    gets all N (the others keep their shard)."""
    device = next(module.parameters()).device
    probs, labels = [], []
    for batch in loader:
        x, _ = module.adapt(batch["image"].to(device))
        with autocast(device, precision):
            probs.append(probabilities(module, x, tta)[:, 0].float().cpu().numpy())
        labels.append(batch["labels"][:, 0].numpy() == 1)
    n = len(loader.dataset)
    return gather_shards(probs, n, everyone=False), gather_shards(labels, n, everyone=False)


def score(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Image AUROC, and precision / recall / F1 of calling an image positive when prob >= threshold."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, bool)
    called = probs >= threshold
    return {"image_auroc": image_auroc(probs[:, None, None], labels[:, None, None]),
            **image_detection(called[:, None, None], labels[:, None, None]), "n_images": len(labels),
            "n_positive": int(labels.sum()), "threshold": float(threshold)}


def tune_threshold(probs: np.ndarray, labels: np.ndarray) -> dict:
    """The threshold maximising F1 on (validation) scores, with `score`'s keys.

    Every distinct score is a candidate cut (images at or above it called positive); the
    threshold returned is the midpoint between that score and the next lower one (half the
    lowest score when all are called), so a test score equal to a val score is not decided
    by float noise. Ties keep the lowest cut: the most recall, which a cascade needs most.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, bool)
    cuts = np.unique(probs)  # (T,) ascending
    called = probs[None, :] >= cuts[:, None]  # (T, N)
    tp = (called & labels).sum(axis=1)
    wrong = (called & ~labels).sum(axis=1) + (labels.sum() - tp)  # false positives + false negatives
    f1 = np.round(2 * tp / np.maximum(2 * tp + wrong, 1), 12)
    i = int(np.argmax(f1))
    return score(probs, labels, (cuts[i] + (cuts[i - 1] if i else 0.0)) / 2)


def classify(cfg, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train the classifier, keep the best epoch by val AUROC, tune the threshold on val, score
    test; return metrics (see the module docstring for the run folder)."""
    check_task(replace(cfg, task="classify"))
    data = load_run_data(cfg, masks=False)
    positive = data.val.labels[data.val.rows, 0] == 1
    if positive.all() or not positive.any():
        raise UserError(f"{cfg.data}: --task classify needs positive and negative val images "
                        f"(val {int(positive.sum())} positive of {len(data.val)})")
    mask_model, mask_meta = _mask_model(cfg)  # before the seed: loading it draws random numbers
    out = Path(cfg.out)
    ckpt = prepare_run_dir(out, resume, overwrite, finished="metrics.json")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the weights are drawn
    encoder_channels = 3 if mask_model is not None else cfg.in_channels
    encoder, init = init_encoder(cfg.encoder, encoder_channels, cfg.arch or None)  # the one verified init path
    cfg = replace(cfg, arch=init["arch"])
    module = ClassifyModule(ImageClassifier(encoder, mask_model), cfg, data.size, out)
    if overwrite and ckpt is None:
        clear_run_dir(out, ("metrics.json", "test_scores.csv", WEIGHTS, META, "checkpoints"))
    record_subset(cfg, data, out)
    trainer, epochs, val_loader = fit_best(module, data, cfg, out, ckpt, progress)
    test, size, label_positive, labelled = data.test, data.size, data.labelled_positive, data.labelled
    precision = trainer.runtime["precision"]  # scored as trained
    val_scores = predict_scores(module, val_loader, cfg.tta, precision)
    test_probs, test_labels = predict_scores(module, eval_loader(test, cfg.batch_size, cfg.workers), cfg.tta, precision)
    if trainer.global_rank != 0:  # it scored its shards; rank 0 tunes, scores and writes
        return {}
    tuned = tune_threshold(*val_scores)
    metrics = {"task": "classify", "test": score(test_probs, test_labels, tuned["threshold"]), "val_tuned": tuned,
               "encoder": init, "frozen_bn": module.frozen_bn,
               "labelled_images": len(labelled), "labelled_positive": int(label_positive.sum()),
               "best_epoch": epochs[0] if epochs else None, "weights_from_epochs": epochs,
               "epochs_run": trainer.current_epoch, "steps": trainer.global_step, "image_size": size,
               "test_images": len(test), "seed": cfg.seed, "seconds": round(trainer.fit_seconds, 1)}
    write_csv(out / "test_scores.csv", ["image_id", "probability", "label"],
              zip(test.ids, test_probs.astype(float), test_labels.astype(int)))  # float32 values, exactly
    if cfg.save_model:
        save_classifier(module.model, out, {"image_size": size, "in_channels": cfg.in_channels, "arch": cfg.arch,
                                           "encoder_channels": encoder_channels, "threshold": tuned["threshold"],
                                           "tta": cfg.tta, "encoder": init, "mask_input": mask_meta,
                                           "channels": cache_channels(cfg.data) if cfg.in_channels == 3 else []})
    return finish_run(cfg, out, metrics)


def _mask_model(cfg) -> tuple[nn.Module | None, dict | None]:
    """The frozen UNet of --mask-input and what classifier.json records of it (None, None without)."""
    if not cfg.mask_input:
        return None, None
    unet = load_model(cfg.mask_input)[0]
    channels = input_channels(unet.encoder)
    if channels != 1 or cfg.in_channels != 1:
        raise UserError(f"--mask-input {cfg.mask_input}: the cascade classifier takes grey images, so the UNet "
                        f"({channels} input channels) and --in-channels ({cfg.in_channels}) must both be 1")
    return unet, {"run": str(cfg.mask_input), "arch": unet_arch(unet), "sha1": file_sha1(
        Path(cfg.mask_input) / MODEL_DIR / "model.safetensors")}


def save_classifier(model: ImageClassifier, run_dir: str | Path, meta: dict) -> Path:
    """RUN/classifier.safetensors (tensors only) and RUN/classifier.json (meta + task and
    normalisation), each written atomically; returns the weights path."""
    weights = Path(run_dir) / WEIGHTS
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(Path(run_dir) / META, {"task": "classify", "normalization": dict(NORMALIZATION), **meta})
    return weights


def load_classifier(run_dir: str | Path) -> tuple[ImageClassifier, dict]:
    """A `--task classify` run's classifier (eval mode, CPU) and classifier.json; safetensors
    and JSON only, never unpickling. Errors name the folder and what is wrong."""
    run_dir = Path(run_dir)
    missing = [name for name in (WEIGHTS, META) if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{run_dir}: not a classifier run folder (missing {', '.join(missing)}); pass the "
                        "folder `ptxssl transfer --task classify` wrote")
    try:
        meta = json.loads((run_dir / META).read_text())
        with torch.random.fork_rng(devices=[]):  # building must not move the caller's seed
            mask = meta.get("mask_input")  # the UNet's weights are in WEIGHTS too
            mask_model = smp.Unet(mask["arch"], encoder_weights=None, in_channels=1, classes=1) if mask else None
            encoder = build_encoder(int(meta.get("encoder_channels", meta["in_channels"])), meta["arch"])
            model = ImageClassifier(encoder, mask_model)
        model.load_state_dict(load_file(str(run_dir / WEIGHTS)), strict=True)
        meta["threshold"], meta["image_size"] = float(meta["threshold"]), int(meta["image_size"])
        if meta.get("tta", "none") not in TTA_MODES:
            raise ValueError(f"tta {meta['tta']!r} is not one of {', '.join(TTA_MODES)}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, RuntimeError,
            SafetensorError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{run_dir}: cannot load the classifier ({type(e).__name__}: {first}); the files are "
                        "damaged or do not belong together, rerun the transfer") from None
    return model.eval(), meta
