"""Cheap probes: does the representation separate the weak labels?

`linear`: a ridge linear classifier on frozen, standardised (N, D) embeddings (D = the
encoder's feature_dim), fitted on a fixed subset of the train split and scored on the val
split; the score is the mean AUROC over the labels that have both classes on both sides.
Logged at every epoch end, so a user sees whether the representation improves while it trains.

`knn`: the weighted k-nearest-neighbour vote SSL papers report next to the linear probe
(Wu et al. 2018, DINO): nothing is fitted, so it asks whether images near each other in the
embedding share findings, where the linear probe asks whether some direction separates them.

The regularisation strength is chosen per label by leave-one-out cross-validation on the
train subset (closed form for ridge, so a probe costs about a second), as linear evaluations
in the SSL literature tune it: one fixed strength favours one kind of feature (a strong
penalty suits the many weak, spread-out directions of a random network and penalises a
trained encoder that puts the same information in fewer directions), so comparing encoders
needs each to get its own best strength.

Every encoder is probed under one BatchNorm protocol (`ptxssl.encoders.protocol`): by default
its BatchNorm statistics are re-estimated on the probe's own train images first (`bn="precise"`),
so a random-init encoder is not read with the identity BatchNorm of a freshly built network.
The trainer's callback does this on the training model and restores its buffers afterwards.
"""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.linear_model import RidgeClassifierCV
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders.protocol import DEFAULT_BN, bn_restored, check_bn, precise_bn

ALPHAS = np.logspace(-1, 5, 13)  # ridge penalties searched per label (features are standardised)
KNN_K, KNN_T = 20, 0.07  # DINO's kNN evaluation (Caron et al. 2021): cosine similarity, exp(sim / T) votes
PROBES = ("linear", "knn")
MIN_PER_CLASS = 3


