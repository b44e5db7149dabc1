"""A cheap linear probe: does the representation separate the weak labels?

A ridge linear classifier on frozen, standardised (N, D) embeddings (D = the encoder's
feature_dim), fitted on a fixed subset of the train split and scored on the val split; the
score is the mean AUROC over the labels that have both classes on both sides. Logged at every
epoch end, so a user sees whether the representation improves while it trains.

The regularisation strength is chosen per label by leave-one-out cross-validation on the
train subset (closed form for ridge, so a probe costs about a second), as linear evaluations
in the SSL literature tune it: one fixed strength favours one kind of feature (a strong
penalty suits the many weak, spread-out directions of a random network and penalises a
trained encoder that puts the same information in fewer directions), so comparing encoders
needs each to get its own best strength.
"""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.linear_model import RidgeClassifierCV
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from ptxssl.datasets.torch_data import CacheDataset

ALPHAS = np.logspace(-1, 5, 13)  # ridge penalties searched per label (features are standardised)
MIN_PER_CLASS = 3


@torch.no_grad()
def embed_loader(embed, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Run `embed` over a loader of cache items: ((N, D) float32 features, (N, K) labels)."""
    feats, labels = [], []
    for batch in loader:
        feats.append(embed(batch["image"].to(device)).float().cpu())
        labels.append(batch["labels"])
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def probe_auroc(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Mean val AUROC of one logistic regression per label column; NaN if no column qualifies."""
    scaler = StandardScaler().fit(train_x)
    tx, vx = scaler.transform(train_x), scaler.transform(val_x)
    scores = []
    for k in range(train_y.shape[1]):
        tk, vk = ~np.isnan(train_y[:, k]), ~np.isnan(val_y[:, k])
        if len(np.unique(train_y[tk, k])) < 2 or len(np.unique(val_y[vk, k])) < 2:
            continue
        if np.bincount(train_y[tk, k].astype(int)).min() < MIN_PER_CLASS:
            continue  # too few positives to fit or measure anything
        clf = RidgeClassifierCV(alphas=ALPHAS).fit(tx[tk], train_y[tk, k])
        scores.append(roc_auc_score(val_y[vk, k], clf.decision_function(vx[vk])))
    return float(np.mean(scores)) if scores else float("nan")


def probe_encoder(embed, cache: str, max_images: int = 512, batch_size: int = 64,
                  device: torch.device | str = "cpu", eval_split: str | list[str] = "val") -> float:
    """Probe AUROC of an embedding function: fitted on (up to `max_images` of) the train split,
    scored on `eval_split` (NaN without labels)."""
    train, held_out = CacheDataset(cache, split="train"), CacheDataset(cache, split=eval_split)
    if train.labels is None or len(held_out) == 0:
        return float("nan")
    loaders = []
    for ds in (train, held_out):
        keep = ds.rows[np.linspace(0, len(ds) - 1, min(max_images, len(ds))).astype(int)]
        loaders.append(DataLoader(CacheDataset(cache, split=eval_split if ds is held_out else "train", rows=keep),
                                  batch_size=batch_size))
    tx, ty = embed_loader(embed, loaders[0], device)
    vx, vy = embed_loader(embed, loaders[1], device)
    return probe_auroc(tx, ty, vx, vy)


class ProbeCallback(pl.Callback):
    """Logs `probe_auroc` at each training epoch end (on global rank 0)."""

    def __init__(self, cache: str, max_images: int = 512) -> None:
        self.cache, self.max_images = cache, max_images

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        was_training = module.training
        module.eval()  # BatchNorm uses running statistics while probing
        try:
            score = probe_encoder(module.embed, self.cache, self.max_images, device=module.device)
        finally:
            module.train(was_training)
        if not np.isnan(score):
            module.log("probe_auroc", score, rank_zero_only=True, prog_bar=True)
