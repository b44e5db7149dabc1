"""The linear probe: finds a planted linear signal, stays near chance without one."""
from __future__ import annotations

import numpy as np

from ptxssl.pretrain.probe import probe_auroc


def _data(n: int, signal: float, seed: int):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.3).astype(np.float32)  # (N, 2) two labels
    x = rng.normal(size=(n, 64)).astype(np.float32)
    x[:, :2] += signal * y  # label k shifts feature k
    return x, y


def test_probe_finds_a_planted_signal_and_not_a_missing_one():
    tx, ty = _data(300, 2.0, 0)
    vx, vy = _data(200, 2.0, 1)
    assert probe_auroc(tx, ty, vx, vy) > 0.85
    nx, ny = _data(300, 0.0, 2)
    mx, my = _data(200, 0.0, 3)
    assert 0.35 < probe_auroc(nx, ny, mx, my) < 0.65


def test_labels_without_enough_positives_or_unknown_are_skipped():
    tx, ty = _data(100, 2.0, 0)
    vx, vy = _data(80, 2.0, 1)
    ty[:, 1] = 0
    ty[:2, 1] = 1  # two positives: too few to choose C by 3-fold search
    only_first = probe_auroc(tx, ty, vx, vy)
    assert only_first == probe_auroc(tx, ty[:, :1], vx, vy[:, :1])
    ty[:, :] = np.nan
    assert np.isnan(probe_auroc(tx, ty, vx, vy))