@torch.no_grad()
def embed_loader(embed, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Run `embed` over a loader of cache items: ((N, D) float32 features, (N, K) labels)."""
    feats, labels = [], []
    for batch in loader:
        feats.append(embed(batch["image"].to(device)).float().cpu())
        labels.append(batch["labels"])
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def probe_predictions(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                      kind: str = "linear") -> dict[int, np.ndarray]:
    """{label column: (N_val,) scores} of a `linear` (ridge) or `knn` probe, for the columns with
    both classes on both sides (and at least MIN_PER_CLASS of each in train)."""
    if kind == "linear":
        scaler = StandardScaler().fit(train_x)
        tx, vx = scaler.transform(train_x), scaler.transform(val_x)

        def score(k: int, tk: np.ndarray) -> np.ndarray:
            return RidgeClassifierCV(alphas=ALPHAS).fit(tx[tk], train_y[tk, k]).decision_function(vx)
    elif kind == "knn":
        sim = _normalize(val_x.astype(np.float64)) @ _normalize(train_x.astype(np.float64)).T  # (Nv, Nt)

        def score(k: int, tk: np.ndarray) -> np.ndarray:
            s, y = sim[:, tk], train_y[tk, k]
            top = np.argpartition(-s, min(KNN_K, len(y)) - 1, axis=1)[:, :KNN_K]  # (Nv, k)
            w = np.exp(np.take_along_axis(s, top, axis=1) / KNN_T)
            return (w * y[top]).sum(1) / w.sum(1)  # similarity-weighted share of positive neighbours
    else:
        raise ValueError(f"unknown probe {kind!r}; expected one of {PROBES}")
    predictions = {}
    for k in range(train_y.shape[1]):
        tk, vk = ~np.isnan(train_y[:, k]), ~np.isnan(val_y[:, k])
        if len(np.unique(train_y[tk, k])) < 2 or len(np.unique(val_y[vk, k])) < 2:
            continue
        if np.bincount(train_y[tk, k].astype(int)).min() < MIN_PER_CLASS:
            continue  # too few positives to fit or measure anything
        predictions[k] = score(k, tk)
    return predictions


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 kind: str = "linear") -> dict[int, float]:
    """{label column: val AUROC} of `probe_predictions` (unknown val labels left out)."""
    return {k: float(roc_auc_score(val_y[~np.isnan(val_y[:, k]), k], p[~np.isnan(val_y[:, k])]))
            for k, p in probe_predictions(train_x, train_y, val_x, val_y, kind).items()}


def mean_label_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean AUROC of (N, K) scores over the label columns whose known (non-NaN) labels hold both
    classes; NaN if none does (how a classifier's own head is scored beside its probes)."""
    aurocs = []
    for k in range(labels.shape[1]):
        known = ~np.isnan(labels[:, k])
        if len(np.unique(labels[known, k])) == 2:
            aurocs.append(roc_auc_score(labels[known, k], scores[known, k]))
    return float(np.mean(aurocs)) if aurocs else float("nan")


def probe_auroc(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                kind: str = "linear") -> float:
    """Mean of `probe_scores` over the label columns; NaN if no column qualifies."""
    scores = probe_scores(train_x, train_y, val_x, val_y, kind)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def probe_features(embed, cache: str, max_images: int = 512, batch_size: int = 64,
                   device: torch.device | str = "cpu", eval_split: str | list[str] = "val",
                   bn: str = DEFAULT_BN, model: nn.Module | None = None) -> tuple | None:
    """(train_x, train_y, held_x, held_y, label names) of an embedding function on (up to
    `max_images` of) the train split and `eval_split`; None without labels.

    Args:
        bn: "precise": `model`'s BatchNorm statistics are first re-estimated on those train
            images (in `batch_size` batches, through `embed`); "as-is": they are used as they are.
        model: the module `embed` runs (needed for "precise"); it is left in eval mode.
    """
    if check_bn(bn) == "precise" and model is None:
        raise ValueError("probe_features(bn='precise') needs the model whose BatchNorm it re-estimates")
    train, held_out = CacheDataset(cache, split="train"), CacheDataset(cache, split=eval_split)
    if train.labels is None or len(held_out) == 0:
        return None
    loaders = {}
    for ds, split in ((train, "train"), (held_out, eval_split)):
        keep = ds.rows[np.linspace(0, len(ds) - 1, min(max_images, len(ds))).astype(int)]
        loaders[split == "train"] = DataLoader(CacheDataset(cache, split=split, rows=keep), batch_size=batch_size)
    if bn == "precise":
        precise_bn(model, (batch["image"].to(device) for batch in loaders[True]), embed)
    arrays = [*embed_loader(embed, loaders[True], device), *embed_loader(embed, loaders[False], device)]
    return (*arrays, train.label_names)


def probe_encoder(embed, cache: str, max_images: int = 512, batch_size: int = 64,
                  device: torch.device | str = "cpu", eval_split: str | list[str] = "val",
                  bn: str = DEFAULT_BN, model: nn.Module | None = None) -> float:
    """Linear-probe AUROC of an embedding function, mean over findings (NaN without labels);
    `bn` and `model` as for `probe_features`."""
    features = probe_features(embed, cache, max_images, batch_size, device, eval_split, bn, model)
    return float("nan") if features is None else probe_auroc(*features[:4])


class ProbeCallback(pl.Callback):
    """Logs `probe_auroc` at each training epoch end (on global rank 0), under the `bn`
    protocol; the training model's BatchNorm buffers and modes are restored afterwards."""

    def __init__(self, cache: str, max_images: int = 512, bn: str = DEFAULT_BN) -> None:
        self.cache, self.max_images, self.bn = cache, max_images, check_bn(bn)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        with bn_restored(module):
            module.eval()  # BatchNorm uses running statistics while probing
            score = probe_encoder(module.embed, self.cache, self.max_images, device=module.device, bn=self.bn,
                                  model=module)
        if not np.isnan(score):
            module.log("probe_auroc", score, rank_zero_only=True, prog_bar=True)
