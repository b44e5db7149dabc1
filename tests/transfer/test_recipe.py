"""The SIIM-ACR competition recipe: the triplet rule and its tuning, flip TTA, checkpoint
averaging, on hand-made inputs with known answers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from ptxssl.transfer.averaging import average_checkpoints, top_k_paths
from ptxssl.transfer.metrics import (
    DEFAULT_AREA_FRACTIONS,
    TRIPLET_BOTTOMS,
    TRIPLET_TOPS,
    postprocess_triplet,
    siim_score,
    tune_triplet,
)
from ptxssl.transfer.model import probabilities
from ptxssl.transfer.module import predict_loader


def test_triplet_gates_on_top_count_and_draws_kept_masks_at_bottom():
    prob = np.full((3, 16, 16), 0.1)
    prob[0, 2:8, 2:8] = 0.5  # a 36 px region above bottom ...
    prob[0, 3:5, 3:5] = 0.95  # ... with a 4 px core above top: kept
    prob[0, 14, 14] = 0.45  # an isolated speck above bottom: kept too (no component filter)
    prob[1, 2:8, 2:8] = 0.5
    prob[1, 3, 3:6] = 0.95  # only 3 px above top: too few, the whole image is emptied
    prob[2, :, :8] = 0.75  # half the image, but below top: empty
    out = postprocess_triplet(prob, top=0.8, min_area_fraction=4 / 256, bottom=0.4)
    assert out.dtype == bool and out.shape == prob.shape
    np.testing.assert_array_equal(out[0], prob[0] > 0.4)
    assert out[0].sum() == 37 and out[0, 14, 14]
    assert not out[1].any() and not out[2].any()
    # one (H, W) map in, one out; min area 0 opens every gate: plain thresholding at bottom
    np.testing.assert_array_equal(postprocess_triplet(prob[1], 0.8, 4 / 256, 0.4), out[1])
    np.testing.assert_array_equal(postprocess_triplet(prob, 0.8, 0.0, 0.4), prob > 0.4)


def _planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4 positive and 4 negative 32 px maps whose only perfect triplet is (0.8, 40 px, 0.4)."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.0, 0.25, (8, 32, 32))
    truth = np.zeros(probs.shape, dtype=bool)
    truth[:4, 8:18, 8:18] = True  # 100 px
    probs[:4, 7:19, 7:19] = 0.35  # a ring just outside the truth: below the right bottom only
    probs[truth] = 0.45  # the truth: above the right bottom only
    probs[:4, 10:14, 8:18] = 0.85  # 40 px core above top 0.8: exactly the minimum area
    probs[4:, 20:22, 20:26] = 0.85  # negatives: 12 px above 0.8 (fewer than 40) ...
    probs[4:, 24:29, 20:30] = 0.75  # ... and 50 px at 0.75 (above top 0.7)
    return probs, truth


def test_tune_triplet_finds_the_planted_best():
    probs, truth = _planted()
    best = tune_triplet(probs, truth, tops=(0.6, 0.7, 0.8, 0.9), area_fractions=(0.0, 8 / 1024, 40 / 1024),
                        bottoms=(0.3, 0.4, 0.5))
    assert best == {"threshold": 0.8, "min_area_fraction": 40 / 1024, "bottom": 0.4, "score": 1.0}
    # bottom > top is never chosen, even where it would score better (0.4 draws the positives exactly)
    allowed = tune_triplet(probs, truth, tops=(0.45,), area_fractions=(0.0,), bottoms=(0.2, 0.4))
    limited = tune_triplet(probs, truth, tops=(0.3,), area_fractions=(0.0,), bottoms=(0.2, 0.4))
    assert allowed["bottom"] == 0.4 and limited["bottom"] == 0.2 and limited["score"] < allowed["score"]


def test_tune_triplet_equals_brute_force_on_the_default_grid():
    rng = np.random.default_rng(1)
    truth = np.zeros((10, 16, 16), dtype=bool)
    for i in range(5):
        r, c = rng.integers(0, 10, 2)
        truth[i, r:r + 5, c:c + 6] = True
    probs = np.clip(0.55 * truth + rng.uniform(0, 0.6, truth.shape), 0, 1)
    found = tune_triplet(probs, truth)
    brute = max(((siim_score(postprocess_triplet(probs, t, a, b), truth), -i)
                 for i, (t, a, b) in enumerate(itertools.product(TRIPLET_TOPS, DEFAULT_AREA_FRACTIONS,
                                                                 TRIPLET_BOTTOMS)) if b <= t))
    t, a, b = list(itertools.product(TRIPLET_TOPS, DEFAULT_AREA_FRACTIONS, TRIPLET_BOTTOMS))[-brute[1]]
    assert found == {"threshold": t, "min_area_fraction": a, "bottom": b, "score": brute[0]}
    assert found["bottom"] <= found["threshold"]


class _Pointwise(nn.Module):
    """logits = 4x - 2 per pixel: exactly flip-equivariant, but not flip-invariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * x - 2


