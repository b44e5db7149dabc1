"""Every registered method, parametrised over the registry: a new method gets these for free.

Forward/backward, (N, D) embeddings, a fixed tiny batch that it learns to fit, and an
exported encoder that loads strictly into an smp UNet. Building, stepping and exporting also
run on other encoder archs (ARCHS), so no method may assume ResNet-34's sizes.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
from torch.utils.data import default_collate

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders import load_encoder, save_encoder
from ptxssl.pretrain.methods import METHODS


# arch -> channels of its deepest stage: resnet18 shares resnet34's 512, densenet121 (1024,
# no conv1, a different first stage) catches any head or decoder sized by a constant
ARCHS = {"resnet34": 512, "resnet18": 512, "densenet121": 1024}


def _batch_and_method(name, nih_cache, tmp_path, n=16, arch="resnet34"):
    cls = METHODS[name]
    cfg = cls.config_class()
    if name == "pseudo":
        ids = CacheDataset(nih_cache).all_ids
        pd.DataFrame({"image_id": ids, "label": np.arange(len(ids)) % 3}).to_csv(tmp_path / "l.csv", index=False)
        cfg.labels = str(tmp_path / "l.csv")
    ds, num_classes, _ = cls.make_dataset(cfg, CacheDataset(nih_cache, split="train"))
    batch = default_collate([ds[i] for i in range(n)])
    torch.manual_seed(0)
    return cls(cfg, in_channels=1, image_size=32, num_classes=num_classes, arch=arch), batch


def _step(method, batch, step):
    return method.step({**batch, "generator": torch.Generator().manual_seed(step)})


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_backward_and_embed(name, arch, nih_cache, tmp_path):
    method, batch = _batch_and_method(name, nih_cache, tmp_path, n=8, arch=arch)
    losses = _step(method, batch, 0)
    assert torch.isfinite(losses["loss"]) and losses["loss"].ndim == 0
    losses["loss"].backward()
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)  # the encoder is trained
    method.eval()
    with torch.no_grad():
        assert method.embed(batch["image"]).shape == (8, ARCHS[arch])


# methods whose own test file has a stricter fitting test (VAE: above its BCE floor; MoCo: over
# several batches, since on one batch its queue fills with that batch's own keys)
FIT_TESTED_ELSEWHERE = {"vae", "simclr", "moco", "byol"}


@pytest.mark.parametrize("name", sorted(set(METHODS) - FIT_TESTED_ELSEWHERE))
def test_fits_a_fixed_tiny_batch(name, nih_cache, tmp_path):
    """Four fixed augmentation draws (step % 4), so augmented inputs repeat too."""
    method, batch = _batch_and_method(name, nih_cache, tmp_path)
    optimizer, _ = method.configure_optimizer()
    if isinstance(optimizer, torch.optim.SGD):  # the literature's SGD lr is for long runs
        for group in optimizer.param_groups:
            group["lr"] = 0.05
    method.train()
    history = []
    for step in range(30):
        loss = _step(method, batch, step % 4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(step / 30)
        history.append(loss.item())
    start, end = np.mean(history[:3]), np.mean(history[-3:])
    assert end < 0.8 * start, f"{name}: loss {start:.4f} -> {end:.4f}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_exported_encoder_loads_strictly_into_an_smp_unet(name, arch, nih_cache, tmp_path):
    method, _ = _batch_and_method(name, nih_cache, tmp_path, n=2, arch=arch)
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(0.01)
    save_encoder(method.encoder, tmp_path / "run", {"method": name, "in_channels": 1, "arch": arch})
    encoder, meta = load_encoder(tmp_path / "run")
    unet = smp.Unet(arch, encoder_weights=None, in_channels=1, classes=1)
    # nn.Module's strict load: smp's densenet encoder overrides load_state_dict without `strict`
    torch.nn.Module.load_state_dict(unet.encoder, encoder.state_dict(), strict=True)
    for key, value in method.encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[key], value), key
    assert meta["method"] == name and meta["arch"] == arch and meta["normalization"]["mean"] == pytest.approx(0.449)
    assert json.loads((tmp_path / "run" / "encoder.json").read_text())["arch"] == arch
