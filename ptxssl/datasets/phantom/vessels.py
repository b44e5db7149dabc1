"""Lung markings: vessel trees grown once per template, then scaled into each lung.

Growing a tree is slow, so `TEMPLATES` trees per view are cached and a patient's seed picks
one per lung: follow-up images of one patient show the same markings.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ptxssl.datasets.phantom.patient import Patient
from ptxssl.datasets.phantom.raster import F32, _blur, _splat
from ptxssl.datasets.phantom.scene import VIEWS, Lung

# lungs in which the vessel templates grow (an average patient's image-right lung, and the lateral one)
_CANON = {"frontal": Lung(1, 0.42, 0.4, 0.36, 0.46, 1.14, 0.32, 0.11, 0.0, 0.3, 0.38, 1.3, 0.25, (0.18, -0.13)),
          "lateral": Lung(1, 0.0, 0.35, 0.7, 0.68, 1.09, 0.35, -10.0, 0.0, 0.33, -0.15, 0.45, 0.45, (0.08, -0.12))}
TEMPLATES = 16  # vessel trees per view; a patient's seed picks one per lung


def _height(lung: Lung) -> float:
    return lung.base_v - lung.cy + lung.b_up


@functools.lru_cache(maxsize=2 * TEMPLATES)
def _markings(index: int, view: str) -> tuple[np.ndarray, ...]:
    """Lung markings grown once in the canonical lung of `view`, relative to its hilum:
    (p0 (m, 2), p1 (m, 2), width (m,), level (m,)); level -1 = a short interstitial stroke.

    The vessel tree grows level by level (each branch forks in two; forks that leave the lung
    are pruned; each branch is two straight pieces around a bent midpoint); the strokes fall
    uniformly inside the lung. Cached, so a render only scales and places them."""
    lung, rng = _CANON[view], np.random.default_rng([index, VIEWS.index(view)])
    k = 9
    ang = np.linspace(*((-1.9, 1.8) if view == "frontal" else (-math.pi, math.pi)), k) + rng.uniform(-0.15, 0.15, k)
    start = np.array(lung.hilum) + rng.normal(0, 0.025, (k, 2))
    length, width, out = rng.uniform(0.08, 0.13, k), np.ones(k), []
    for level in range(6):
        step = np.stack([np.cos(ang), np.sin(ang)], 1) * length[:, None]  # (m, 2)
        mid = start + step * 0.5 + rng.uniform(-0.15, 0.15, (len(ang), 1)) * step[:, ::-1] * [1, -1]
        out += [(start, mid, width, np.full(len(ang), level)), (mid, start + step, width * 0.9, np.full(len(ang), level))]
        spread = rng.uniform(0.25, 0.55, len(ang))
        ang = np.concatenate([ang - spread, ang + spread * rng.uniform(0.5, 1, len(ang))]) + rng.uniform(-0.15, 0.15, 2 * len(ang))
        start, width = np.concatenate([start + step, start + step]), np.concatenate([width, width]) * 0.7
        length = np.concatenate([length, length]) * rng.uniform(0.75, 0.9, len(ang))
        keep = lung.sdf(start[:, 0], start[:, 1]) < -0.02
        ang, start, length, width = ang[keep], start[keep], length[keep], width[keep]
    a = rng.uniform([lung.cx - lung.a_med, lung.cy - lung.b_up], [lung.cx + lung.a_lat, lung.base_v], (900, 2))
    a = a[lung.sdf(a[:, 0], a[:, 1]) < -0.01]  # (k', 2) stroke starts inside the lung
    ang = rng.uniform(0, np.pi, len(a))
    step = np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(0.01, 0.035, (len(a), 1))
    out.append((a, a + step, rng.uniform(0.25, 0.6, len(a)), np.full(len(a), -1)))
    p0, p1, width, level = (np.concatenate(x) for x in zip(*out))
    res = (p0 - lung.hilum, p1 - lung.hilum, width, level)
    for x in res:
        x.flags.writeable = False
    return res


def _vessels(p: Patient, lungs: list[Lung], frame, n: int, px: float, sl, view: str) -> np.ndarray:
    """(n, n) lung markings inside the window `sl`: each lung gets one of the patient's vessel
    templates, scaled to its size; fine branches are lines blurred to their width, the thick
    hilar trunks three parallel lines."""
    canon, parts = _CANON[view], []
    for i, lung in enumerate(lungs):
        p0, p1, width, level = _markings((p.seed + 5 * i) % TEMPLATES, view)
        keep = level < (5 if n <= 320 else 6)  # the finest branches are sub-pixel below ~320 px
        g = np.array([lung.side * lung.a_lat / canon.a_lat, _height(lung) / _height(canon)])
        p0, p1, width, level = p0[keep] * g + lung.hilum, p1[keep] * g + lung.hilum, width[keep], level[keep]
        trunk = (level >= 0) & (level < 2)
        d = p1[trunk] - p0[trunk]
        off = d[:, ::-1] * [1, -1] * (0.006 / np.hypot(*d.T))[:, None]  # (t, 2) perpendicular offsets
        parts += [(p0, p1, width), (p0[trunk] + off, p1[trunk] + off, width[trunk] * 0.5),
                  (p0[trunk] - off, p1[trunk] - off, width[trunk] * 0.5)]
    p0, p1, width = (np.concatenate(x) for x in zip(*parts))
    s_px = max(0.004 / px, 0.5)
    out = np.zeros((n, n), F32)
    out[sl] = _blur(_splat(p0, p1, width, frame, n, sl), s_px) * F32(0.1 * math.sqrt(2 * math.pi) * s_px)
    return out
