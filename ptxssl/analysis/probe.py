"""`ptxssl probe`: does this encoder beat that one on the cache's labels? Every encoder the same way.

Each encoder (`random`, `imagenet`, `imagenet:FILE`, an encoder file or a pretrain run folder)
is read on the same images, through the same input path and under the same BatchNorm protocol
(`--bn`, default precise: statistics re-estimated on the probe's train images), and probed two
ways (`ptxssl.pretrain.probe`): a ridge linear probe with its penalty chosen per label, and
DINO's weighted kNN vote. Every row is compared with a reference row (`--reference`, default
the first encoder) on the same held-out images, with a paired bootstrap 95 % interval.

A `random` encoder under precise BatchNorm also gets a row read as-is (BatchNorm at its
initial state, the identity), labelled so, so a reader sees what the BatchNorm state alone does.

Features (`--features`):
    pooled  the global average of the deepest feature map (N, D): what `embed` writes;
    grid    its 2 x 2 average (N, 4D): keeps left from right, which a global average cannot
            (a flipped film, the side of a pneumothorax);
    latent  an AE's latent / a VAE's posterior mean (pretrain run folders of those methods).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ptxssl.analysis.embed import load_embedder
from ptxssl.bootstrap import auroc_difference, auroc_rows
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders import fit_images, grid, is_encoder_file, read_meta, resolve_encoder_path
from ptxssl.encoders.protocol import DEFAULT_BN, check_bn
from ptxssl.engine.device import autocast, inference_setup, resolve_device
from ptxssl.errors import UserError
from ptxssl.files import write_csv, write_text
from ptxssl.pretrain.methods import Method
from ptxssl.pretrain.probe import PROBES, probe_features, probe_predictions

PROBE_FEATURES = ("pooled", "grid", "latent")
HELD_OUT = ["val", "test"]


@dataclass
class Row:
    """One encoder's probe: its scores {probe kind: (labels, held-out images)} on the shared images."""

    name: str
    spec: str
    bn: str
    scores: dict[str, np.ndarray]

    @classmethod
    def fitted(cls, name: str, spec: str, bn: str, features: tuple) -> "Row":
        """The row of every probe kind fitted on `probe_features`' (train x, train y, held-out x,
        held-out y, ...): scores {kind: {label column: (held-out images,)}}."""
        tx, ty, vx, vy = features[:4]
        return cls(name, spec, bn, {kind: probe_predictions(tx, ty, vx, vy, kind) for kind in PROBES})