class _Symmetrised(nn.Module):
    """logits of x + x.flip(-1): the same map for an image and its mirror."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x.flip(-1) - 1


class _Lopsided(nn.Module):
    """logits weighted by a left-to-right ramp: flip TTA must change its output. Has a
    parameter, an `adapt` and a 1-channel input like SegmentationModule, for predict_loader."""

    def __init__(self) -> None:
        super().__init__()
        self.ramp = nn.Parameter(torch.linspace(-3, 3, 8))

    def adapt(self, x: torch.Tensor, mask: torch.Tensor):
        return x, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.ramp


def test_hflip_tta_of_an_equivariant_model_is_its_own_output():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for model in (_Pointwise(), _Symmetrised()):
        plain = probabilities(model, x, "none")
        torch.testing.assert_close(plain, torch.sigmoid(model(x)))
        torch.testing.assert_close(probabilities(model, x, "hflip"), plain)
    with pytest.raises(ValueError, match="tta"):
        probabilities(_Pointwise(), x, "vflip")


@torch.no_grad()
def test_predict_loader_applies_hflip_tta():
    model = _Lopsided()
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    batches = [{"image": images[i:i + 2], "mask": (images[i:i + 2] > 0.5).float()} for i in range(0, 5, 2)]
    loader = DataLoader(batches, batch_size=None)
    expected = (torch.sigmoid(images * model.ramp) + torch.sigmoid(images.flip(-1) * model.ramp).flip(-1)) / 2
    probs, masks = predict_loader(model, loader, tta="hflip")
    np.testing.assert_allclose(probs, expected[:, 0].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(masks, images[:, 0].numpy() > 0.5)
    plain, _ = predict_loader(model, loader)
    np.testing.assert_allclose(plain, torch.sigmoid(images * model.ramp)[:, 0].numpy(), rtol=1e-6)
    assert np.abs(plain - probs).max() > 0.01


def _checkpoint(path, epoch: int, weight: torch.Tensor, half: torch.Tensor, tracked: int):
    state = {"unet.w": weight, "unet.h": half, "unet.bn.num_batches_tracked": torch.tensor(tracked)}
    torch.save({"epoch": epoch, "state_dict": state, "optimizer_states": []}, path)
    return path


def test_average_checkpoints_is_the_mean_with_counters_from_the_best(tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 3, generator=g) for _ in range(3)]
    halves = [torch.randn(5, generator=g).half() for _ in range(3)]
    paths = [_checkpoint(tmp_path / f"c{i}.ckpt", epoch, w, h, tracked)
             for i, (epoch, w, h, tracked) in enumerate(zip((4, 2, 7), weights, halves, (40, 20, 70)))]
    state, epochs = average_checkpoints(paths)
    assert epochs == [4, 2, 7]
    torch.testing.assert_close(state["unet.w"], torch.stack(weights).mean(0))
    assert state["unet.h"].dtype == torch.float16
    torch.testing.assert_close(state["unet.h"], torch.stack([h.double() for h in halves]).mean(0).half())
    assert state["unet.bn.num_batches_tracked"].item() == 40  # the best's, not the mean 43
    one, _ = average_checkpoints(paths[1:2])  # a single checkpoint: exactly its weights
    assert torch.equal(one["unet.w"], weights[1]) and torch.equal(one["unet.h"], halves[1])
    torch.save({"epoch": 0, "state_dict": {"other": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="bad.ckpt"):
        average_checkpoints([paths[0], tmp_path / "bad.ckpt"])


def test_top_k_paths_ranks_by_score_and_skips_missing_files(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val_score", mode="max", save_top_k=3)
    for name in ("a", "b"):
        (tmp_path / f"{name}.ckpt").touch()
    callback.best_k_models = {str(tmp_path / "a.ckpt"): torch.tensor(0.5),
                              str(tmp_path / "b.ckpt"): torch.tensor(0.9),
                              str(tmp_path / "gone.ckpt"): torch.tensor(0.99)}
    assert top_k_paths(callback) == [tmp_path / "b.ckpt", tmp_path / "a.ckpt"]
