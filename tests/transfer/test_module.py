"""TransferModule, what both transfer tasks train: freezing (BatchNorm too), learning rates,
checkpoints written before the model was held as `.model`."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ptxssl.transfer.config import resolve_config
from ptxssl.transfer.model import build_unet
from ptxssl.transfer.module import SegmentationModule, TransferModule, current_keys


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    torch.manual_seed(0)
    return build_unet("random", arch="resnet18")[0]


def _module(unet, **options) -> SegmentationModule:
    return SegmentationModule(unet, resolve_config(overrides={"arch": "resnet18", **options}), 32)


def test_a_frozen_encoder_has_no_gradients_and_batchnorm_in_eval(unet):
    module = _module(unet, freeze_epochs=-1).train()
    module.on_train_batch_start({}, 0)
    assert not any(p.requires_grad for p in module.model.encoder.parameters())
    bn = [m for m in module.model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn)  # running statistics stand still with the weights
    assert module.model.decoder.training and all(p.requires_grad for p in module.model.decoder.parameters())
    thawed = _module(unet, freeze_epochs=0).train()
    thawed.on_train_batch_start({}, 0)
    assert all(p.requires_grad for p in thawed.model.encoder.parameters())
    assert all(m.training for m in thawed.model.encoder.modules() if isinstance(m, nn.BatchNorm2d))


def test_the_encoder_learns_at_its_own_rate(unet):
    optimizer = _module(unet, lr=1e-3, encoder_lr_scale=0.1).configure_optimizers()
    others, encoder = optimizer.param_groups
    assert others["lr"] == pytest.approx(1e-3) and encoder["lr"] == pytest.approx(1e-4)
    ids = {id(p) for p in unet.encoder.parameters()}
    assert {id(p) for p in encoder["params"]} == ids and not ids & {id(p) for p in others["params"]}


def test_a_checkpoint_that_held_the_model_as_unet_still_loads(unet):
    module = _module(unet)
    old = {"unet." + k[len("model."):]: v.clone() + 1 if v.is_floating_point() else v
           for k, v in module.state_dict().items()}
    checkpoint = {"state_dict": old}
    TransferModule.on_load_checkpoint(module, checkpoint)
    fresh = _module(build_unet("random", arch="resnet18")[0])
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: every key found under "model."
    assert torch.equal(fresh.model.encoder.conv1.weight, unet.encoder.conv1.weight + 1)
    assert current_keys({"model.x": 1, "loss.y": 2}) == {"model.x": 1, "loss.y": 2}
