"""The probes: find a planted signal, stay near chance without one."""
from __future__ import annotations

import numpy as np
import pytest

from ptxssl.pretrain.probe import probe_auroc, probe_scores


def _data(n: int, signal: float, seed: int):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.3).astype(np.float32)  # (N, 2) two labels
    x = rng.normal(size=(n, 64)).astype(np.float32)
    x[:, :2] += signal * y  # label k shifts feature k
    return x, y


@pytest.mark.parametrize("kind, floor", [("linear", 0.85), ("knn", 0.8)])
def test_probe_finds_a_planted_signal_and_not_a_missing_one(kind, floor):
    tx, ty = _data(300, 2.0, 0)
    vx, vy = _data(200, 2.0, 1)
    assert probe_auroc(tx, ty, vx, vy, kind) > floor  # the fitted linear probe is held to its old bound
    nx, ny = _data(300, 0.0, 2)
    mx, my = _data(200, 0.0, 3)
    assert 0.35 < probe_auroc(nx, ny, mx, my, kind) < 0.65


def test_knn_follows_neighbours_where_no_direction_separates_the_classes():
    """Positives on a ring around the negatives: no linear direction separates them, but every
    image's neighbours share its label, which the kNN vote sees and the linear probe cannot."""
    def ring(n, seed):
        rng = np.random.default_rng(seed)
        y = (rng.random(n) < 0.5).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi, n)
        radius = np.where(y == 1, 3.0, 0.5) + rng.normal(0, 0.1, n)
        x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1) + 5.0  # off the origin for cosine
        return x.astype(np.float32), y[:, None]
    tx, ty = ring(400, 0)
    vx, vy = ring(200, 1)
    assert probe_scores(tx, ty, vx, vy, "knn")[0] > 0.85
    assert probe_scores(tx, ty, vx, vy, "linear")[0] < 0.7


def test_an_unknown_probe_is_an_error():
    tx, ty = _data(50, 2.0, 0)
    with pytest.raises(ValueError, match="unknown probe 'svm'"):
        probe_scores(tx, ty, tx, ty, "svm")


def test_labels_without_enough_positives_or_unknown_are_skipped():
    tx, ty = _data(100, 2.0, 0)
    vx, vy = _data(80, 2.0, 1)
    ty[:, 1] = 0
    ty[:2, 1] = 1  # two positives: too few to choose C by 3-fold search
    only_first = probe_auroc(tx, ty, vx, vy)
    assert only_first == probe_auroc(tx, ty[:, :1], vx, vy[:, :1])
    ty[:, :] = np.nan
    assert np.isnan(probe_auroc(tx, ty, vx, vy))


# --- the BatchNorm protocol the probe reads encoders with ------------------------------------

def _random_method(seed: int = 0):
    import torch

    from ptxssl.pretrain.methods import Method, MethodConfig

    torch.manual_seed(seed)
    return Method(MethodConfig(), in_channels=1, image_size=32, arch="resnet18").eval()


def test_a_random_encoder_is_probed_with_recalibrated_batchnorm_by_default(nih_cache):
    """as-is reads a fresh network whose BatchNorm is the identity; precise first estimates the
    statistics on the probe's train images: other features, the same ones every time."""
    from ptxssl.pretrain.probe import probe_features

    at_init = probe_features(_random_method().embed, str(nih_cache), max_images=32, bn="as-is")
    method = _random_method()
    precise = probe_features(method.embed, str(nih_cache), max_images=32, model=method)
    again = probe_features(method.embed, str(nih_cache), max_images=32, model=method)
    assert precise[0].shape == at_init[0].shape and np.abs(precise[0] - at_init[0]).max() > 1e-2
    np.testing.assert_array_equal(precise[0], again[0])  # the re-estimate is deterministic
    np.testing.assert_array_equal(precise[1], at_init[1])  # the same images and labels
    assert not np.allclose(method.encoder.bn1.running_var.numpy(), 1.0)
    with pytest.raises(ValueError, match="needs the model"):
        probe_features(method.embed, str(nih_cache), max_images=32)


def test_the_trainers_probe_leaves_the_training_models_batchnorm_alone(nih_cache, tmp_path):
    import torch

    from ptxssl.pretrain.module import MethodModule
    from ptxssl.pretrain.probe import ProbeCallback

    module = MethodModule(_random_method(), {"seed": 0}, tmp_path).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = type("Trainer", (), {"global_rank": 0})()
    module.log = lambda name, value, **kw: before.setdefault("logged", (name, value))
    ProbeCallback(str(nih_cache), max_images=32).on_train_epoch_end(trainer, module)
    assert before["logged"][0] == "probe_auroc" and 0 <= before["logged"][1] <= 1
    assert module.training and all(m.training for m in module.modules())
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
