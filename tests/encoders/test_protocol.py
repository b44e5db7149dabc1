"""The BatchNorm protocol every encoder is evaluated under: precise re-estimation (the plain
average over reference batches), deterministic, weights untouched; restoring a training model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ptxssl.encoders import build_encoder, normalize
from ptxssl.encoders.protocol import batchnorms, bn_restored, check_bn, precise_bn
from ptxssl.errors import UserError


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_encoder(1, "resnet18").eval()


def _batches(n: int = 4, size: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(size, 1, 32, 32, generator=g) for _ in range(n)]


def _forward(encoder: nn.Module):
    return lambda x: encoder(normalize(x))


def test_precise_bn_sets_the_plain_average_of_the_reference_batches():
    encoder, batches = _encoder(), _batches()
    weights = {k: v.clone() for k, v in encoder.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert precise_bn(encoder, batches, _forward(encoder)) == 32
    bn1 = encoder.bn1
    with torch.no_grad():  # bn1's input: conv1 of every reference image
        acts = [encoder.conv1(normalize(x)) for x in batches]  # (8, 64, 16, 16) each
    mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in acts]).mean(0)  # batches of equal size: the global mean
    var = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in acts]).mean(0)
    # float32 means of 2,048 values per batch, averaged over 4: ~1e-6 relative; 1e-4 leaves room for
    # another summation order, and a momentum-0.1 running average would miss by ~50 %
    torch.testing.assert_close(bn1.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn1.running_var, var, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(bn1.running_var, torch.ones_like(bn1.running_var))  # no longer the identity
    for k, v in encoder.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k  # only the statistics moved
    assert not encoder.training and all(m.momentum == 0.1 for m in batchnorms(encoder))  # momentum restored


def test_precise_bn_is_deterministic_and_depends_on_the_reference():
    a, b, c = _encoder(), _encoder(), _encoder()
    precise_bn(a, _batches(), _forward(a))
    precise_bn(b, _batches(), _forward(b))
    precise_bn(c, _batches(seed=2), _forward(c))
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.layer4[1].bn2.running_mean, c.layer4[1].bn2.running_mean)


def test_a_batch_of_one_is_skipped_and_no_reference_is_a_one_line_error():
    encoder = _encoder()
    assert precise_bn(encoder, [*_batches(n=2), torch.rand(1, 1, 32, 32)], _forward(encoder)) == 16
    with pytest.raises(UserError, match="at least 2 reference images"):
        precise_bn(encoder, [torch.rand(1, 1, 32, 32)], _forward(encoder))


def test_bn_restored_gives_back_the_buffers_and_modes_of_a_training_model():
    encoder = _encoder().train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with bn_restored(encoder):
        precise_bn(encoder, _batches(), _forward(encoder))
        assert not torch.equal(encoder.bn1.running_mean, before["bn1.running_mean"])
    assert encoder.training and all(m.training for m in encoder.modules())
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_an_unknown_protocol_names_the_option():
    assert check_bn("as-is") == "as-is"
    with pytest.raises(UserError, match="--bn must be precise or as-is"):
        check_bn("recalibrate")
