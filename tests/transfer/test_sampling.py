"""Segmentation sampling schedules: each epoch's positive share follows its mode."""
from __future__ import annotations

import numpy as np
import pytest

from ptxssl.errors import UserError
from ptxssl.transfer.sampling import ScheduleSampler

POSITIVE = np.zeros(100, bool)
POSITIVE[:20] = True  # 20 % positives, as in SIIM


def _share(sampler: ScheduleSampler, epoch: int) -> tuple[float, np.ndarray]:
    sampler.set_epoch(epoch)
    idx = np.array(list(sampler))
    assert len(idx) == len(sampler)
    return POSITIVE[idx].mean(), idx


def test_all_is_every_image_once_in_a_new_order_each_epoch():
    s = ScheduleSampler(POSITIVE, "all", seed=1)
    share0, a = _share(s, 0)
    _, b = _share(s, 1)
    assert sorted(a) == list(range(100)) and share0 == 0.2 and not np.array_equal(a, b)


def test_balanced_keeps_every_positive_and_resamples_negatives_on_schedule():
    s = ScheduleSampler(POSITIVE, "balanced", seed=0, resample_every=2)
    negatives = []
    for epoch in range(4):
        share, idx = _share(s, epoch)
        assert share == 0.5 and set(range(20)) <= set(idx)
        negatives.append(frozenset(idx[~POSITIVE[idx]]))
    assert negatives[0] == negatives[1] and negatives[2] == negatives[3] and negatives[0] != negatives[2]


def test_sliding_moves_the_positive_share_from_start_to_end():
    s = ScheduleSampler(POSITIVE, "sliding", seed=0, epochs=5, pos_rate_start=0.8, pos_rate_end=0.4)
    shares = [_share(s, e)[0] for e in range(5)]
    assert shares == pytest.approx([0.8, 0.7, 0.6, 0.5, 0.4])
    # positives are cycled through shuffles: over the first epoch's 80 draws, each of the 20 appears 4 times
    _, first = _share(s, 0)
    assert np.bincount(first[POSITIVE[first]], minlength=20).tolist() == [4] * 20


def test_positives_only_and_errors():
    share, idx = _share(ScheduleSampler(POSITIVE, "positives"), 0)
    assert share == 1.0 and sorted(idx) == list(range(20))
    with pytest.raises(UserError, match="--sampler"):
        ScheduleSampler(POSITIVE, "oversample")
    with pytest.raises(UserError, match="no"):
        ScheduleSampler(np.zeros(10, bool), "balanced")


def test_same_seed_and_epoch_same_batches():
    a, b = (ScheduleSampler(POSITIVE, "sliding", seed=3, epochs=4) for _ in range(2))
    assert np.array_equal(_share(a, 2)[1], _share(b, 2)[1])


def test_a_transfer_run_trains_on_the_sampler_s_epochs(tmp_path):
    import pandas as pd

    from ptxssl.transfer.run import resolve_config, transfer
    from tests.helpers import synthetic_cache

    cache = synthetic_cache(tmp_path / "data", "siim", count=40, seed=5, source_size=64, positive_fraction=0.5,
                            fractions=(0.6, 0.2, 0.2))
    cfg = resolve_config(None, {"data": str(cache), "out": str(tmp_path / "run"), "image_size": 32, "batch_size": 2,
                                "workers": 0, "epochs": 2, "patience": 0, "sampler": "positives", "loss": "bce:1,dice:1"})
    metrics = transfer(cfg, progress=False)
    positives = int(pd.read_csv(tmp_path / "run" / "labelled.csv")["pneumothorax"].sum())
    assert 0 < positives < metrics["labelled_images"]
    assert metrics["steps"] == 2 * (positives // 2)  # two epochs over the positives only, full batches
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv").columns
    assert "bce_step" in logged and "focal_step" not in logged  # the --loss terms are what trains