def thumbnail(side: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Cache images (N, P, S, S) -> (N, P * side * side): the image itself, average-pooled to
    side x side. No network: the floor a linear probe reaches from a thumbnail, which on findings
    that are global brightness patterns is a high one (see README, "Why a random network...")."""
    return lambda x: F.adaptive_avg_pool2d(x.float(), side).flatten(1)


def feature_fn(model: Method, features: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Cache images (N, P, S, S) in [0, 1] -> (N, F) features of `model`, through the one input path."""
    def prepared(x: torch.Tensor) -> torch.Tensor:
        return fit_images(x, size, model.in_channels)

    if features == "pooled":
        return lambda x: model.embed(prepared(x))
    if features == "grid":
        return lambda x: grid(model.encoder, prepared(x))  # (N, 4D)
    if features == "latent":
        probe_input = torch.zeros(1, model.in_channels, size, size, device=next(model.parameters()).device)
        if model.latent(probe_input) is None:
            what = getattr(model, "name", "this encoder")  # a bare encoder's Method has no registry name
            raise UserError(f"--features latent needs an AE or VAE pretrain run folder; {what} has no latent code "
                            "(use --features pooled or grid)")
        return lambda x: model.latent(prepared(x))
    raise UserError(f"--features must be one of {', '.join(PROBE_FEATURES)} (got {features!r})")


@torch.no_grad()
def probe_encoders(encoders: dict[str, str], cache: str | Path, features: str = "pooled", bn: str = DEFAULT_BN,
                   max_images: int = 1024, batch_size: int = 64, device: str = "auto", seed: int = 0,
                   progress: Callable[[str], None] | None = None, precision: str = "auto", pixels: int = 0
                   ) -> tuple[list[Row], np.ndarray, list[str]]:
    """Probe every encoder on the same train / held-out images.

    Args:
        pixels: with a side G > 0, a last row probes the images themselves average-pooled to G x G
            (`thumbnail`), named "pixels G x G".
    Returns:
        the rows (a random encoder under precise BN adds a BN-at-init row after it), the held-out
        labels (labels, images) bool, and the label names, for the columns every encoder could score.
    """
    check_bn(bn)
    device = resolve_device(device)
    precision = inference_setup(device, precision)
    if not encoders:
        raise UserError("give at least one --encoder (random, imagenet, imagenet:FILE, a file or a run folder)")
    if not Path(cache).is_file():
        raise UserError(f"--data {cache}: cache file not found (make one with `ptxssl prepare`)")
    size = CacheDataset(cache).size
    rows, shared = [], None
    for name, spec in encoders.items():
        for protocol in (bn, "as-is") if spec == "random" and bn == "precise" else (bn,):
            if progress:
                progress(f"probe {name} ({features} features, BN {protocol})")
            torch.manual_seed(seed)  # a random init is the same weights in both of its rows
            model, meta = load_embedder(spec)
            model.to(device).eval()
            fn = feature_fn(model, features, meta["image_size"] or size)

            def in_precision(x: torch.Tensor, fn=fn) -> torch.Tensor:
                with autocast(device, precision):
                    return fn(x)
            got = probe_features(in_precision, str(cache), max_images, batch_size, device, HELD_OUT, bn=protocol,
                                 model=model)
            if got is None:
                raise UserError(f"{cache}: the probe needs image labels and val / test images; prepare a "
                                "labelled cache (chestxray14, chexpert, siim, or folder with --labels-csv)")
            shared = shared or (got[3], got[4])  # held-out labels and label names
            label = name if protocol == bn or spec != "random" else f"{name}, BN at init"
            rows.append(Row.fitted(label, spec, protocol, got))
    if pixels:
        rows.append(Row.fitted(f"pixels {pixels} x {pixels}", "pixels", "—", probe_features(
            thumbnail(pixels), str(cache), max_images, batch_size, "cpu", HELD_OUT, bn="as-is")))
    return on_shared_labels(rows, *shared, cache)


def on_shared_labels(rows: list[Row], held_y: np.ndarray, names: list[str], cache: str | Path
                     ) -> tuple[list[Row], np.ndarray, list[str]]:
    """The rows with their scores {kind: {label column: (N,)}} stacked to (labels, N) over the
    columns every row could score, the held-out labels (labels, N) bool and names of those columns."""
    columns = sorted(set.intersection(*(set(r.scores["linear"]) for r in rows)))
    if not columns:
        raise UserError(f"{cache}: no label has both classes on both sides of the probe; use more images "
                        "(--max-images) or a cache with more positives")
    for r in rows:
        r.scores = {kind: np.stack([r.scores[kind][k] for k in columns]) for kind in PROBES}
    return rows, held_y[:, columns].T.astype(bool), [names[k] for k in columns]


def table(rows: list[Row], labels: np.ndarray, names: list[str], reference: str) -> tuple[str, list[list]]:
    """(Markdown table, CSV rows) of mean AUROC per probe with Δ vs `reference` and its interval,
    then AUROC per label."""
    ref = next((r for r in rows if r.name == reference), None)
    if ref is None:
        raise UserError(f"--reference {reference!r}: not one of the encoders ({', '.join(r.name for r in rows)})")
    head = "| encoder | BN | " + " | ".join(f"{k} AUROC | Δ vs {reference} [95 %]" for k in PROBES) + " |"
    lines, csv_rows = [head, "|---" * (2 + 2 * len(PROBES)) + "|"], []
    for r in rows:
        cells = [r.name, r.bn]
        for kind in PROBES:
            per_label = auroc_rows(labels, r.scores[kind])
            d, lo, hi = auroc_difference(labels, r.scores[kind], ref.scores[kind])
            cells += [f"{np.nanmean(per_label):.3f}", "—" if r is ref else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"]
            csv_rows += [[r.name, r.spec, r.bn, kind, label, round(float(a), 6)] for label, a in zip(names, per_label)]
            csv_rows.append([r.name, r.spec, r.bn, kind, "mean", round(float(np.nanmean(per_label)), 6)])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "linear probe AUROC per label", "", "| label | " + " | ".join(r.name for r in rows) + " |",
              "|---" * (len(rows) + 1) + "|"]
    aurocs = [auroc_rows(labels, r.scores["linear"]) for r in rows]
    lines += [f"| {n} | " + " | ".join(f"{a[i]:.3f}" for a in aurocs) + " |" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n", csv_rows


def run_probe(encoders: dict[str, str], cache: str | Path, out: str | Path, reference: str | None = None,
              **options) -> str:
    """Probe, then write OUT/results.csv (one row per encoder, probe and label) and OUT/table.md;
    return the table."""
    rows, labels, names = probe_encoders(encoders, cache, **options)
    text, csv_rows = table(rows, labels, names, reference or rows[0].name)
    out = Path(out)
    header = (f"Probes of `{cache}` ({labels.shape[1]} held-out val + test images, {len(names)} labels, "
              f"features {options.get('features', 'pooled')}): mean AUROC; Δ with a paired bootstrap 95 % "
              "interval over the held-out images.\n\n")
    write_csv(out / "results.csv", ["encoder", "spec", "bn", "probe", "label", "auroc"], csv_rows)
    text += own_heads(encoders)
    write_text(out / "table.md", header + text)
    return header + text


def own_heads(encoders: dict[str, str]) -> str:
    """Lines for the encoders that come with their own classifier (`supervised` runs): its mean
    AUROC on the cache's val and test splits (encoder.json `head_auroc`), the network's own
    score to read beside the probes of its frozen features."""
    lines = []
    for name, spec in encoders.items():
        if not is_encoder_file(spec):
            continue
        meta = read_meta(resolve_encoder_path(spec))
        if meta.get("head_auroc"):
            scores = ", ".join(f"{split} {value:.3f}" for split, value in meta["head_auroc"].items())
            lines.append(f"- {name}: its own head's mean AUROC {scores} (best epoch {meta.get('best_epoch', '?')} by "
                         f"val, on the cache it was trained on: {meta.get('data', {}).get('path', '?')})")
    return ("\n\nOwn classifier heads, beside the probes of the same encoders:\n\n" + "\n".join(lines) + "\n"
            if lines else "")
