"""One radiograph: pixel grid and pose, anatomy, findings, then blur, film response and noise.

Images are as displayed (MONOCHROME2, bright = dense), PA convention: the patient's right is
on the image left.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ptxssl.datasets.labels import NIH_FINDINGS
from ptxssl.datasets.phantom.anatomy import _frontal, _lateral
from ptxssl.datasets.phantom.findings import RENDERERS, pneumothorax
from ptxssl.datasets.phantom.patient import Patient
from ptxssl.datasets.phantom.raster import F32, _axis, _blur, _rows, _shrink
from ptxssl.datasets.phantom.scene import VIEWS

MIN_RENDER = 128  # smaller images are rendered at a multiple of their size and averaged down
LEVELS, DMAX = 4096, 3.0  # film lookup table: density 0..DMAX in LEVELS steps


@dataclass
class Phantom:
    image: np.ndarray               # (size, size) float32 in [0, 1], bright = dense
    pneumothorax: list[np.ndarray]  # one (size, size) bool mask per region; [] if none
    findings: frozenset[str]


def render(patient: Patient, findings: Collection[str], size: int, rng: np.random.Generator,
           view: str = "frontal") -> Phantom:
    """Render one radiograph of `patient` with `findings` (NIH names) at `size` x `size`.

    view: 'frontal' (PA chest) or 'lateral' (one lung field, heart anterior, spine posterior;
    its pneumothorax list is always empty). Draws one integer from `rng`: same inputs and rng
    state -> identical pixels. Each finding has its own random stream (and findings are drawn
    in NIH order, never set order), so adding one leaves the rest of the image unchanged.
    """
    unknown = sorted(set(findings) - set(NIH_FINDINGS))
    if unknown:
        raise ValueError(f"unknown finding {unknown[0]!r}; expected names from {NIH_FINDINGS}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    if size < 8:
        raise ValueError(f"size {size} is too small; use at least 8 px")
    base = int(rng.integers(2**63))
    stream = lambda k: np.random.default_rng([base, k])  # noqa: E731
    rngs = {k: stream(i) for i, k in enumerate(NIH_FINDINGS) if k in findings}
    factor = -(-MIN_RENDER // size) if size < MIN_RENDER else 1
    n = size * factor

    jit = stream(100)  # this image's position and exposure
    sx, sy = patient.shift[0] + jit.uniform(-0.015, 0.015), patient.shift[1] + jit.uniform(-0.015, 0.015)
    scale = patient.scale * jit.uniform(0.985, 1.015)
    rot = math.radians(patient.rotation + jit.uniform(-0.8, 0.8))
    x, y = _axis(n)[None, :] - F32(sx), _axis(n)[:, None] - F32(sy)  # (1, n), (n, 1)
    c, s = F32(math.cos(rot) / scale), F32(math.sin(rot) / scale)
    u, v = c * x + s * y, c * y - s * x  # (n, n) anatomical coordinates
    px = 2 / (n * scale)  # pixel size in anatomical units

    build = _frontal if view == "frontal" else _lateral
    scene, tissue, bone = build(patient, findings, rngs, u, v, px, (sx, sy, scale, rot))
    masks = []
    for name in NIH_FINDINGS:
        if name == "Pneumothorax" and name in findings:
            masks = pneumothorax(scene, rngs[name])
        elif name in findings:
            RENDERERS[name](scene, rngs[name])

    # projected density, blurred (focal spot, detector), then the film response (a lookup
    # table: exponential attenuation, window, gamma) plus quantum noise, stronger where fewer
    # photons arrive (bright = dense); uniform bytes make cheap noise (Gaussian draws cost 5x)
    mu = patient.penetration * jit.uniform(0.95, 1.05)
    lo, hi = jit.uniform(-0.06, -0.02), (1 - math.exp(-mu * 1.5)) * jit.uniform(0.97, 1.03)
    grey = np.clip((1 - np.exp(-mu * np.linspace(0, DMAX, LEVELS))) - lo, 0, hi - lo) / (hi - lo)
    grey = (grey ** (patient.gamma * jit.uniform(0.95, 1.05))).astype(F32)  # (LEVELS,)
    spread = ((0.4 + grey) * patient.noise * jit.uniform(0.8, 1.2) / 73.9).astype(F32)  # 73.9: byte std
    raw = np.frombuffer(stream(101).bytes(n * n), np.uint8).reshape(n, n)

    def film(d, b):  # (rows, n) density -> brightness
        i = np.clip(d * F32((LEVELS - 1) / DMAX), 0, LEVELS - 1).astype(np.intp)
        return np.clip(grey[i] + spread[i] * (b - F32(127.5)), 0, 1)

    dens = _rows(lambda t, b, a, ves, lung, d: t + b - a + ves * lung + d,
                 tissue, bone, scene.air, scene.vessels, scene.lung, scene.dens)
    img = _rows(film, _blur(dens, patient.blur / px), raw)
    if factor > 1:  # average factor x factor blocks: anti-aliasing for small images
        img = img.reshape(size, factor, size, factor).mean((1, 3), dtype=F32)
        masks = [_shrink(m, size, factor) for m in masks]
    return Phantom(image=img, pneumothorax=masks, findings=frozenset(findings))
