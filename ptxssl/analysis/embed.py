"""`ptxssl embed`: every image of a cache through an encoder, into an embeddings file.

The encoder can be any initialisation the transfer stage accepts (`random`, `imagenet`,
`imagenet:FILE`, an encoder.safetensors), of any arch (an encoder file brings its own), so
learned and baseline encoders are analysed the same way. A pretrain run folder brings its
whole model back (method.safetensors): then the file also holds the AE latent / VAE μ and
each image's reconstruction error, which the anomaly stage scores with `--method recon`.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ptxssl import __version__
from ptxssl.analysis.store import Embeddings, write_embeddings
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders import deepest, fit_images, grid_of, init_encoder
from ptxssl.encoders.protocol import DEFAULT_BN, check_bn, precise_bn
from ptxssl.engine.device import autocast, inference_setup, resolve_device
from ptxssl.errors import UserError
from ptxssl.pretrain.methods import Method, MethodConfig
from ptxssl.pretrain.run import METHOD_FILE, load_method


def load_embedder(encoder: str, in_channels: int = 1, arch: str | None = None) -> tuple[Method, dict]:
    """A model with `embed` (and `latent` / `reconstruct` for AE/VAE runs), in eval mode, and
    a description of where its weights came from.

    `arch` as for `ptxssl.encoders.init_encoder`: None takes an encoder file's arch, resnet34 otherwise; a
    pretrain run folder is rebuilt with the arch its config records, and must match `arch`."""
    path = Path(encoder)
    if path.is_dir() and (path / METHOD_FILE).is_file():
        method = load_method(path)
        if arch and arch != method.arch:
            raise UserError(f"{path}: this pretrain run trained a {method.arch} encoder but --arch is {arch}; "
                            f"drop --arch or pass --arch {method.arch}")
        return method, {"encoder": str(path.resolve()), "method": method.name, "image_size": method.image_size,
                        "arch": method.arch}
    weights, info = init_encoder(encoder, in_channels, arch)
    method = Method(MethodConfig(), in_channels=in_channels, image_size=0, arch=info["arch"])  # 0: the cache's size
    method.encoder = weights
    return method.eval(), {"encoder": str(encoder), "method": info.get("init", str(encoder)), "image_size": 0,
                           "arch": info["arch"]}


@torch.no_grad()
def embed_cache(encoder: str, cache: str | Path, out: str | Path, batch_size: int = 64, workers: int = 0,
                device: str = "auto", in_channels: int = 1, progress: bool = True,
                arch: str | None = None, bn: str = DEFAULT_BN, bn_reference: str = "train",
                with_grid: bool = False, precision: str = "auto", with_mirror: bool = False,
                seed: int = 0) -> Embeddings:
    """Embed every image of `cache` with `encoder` and write `out` (atomically); return it.

    Images are resized to the size the model was trained at when it has a decoder (whose
    output size is fixed), otherwise embedded at the cache's size. `bn` is the BatchNorm
    protocol (`ptxssl.encoders.protocol`): "precise" re-estimates the statistics on the
    `bn_reference` split (all images when the cache has none of it) first; the file records it.
    `with_grid` adds the 2 x 2 grid features (4 x the pooled size: opt-in at 100k images).
    `precision` (`--precision`): the forward passes' autocast; the statistics pass runs in float32.
    `with_mirror` adds the same features of each image's left-right mirror (`anomaly --method mirror`).
    `seed` seeds a random init, so `random` is the same weights in every run (and the same as
    `ptxssl probe --seed`'s); the file records it.
    """
    check_bn(bn)
    device = resolve_device(device)
    precision = inference_setup(device, precision)
    torch.manual_seed(seed)
    model, meta = load_embedder(encoder, in_channels, arch)
    model.to(device)
    data = CacheDataset(cache)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
    size = meta["image_size"] or data.size
    bn_meta = {"bn": bn, "precision": precision, "seed": seed}
    if bn == "precise":
        reference = CacheDataset(cache, split=bn_reference)
        reference = reference if len(reference) else data
        batches = (fit_images(b["image"].to(device), size, model.in_channels)
                   for b in DataLoader(reference, batch_size=batch_size, num_workers=workers))
        bn_meta.update(bn_reference=bn_reference if reference is not data else "all",
                       bn_images=precise_bn(model, batches, model.embed))
    feats, latents, errors, grids, mirrors, grid_mirrors = [], [], [], [], [], []
    for batch in tqdm(loader, desc="embed", unit="batch", disable=not progress):
        x = fit_images(batch["image"].to(device), size, model.in_channels)  # (N, C, size, size) in [0, 1]
        views = [(x, feats, grids)] + ([(x.flip(-1), mirrors, grid_mirrors)] if with_mirror else [])
        with autocast(device, precision):
            for view, pooled_out, grid_out in views:
                # one pass through the encoder per view: the pooled features (what `Method.embed`
                # returns: the deepest map's global average) and, with --grid, its 2 x 2 cells
                maps = deepest(model.encoder, view)  # (N, D, h, w)
                pooled_out.append(maps.mean(dim=(2, 3)).float().cpu())  # (N, D), D = the encoder's feature_dim
                if with_grid:
                    grid_out.append(grid_of(maps).float().cpu())  # (N, 4D)
            latent = model.latent(x)
            if latent is not None:
                latents.append(latent.float().cpu())  # (N, L)
                recon = model.reconstruct(x).float()  # (N, C, S, S)
                errors.append((recon - x).pow(2).mean(dim=(1, 2, 3)).cpu())  # (N,)
    with h5py.File(cache, "r") as h5:
        fingerprint = str(h5.attrs.get("fingerprint", ""))
    emb = Embeddings(
        features=torch.cat(feats).numpy(), ids=data.ids, split=data.split,
        labels=data.labels, label_names=data.label_names, anomaly=data.anomaly,
        latent=torch.cat(latents).numpy() if latents else None,
        recon_error=torch.cat(errors).numpy() if errors else None,
        grid=torch.cat(grids).numpy() if grids else None,
        mirror=torch.cat(mirrors).numpy() if mirrors else None,
        grid_mirror=torch.cat(grid_mirrors).numpy() if grid_mirrors else None,
        attrs={**meta, **bn_meta, "data": str(Path(cache).resolve()), "fingerprint": fingerprint, "image_size": size,
               "ptxssl_version": __version__})
    write_embeddings(out, emb)
    return emb


def describe(emb: Embeddings) -> str:
    """One line for the CLI: what the file holds."""
    extra = [f"latent {emb.latent.shape[1]}-d" if emb.latent is not None else "",
             "reconstruction error" if emb.recon_error is not None else "",
             f"{len(emb.label_names)} labels" if emb.label_names else "",
             f"{int((emb.anomaly != '').sum())} QC anomalies" if emb.anomaly is not None else ""]
    return f"{len(emb.ids)} images x {emb.features.shape[1]}-d features" + "".join(
        f", {e}" for e in extra if e)
