"""Why does a random ResNet read with its BatchNorm at init probe better than the same weights
with statistics of the data? One thing swapped at a time.

The probe table's random-init rows differ only in their BatchNorm buffers: at init every BN
layer is the identity (running mean 0, variance 1); under the precise protocol each channel is
standardised with its mean and variance over the reference images. This script reads the same
random weights (seeded) with the buffers set part by part, plus a network-free reference:

    BN at init          every layer the identity
    precise             every layer's mean and variance from the data (the protocol's row)
    precise mean only   the data's means, variances left at 1 (channels centred, not rescaled)
    precise var only    the data's variances, means left at 0 (channels rescaled, not centred)
    precise stem only   the stem's BN (after the 7 x 7 conv) from the data, identity elsewhere
    precise after stem  identity in the stem, the data's statistics in the residual stages
    pixels G x G        the image itself, average-pooled to G x G (no network)

and prints each row's linear / kNN probe (mean AUROC over the cache's labels, Δ vs the precise
row with a paired bootstrap interval, the same probes as `ptxssl probe`) and how much of its
pooled features a ridge regression from the G x G pixels explains on held-out images (median
R² over features) and how many of its ReLU channels act as switches rather than as always-on
(linear) or always-off units:

    python scripts/bn_anatomy.py --data /tmp/pt8000/nih.h5 --max-images 1024
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from ptxssl.analysis.embed import load_embedder
from ptxssl.analysis.probe import HELD_OUT, Row, feature_fn, on_shared_labels, table, thumbnail
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders.protocol import batchnorms
from ptxssl.pretrain.probe import probe_features

STEM = "bn1"  # the BN after the stem's 7 x 7 conv in torchvision / smp ResNets


def set_buffers(encoder: torch.nn.Module, data: dict[str, tuple[torch.Tensor, torch.Tensor]],
                keep: Callable[[str], tuple[bool, bool]]) -> None:
    """Every BN layer of `encoder` gets (data mean or 0, data variance or 1) as `keep(name)` says."""
    for name, m in encoder.named_modules():
        if name in data:
            use_mean, use_var = keep(name)
            mean, var = data[name]
            m.running_mean.copy_(mean if use_mean else torch.zeros_like(mean))
            m.running_var.copy_(var if use_var else torch.ones_like(var))


VARIANTS: dict[str, Callable[[str], tuple[bool, bool]]] = {
    "BN at init": lambda name: (False, False),
    "precise": lambda name: (True, True),
    "precise mean only": lambda name: (True, False),
    "precise var only": lambda name: (False, True),
    "precise stem only": lambda name: (name == STEM, name == STEM),
    "precise after stem": lambda name: (name != STEM, name != STEM),
}


def explained(pixels: tuple[np.ndarray, np.ndarray], features: tuple[np.ndarray, np.ndarray]) -> float:
    """Median over features of the held-out R² of a ridge regression (CV penalty) from the
    standardised coarse pixels: how linear a function of the coarse image the features are. The
    median, because a feature almost constant on the train images has an unbounded held-out R²."""
    px, fx = StandardScaler().fit(pixels[0]), StandardScaler().fit(features[0])
    fit = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(px.transform(pixels[0]), fx.transform(features[0]))
    per_feature = r2_score(fx.transform(features[1]), fit.predict(px.transform(pixels[1])), multioutput="raw_values")
    return float(np.median(per_feature))


class Switches:
    """Share of ReLU channels that act as switches (positive on 5-95 % of their positions over a
    batch) rather than as always-on (linear) or always-off ones, over every ReLU call and batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.positive: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self.hook) for m in model.modules() if isinstance(m, torch.nn.ReLU)]

    def hook(self, module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        self.positive.append((output > 0).float().mean(dim=(0, 2, 3)))  # per channel, this batch

    def share(self) -> float:
        for h in self.handles:
            h.remove()
        p = torch.cat(self.positive)
        return float(((p > 0.05) & (p < 0.95)).float().mean())


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a labelled cache (ptxssl prepare)")
    ap.add_argument("--max-images", type=int, default=1024, help="train images to calibrate and fit on; as many held out")
    ap.add_argument("--grid", type=int, default=8, help="G: the pixel reference's side")
    ap.add_argument("--seed", type=int, default=0, help="the random weights")
    args = ap.parse_args()
    size = CacheDataset(args.data).size
    torch.manual_seed(args.seed)
    model, _ = load_embedder("random")
    embed = feature_fn(model, "pooled", size)

    def read(fn, bn: str = "as-is"):
        return probe_features(fn, args.data, args.max_images, 64, "cpu", HELD_OUT, bn=bn, model=model)

    pixels = read(thumbnail(args.grid))
    read(embed, bn="precise")  # the protocol's statistics, kept to set part by part
    layers = set(batchnorms(model.encoder))
    data = {name: (m.running_mean.clone(), m.running_var.clone()) for name, m in model.encoder.named_modules()
            if m in layers}
    rows, diagnostics = [], {}
    for variant, keep in VARIANTS.items():
        set_buffers(model.encoder, data, keep)
        switches = Switches(model.encoder)
        got = read(embed)
        bn = {"BN at init": "as-is", "precise": "precise"}.get(variant, "partly precise")
        rows.append(Row.fitted(variant, "random", bn, got))
        diagnostics[variant] = explained((pixels[0], pixels[2]), (got[0], got[2])), switches.share()
    rows.append(Row.fitted(f"pixels {args.grid} x {args.grid}", "pixels", "—", pixels))
    tx, _, _, vy, names = pixels
    rows, labels, names = on_shared_labels(rows, vy, names, args.data)
    text, _ = table(rows, labels, names, "precise")
    print(f"random ResNet-34 (seed {args.seed}) on {args.data}: {len(tx)} train images (BN statistics and probe "
          f"fits), {labels.shape[1]} held-out val + test images\n")
    print(text)
    print(f"| row | median held-out R² of a feature from the {args.grid} x {args.grid} pixels | ReLU channels "
          "that switch (on for 5-95 % of a batch's positions) |\n|---|---|---|")
    for variant, (r2, switching) in diagnostics.items():
        print(f"| {variant} | {r2:.3f} | {switching:.1%} |")


if __name__ == "__main__":
    main()
