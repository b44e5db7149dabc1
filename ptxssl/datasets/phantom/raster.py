"""Pixel machinery shared by the anatomy, vessels and findings.

Banded pointwise passes, blur, pixel windows, segment splats, soft edges and smooth noise.
Several are shaped by numpy's hidden costs (page faults, denormals, BLAS threads); their
docstrings say which.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

F32 = np.float32
BAND = 1 << 14    # pixels per band of the big pointwise passes (see `_rows`)


def _shrink(mask: np.ndarray, size: int, factor: int) -> np.ndarray:
    """Block-average a mask to `size`, keeping its most covered pixel if it would vanish."""
    frac = mask.reshape(size, factor, size, factor).mean((1, 3))  # (size, size)
    out = frac >= 0.5
    if not out.any():
        out.flat[np.argmax(frac)] = True
    return out


def _rows(fn: Callable, *arrays: np.ndarray):
    """Apply a pointwise `fn` (-> one array or a tuple) to same-shaped 2-D arrays, a band of
    rows at a time. Why: a fresh 256 kB numpy temporary costs ~5x the arithmetic on it (page
    faults), so big pointwise passes run on ~64 kB bands whose temporaries get recycled."""
    h, w = arrays[0].shape
    step, outs = max(1, BAND // max(w, 1)), None
    for r in range(0, h, step):
        res = fn(*(a[r:r + step] for a in arrays))
        single = not isinstance(res, tuple)
        res = (res,) if single else res
        outs = outs or [np.empty((h, w), F32) for _ in res]
        for o, x in zip(outs, res):
            o[r:r + step] = x
    return outs[0] if single else tuple(outs)


@functools.lru_cache(maxsize=16)
def _axis(n: int) -> np.ndarray:
    """(n,) pixel-centre coordinates in [-1, 1]."""
    a = ((np.arange(n) + 0.5) * (2 / n) - 1).astype(F32)
    a.flags.writeable = False
    return a


def _window(frame, n: int, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
    """Pixel box holding the anatomical box [u0, u1] x [v0, v1] (rotation-safe, padded)."""
    sx, sy, scale, rot = frame
    c, s = math.cos(rot), math.sin(rot)
    corners = [(u, v) for u in (u0, u1) for v in (v0, v1)]
    cols = [(sx + scale * (c * u - s * v) + 1) * n / 2 for u, v in corners]
    rows = [(sy + scale * (s * u + c * v) + 1) * n / 2 for u, v in corners]
    box = lambda a: slice(min(max(int(min(a)) - 2, 0), n), min(max(int(max(a)) + 3, 0), n))  # noqa: E731
    return box(rows), box(cols)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of `sigma` px (edges: nearest). Narrow kernels as banded shifted sums,
    several times faster than scipy's on float32 images here; scipy for wide ones."""
    if sigma < 0.45:  # invisible; skip the work
        return img
    if sigma > 2.5:
        return ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=3.0)
    r = math.ceil(1.5 * sigma)  # 3 taps up to sigma 0.67
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(F32)
    h, w = img.shape

    def along_rows(a):  # (rows, w) -> (rows, w)
        p = np.concatenate([a[:, :1].repeat(r, 1), a, a[:, -1:].repeat(r, 1)], 1)
        out = p[:, r:r + w] * taps[r]
        for i in range(1, r + 1):
            out += (p[:, r - i:r - i + w] + p[:, r + i:r + i + w]) * taps[r + i]
        return out

    p = _rows(along_rows, img)
    p = np.concatenate([p[:1].repeat(r, 0), p, p[-1:].repeat(r, 0)])  # (h + 2r, w)
    out = np.empty((h, w), F32)
    step = max(1, BAND // w)
    for a in range(0, h, step):  # down the columns, a band of output rows at a time
        b = min(a + step, h)
        o = p[a + r:b + r] * taps[r]
        for i in range(1, r + 1):
            o += (p[a + r - i:b + r - i] + p[a + r + i:b + r + i]) * taps[r + i]
        out[a:b] = o
    return out



def _splat(p0: np.ndarray, p1: np.ndarray, weight: np.ndarray, frame, n: int, sl) -> np.ndarray:
    """Rasterise segments (anatomical (m, 2) ends) as points ~1 px apart: each pixel of the
    window `sl` gets the summed weight x length (px) of what crosses it. Nearest-pixel
    splats, half the cost of bilinear ones; the blur that follows hides the rounding."""
    sx, sy, scale, rot = frame
    c, s = scale * math.cos(rot) * n / 2, scale * math.sin(rot) * n / 2
    oc, orow = (sx + 1) * n / 2 - sl[1].start, (sy + 1) * n / 2 - sl[0].start  # +0.5: round below
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    r0, c0 = orow + s * p0[:, 0] + c * p0[:, 1], oc + c * p0[:, 0] - s * p0[:, 1]  # (m,)
    dr, dc = s * (p1 - p0)[:, 0] + c * (p1 - p0)[:, 1], c * (p1 - p0)[:, 0] - s * (p1 - p0)[:, 1]
    length = np.hypot(dr, dc)
    k = (length + 1).astype(np.intp)  # points per segment
    seg = np.repeat(np.arange(len(k)), k)
    t = (np.arange(len(seg)) - np.repeat(np.cumsum(k) - k, k)) / k[seg]  # (P,)
    r, cc = (r0[seg] + t * dr[seg]).astype(np.intp), (c0[seg] + t * dc[seg]).astype(np.intp)
    ok = (r >= 0) & (r < h) & (cc >= 0) & (cc < w)
    out = np.bincount((r * w + cc)[ok], (weight * np.maximum(length, 1) / k)[seg][ok], h * w)
    return out.reshape(h, w).astype(F32)



def bump(x2: np.ndarray) -> np.ndarray:
    """Bell-shaped (1 - x^2)^2 of a squared distance, 0 beyond 1: like exp(-2 x^2) but with no
    underflow (exp of large negatives hits denormals and runs ~7x slower)."""
    return np.square(np.maximum(1 - x2, 0))


def inside(f: np.ndarray, px: float) -> np.ndarray:
    """Soft indicator of f < 0 with a one-pixel ramp (anti-aliased edges)."""
    return np.clip(F32(0.5) - f / F32(px), 0, 1)


@functools.lru_cache(maxsize=64)
def _basis(n: int, k: int) -> np.ndarray:
    """(n, k) Gaussian interpolation weights with unit-norm rows, so B @ G @ B.T of a white
    (k, k) G is a smooth field of unit variance: smooth noise for the price of two matmuls."""
    step = n / (k - 2)
    centres = (np.arange(k) - 0.5) * step
    w = np.exp(-(((np.arange(n)[:, None] + 0.5 - centres[None, :]) / step) ** 2))
    w /= np.sqrt((w * w).sum(1, keepdims=True))
    w[w < 1e-6] = 0  # no float32 denormals: they make the matmul ~10x slower
    w = w.astype(F32)
    w.flags.writeable = False
    return w


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """A smooth random field of unit variance with blobs about `cell_px` pixels wide."""
    h, w = shape
    kh, kw = (int(min(max(d / max(cell_px, 1.0), 1), d)) + 2 for d in (h, w))
    return _matmul(_basis(h, kh), _matmul(rng.standard_normal((kh, kw), dtype=F32), _basis(w, kw).T))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in row chunks of <= 2^18 multiply-adds: below OpenBLAS's threading threshold, as
    its threads cost far more than they save on products this small (3x the CPU time here)."""
    rows = max(1, (1 << 18) // (a.shape[1] * b.shape[1]))
    if rows >= len(a):
        return a @ b
    return np.concatenate([a[i:i + rows] @ b for i in range(0, len(a), rows)])
