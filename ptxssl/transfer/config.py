"""The transfer run's options (`ptxssl transfer`, both tasks): dataclass fields = CLI options.

Kept apart from the training code so the CLI, `compare` and protocols read the options
without importing Lightning's training stack, and so the segmentation and classification
runs share one definition.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ptxssl.engine.config import TrainConfig, opt, resolve
from ptxssl.errors import UserError
from ptxssl.transfer.losses import DEFAULT_LOSS

# what each task is, for the error that names an option of the other task
TASKS = {"segment": "--task segment trains a UNet on the masks with --loss and tunes --postprocess on val",
         "classify": "--task classify trains with BCE and tunes its threshold for F1 on val"}


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
    frozen_bn: str = opt("precise", "BatchNorm statistics of a frozen encoder (--freeze-epochs): precise re-estimates "
                                    "them on the labelled training images before training (every init alike: a "
                                    "random encoder's BatchNorm is the identity until then), as-is keeps the "
                                    "encoder's own.")
    loss: str = opt(DEFAULT_LOSS, task="segment", help="Loss terms NAME:WEIGHT, comma-separated, from bce, dice, "
                                                       "focal, lovasz (e.g. bce:3,dice:1,focal:4).")
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
    postprocess: str = opt("tuned", task="segment", help="tuned: threshold and minimum area searched on val; "
                                                         "fixed: --threshold, no minimum area; triplet: an image is "
                                                         "positive if a minimum area exceeds a top threshold, its mask "
                                                         "is then drawn at a bottom threshold (all three searched on "
                                                         "val).")
    threshold: float = opt(0.5, task="segment", help="Probability threshold when --postprocess fixed.")
    tta: str = opt("none", "Test-time augmentation for val tuning, test and predict: none, or hflip (mean with "
                           "the flipped-back prediction of the mirrored image).")
    mask_input: str = opt("", task="classify", help="--task classify: a transfer run whose UNet, frozen, feeds its "
                                                    "probability map as a channel beside the image ([map, image, "
                                                    "image]: the published cascade).")
    save_model: bool = opt(True, "Write the trained model (model/ or classifier.safetensors, ~100 MB at ResNet-34) "
                                 "for predict / rescore; --no-save-model keeps only the scores (a grid that is "
                                 "read for its table).")
    average_top_k: int = opt(0, "Test (and save) the mean weights of the K best epochs by val score; 0 or 1: "
                                "the best epoch.")


def resolve_config(config_file: str | Path | None = None, overrides: dict | None = None,
                   preset: dict | None = None) -> TransferConfig:
    """Defaults < `preset` (a protocol's options) < `config_file` < `overrides`, as for pretraining."""
    return resolve([TransferConfig], config_file, dict(overrides or {}), "transfer", preset)[0]


def check_task(cfg: TransferConfig) -> None:
    """--task is one of TASKS, and every option that belongs to the other task (a field with
    `task=` in its metadata) is at its default; otherwise a one-line UserError naming them."""
    if cfg.task not in TASKS:
        raise UserError(f"--task must be {' or '.join(TASKS)} (got {cfg.task!r})")
    foreign = [f for f in fields(cfg)
               if f.metadata.get("task", cfg.task) != cfg.task and getattr(cfg, f.name) != f.default]
    if foreign:
        names = " and ".join("--" + f.name.replace("_", "-") for f in foreign)
        verb = "is" if len(foreign) == 1 else "are"
        raise UserError(f"{names} {verb} for --task {foreign[0].metadata['task']}; {TASKS[cfg.task]}")
