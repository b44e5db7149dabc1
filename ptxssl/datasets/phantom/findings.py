"""Findings drawn onto a phantom scene: each NIH finding edits the scene's density layers.

`anatomy.py` builds the anatomy as a `Scene`: the anatomical coordinates of every pixel, the
lung shapes and three density layers (lung air, vessel markings, extra density). A renderer
here edits those layers in place, so findings combine the way they do on film: fluid and
consolidation replace air and hide the vessels, a pneumothorax removes the markings it covers
and adds air, while ribs (drawn elsewhere) stay visible through everything.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np

from ptxssl.datasets.phantom.raster import F32, bump, inside, smooth_noise
from ptxssl.datasets.phantom.scene import Heart, Lung, Scene


def _point_in_lung(rng: np.random.Generator, scene: Scene, i: int, margin: float, v_range=(0.0, 1.0)):
    """A random (u, v) at least `margin` inside lung i and clear of the heart, in a vertical band
    (0 = apex, 1 = base): the first of 64 uniform candidates that qualifies (else the centre)."""
    lung = scene.lungs[i]
    top, bottom = lung.cy - lung.b_up, lung.base_v
    u = lung.side * rng.uniform(lung.cx - lung.a_med, lung.cx + lung.a_lat, 64)
    v = top + (bottom - top) * rng.uniform(*v_range, 64)
    ok = np.flatnonzero((lung.sdf(u, v) < -margin) & (scene.heart.sdf(u, v) > margin / 2))
    return (float(u[ok[0]]), float(v[ok[0]])) if len(ok) else (lung.side * lung.cx, lung.mid_v)


def _crescent(scene: Scene, i: int, phi0: float, half: float, depth: float):
    """Region along lung i's chest wall, centred at angle phi0 (around the lung centre; -pi/2 =
    apex, 0 = lateral wall, +pi/2 = base), `half` radians wide, up to `depth` thick.

    Returns (window, f, d): the window's signed wall distance f and local thickness d (0 on
    the mediastinal side and outside the lung); the region is -d < f < 0, and f = -d is its
    inner (visceral) edge.
    """
    lung, sl = scene.lungs[i], scene.windows[i]
    u, v, f = scene.u[sl], scene.v[sl], scene.f_wall[i]
    phi = np.arctan2(v - F32(lung.mid_v), lung.side * u - F32(lung.cx))
    t = np.clip((phi - F32(phi0)) / F32(half), -1, 1)  # (h, w)
    d = F32(depth) * np.maximum(np.cos(F32(math.pi / 2) * t), 0) ** F32(0.6)
    d *= np.clip((F32(2.5) - np.abs(phi)) * F32(2.5), 0, 1) * (scene.f_lung[i] < 0)  # not medially
    return sl, f, d


def _pick_lung(scene: Scene, rng: np.random.Generator) -> int:
    return int(rng.integers(len(scene.lungs)))


def _blob(scene: Scene, rng: np.random.Generator, i: int, radius: float, amount: float,
          v_range=(0.1, 0.9), bronchi: float = 0.0, cell: float = 0.05) -> None:
    """Patchy airspace opacity in lung i: air replaced by fluid/cells inside a noisy blob."""
    lung = scene.lungs[i]
    cu, cv = _point_in_lung(rng, scene, i, radius * 0.3, v_range)
    sl = scene.window(cu, cv, radius * 1.3)
    if min(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) < 1:
        return
    u, v = scene.u[sl], scene.v[sl]
    ax = radius * rng.uniform(0.7, 1.3)
    r2 = ((u - F32(cu)) / F32(ax)) ** 2 + ((v - F32(cv)) / F32(radius)) ** 2  # (h, w)
    patch = np.clip(1 - r2, 0, 1) * np.clip(F32(0.6) + F32(0.8) * smooth_noise(rng, r2.shape, cell / scene.px), 0, 1)
    patch *= inside(lung.sdf(u, v), scene.px)
    op = F32(amount) * patch
    if bronchi:  # air bronchograms: the bronchi beside the vessels stay black inside the opacity
        scene.dens[sl] -= F32(bronchi) * patch * scene.vessels[sl]
    scene.air[sl] *= 1 - op
    scene.vessels[sl] *= 1 - op


def atelectasis(scene: Scene, rng: np.random.Generator) -> None:
    """Plate-like atelectasis: a thin, slightly curved, nearly horizontal band of collapsed lung
    in the mid/lower zone, fading at its ends."""
    i = _pick_lung(scene, rng)
    lung = scene.lungs[i]
    cu, cv = _point_in_lung(rng, scene, i, 0.08, (0.5, 0.85))
    length, thick = rng.uniform(0.12, 0.25), rng.uniform(0.012, 0.025)
    tilt, bend = rng.uniform(-0.3, 0.3), rng.uniform(-1.5, 1.5)
    sl = scene.window(cu, cv, length)
    u, v = scene.u[sl] - F32(cu), scene.v[sl] - F32(cv)
    p = u * F32(math.cos(tilt)) + v * F32(math.sin(tilt))  # (h, w) along the plate
    q = v * F32(math.cos(tilt)) - u * F32(math.sin(tilt)) - F32(bend) * p * p  # across it
    band = bump((q / F32(thick + scene.px)) ** 2) * bump((p / F32(length)) ** 2)
    band *= inside(lung.sdf(scene.u[sl], scene.v[sl]), scene.px)
    scene.air[sl] *= 1 - F32(rng.uniform(0.7, 0.9)) * band
    scene.vessels[sl] *= 1 - band


def effusion(scene: Scene, rng: np.random.Generator) -> None:
    """Pleural fluid: a homogeneous opacity filling the lung base up to a meniscus that climbs
    the lateral wall; it blunts the costophrenic angle and hides the dome. Often bilateral."""
    sides = range(len(scene.lungs)) if rng.random() < 0.3 else [_pick_lung(scene, rng)]
    for i in sides:
        lung, sl = scene.lungs[i], scene.windows[i]
        u, v = scene.u[sl], scene.v[sl]
        height = (lung.base_v - (lung.cy - lung.b_up)) * rng.uniform(0.06, 0.35)
        w = np.clip((lung.side * u - F32(lung.cx)) / F32(lung.a_lat) + F32(0.5), 0, 2)  # (h, w) 0 = medial
        level = F32(lung.base_v - height) - F32(rng.uniform(0.06, 0.14)) * w * w  # meniscus climbs
        fluid = np.clip((v - level) * F32(1 / 0.06), 0, 1) * inside(scene.f_wall[i], scene.px)
        scene.air[sl] *= 1 - F32(0.97) * fluid
        scene.vessels[sl] *= 1 - fluid


def infiltration(scene: Scene, rng: np.random.Generator) -> None:
    """Hazy, ill-defined patch: partial air loss over a wide area, vessels still seen through it."""
    i = _pick_lung(scene, rng)
    _blob(scene, rng, i, rng.uniform(0.12, 0.22), rng.uniform(0.25, 0.4), cell=0.08)


def consolidation(scene: Scene, rng: np.random.Generator) -> None:
    """Dense patchy airspace opacity with air bronchograms."""
    _blob(scene, rng, _pick_lung(scene, rng), rng.uniform(0.12, 0.2), rng.uniform(0.8, 0.95), bronchi=0.6)


def pneumonia(scene: Scene, rng: np.random.Generator) -> None:
    """Consolidation-like, usually lower-zone, softer-edged, with a hazy rim."""
    i = _pick_lung(scene, rng)
    _blob(scene, rng, i, rng.uniform(0.1, 0.18), rng.uniform(0.65, 0.85), (0.4, 0.9), bronchi=0.4)
    _blob(scene, rng, i, rng.uniform(0.12, 0.2), 0.25, (0.4, 0.9), cell=0.1)


def _round(scene: Scene, rng: np.random.Generator, radius: float, amp: float, lobes: float) -> None:
    i = _pick_lung(scene, rng)
    cu, cv = _point_in_lung(rng, scene, i, radius, (0.1, 0.85))
    sl = scene.window(cu, cv, radius * (1 + lobes))
    u, v = scene.u[sl] - F32(cu), scene.v[sl] - F32(cv)
    r = np.sqrt(u * u + v * v) + F32(1e-6)  # (h, w)
    if lobes:  # lobulated edge: the radius wobbles with angle
        k, ph = rng.uniform(0, 2 * math.pi, 2)
        a = np.arctan2(v, u)
        rad = F32(radius) * (1 + F32(lobes) * (F32(0.6) * np.cos(3 * a + F32(k)) + F32(0.4) * np.sin(5 * a + F32(ph))))
    else:
        rad = F32(radius)
    sphere = np.sqrt(np.clip(1 - (r / rad) ** 2, 0, 1)) + 0.3 * inside(r - rad, scene.px)
    scene.dens[sl] += F32(amp) * sphere
    scene.vessels[sl] *= 1 - inside(r - rad, scene.px) * F32(0.5)


def nodule(scene: Scene, rng: np.random.Generator) -> None:
    """One to three small round opacities (< 3 cm: radius 0.02-0.04, the thorax being ~1.6 wide)."""
    for _ in range(1 + int(rng.random() < 0.25) + int(rng.random() < 0.1)):
        _round(scene, rng, rng.uniform(0.02, 0.04), rng.uniform(0.12, 0.22), 0.0)


def mass(scene: Scene, rng: np.random.Generator) -> None:
    """A larger (> 3 cm), lobulated opacity."""
    _round(scene, rng, rng.uniform(0.05, 0.1), rng.uniform(0.25, 0.4), rng.uniform(0.05, 0.15))


def edema(scene: Scene, rng: np.random.Generator) -> None:
    """Bilateral perihilar ('bat-wing') haze with indistinct, engorged vessels."""
    amount = F32(rng.uniform(0.35, 0.6))
    reach = F32(rng.uniform(0.25, 0.4))
    for i, lung in enumerate(scene.lungs):
        sl = scene.windows[i]
        du, dv = scene.u[sl] - F32(lung.hilum[0]), scene.v[sl] - F32(lung.hilum[1])
        own = inside(scene.f_lung[i], scene.px)  # (h, w) this lung only
        haze = bump((du * du + dv * dv) / (reach * reach)) * own
        haze *= F32(0.8) + F32(0.3) * smooth_noise(rng, du.shape, 0.06 / scene.px)
        scene.air[sl] *= 1 - amount * haze
        scene.vessels[sl] *= 1 + F32(0.4) * own


def emphysema(scene: Scene, rng: np.random.Generator) -> None:
    """Hyperlucent lungs whose peripheral markings are pruned (the big lungs and flat domes
    come from `reshape`)."""
    for i, lung in enumerate(scene.lungs):
        sl = scene.windows[i]
        own = inside(scene.f_lung[i], scene.px)  # (h, w) this lung only
        periphery = np.clip(1 + scene.f_lung[i] / F32(0.15), 0, 1) * own  # 1 at the wall, 0 deeper
        scene.air[sl] *= 1 + F32(rng.uniform(0.12, 0.22)) * own
        scene.vessels[sl] *= 1 - F32(0.7) * periphery


def fibrosis(scene: Scene, rng: np.random.Generator) -> None:
    """Reticular (net-like) lines at both bases: the zero crossings of a smooth random field."""
    for i, lung in enumerate(scene.lungs):
        sl = scene.windows[i]
        v = scene.v[sl]
        base = np.clip((v - F32(lung.mid_v)) / F32(lung.base_v - lung.mid_v), 0, 1)  # (h, w)
        n = smooth_noise(rng, v.shape, rng.uniform(0.025, 0.035) / scene.px)
        net = bump((n / F32(0.35)) ** 2) * base * inside(scene.f_lung[i], scene.px)
        scene.dens[sl] += F32(rng.uniform(0.16, 0.24)) * net
        scene.air[sl] *= 1 - F32(0.25) * base * inside(scene.f_lung[i], scene.px)


def pleural_thickening(scene: Scene, rng: np.random.Generator) -> None:
    """A bright rim along the lateral chest wall or the apex (apical cap)."""
    for i in (range(len(scene.lungs)) if rng.random() < 0.3 else [_pick_lung(scene, rng)]):
        phi0 = -math.pi / 2 if rng.random() < 0.5 else rng.uniform(-0.6, 0.6)
        sl, f, d = _crescent(scene, i, phi0, rng.uniform(0.5, 1.0), rng.uniform(0.02, 0.045))
        rim = inside(f, scene.px) * inside(-f - d, scene.px)
        scene.air[sl] *= 1 - rim
        scene.vessels[sl] *= 1 - rim
        scene.dens[sl] += F32(0.08) * rim


def hernia(scene: Scene, rng: np.random.Generator) -> None:
    """Hiatal hernia: a rounded retrocardiac density, often with an air-fluid level."""
    cu, cv = scene.retrocardiac
    cu, cv, r = cu + rng.uniform(-0.03, 0.03), cv + rng.uniform(-0.03, 0.03), rng.uniform(0.07, 0.11)
    sl = scene.window(cu, cv, r)
    u, v = scene.u[sl] - F32(cu), scene.v[sl] - F32(cv)
    ball = np.sqrt(np.clip(1 - (u * u + v * v) / F32(r * r), 0, 1))  # (h, w)
    scene.dens[sl] += F32(0.25) * ball
    if rng.random() < 0.6:
        gas = (ball > 0) * inside(v + F32(r * rng.uniform(0.1, 0.4)), scene.px)
        scene.dens[sl] -= F32(0.35) * ball * gas


def pneumothorax(scene: Scene, rng: np.random.Generator) -> list[np.ndarray]:
    """Air between the chest wall and the collapsed lung, at the apex and/or lateral wall.

    Inside the region the lung markings vanish and it is more lucent; a thin bright visceral
    pleural line marks the lung edge. Side and position follow the SIIM prior (~60% on the
    image-left lung, mostly apical); ~10% are bilateral (two masks).

    Returns: one (n, n) bool mask per region: exactly the air between wall and pleural line.
    """
    if not scene.frontal:
        return []
    first = 0 if rng.random() < 0.6 else 1
    masks = []
    for i in [first, 1 - first] if rng.random() < 0.1 else [first]:
        where = rng.random()
        phi0 = rng.normal(*(-1.57, 0.3) if where < 0.35 else (-0.9, 0.25) if where < 0.65
                          else (-0.15, 0.3) if where < 0.9 else (0.7, 0.2))  # apex .. base
        depth = math.exp(rng.uniform(math.log(0.012), math.log(0.17)))
        half = rng.uniform(0.6, 1.0) + 6 * depth
        sl, f, d = _crescent(scene, i, phi0, half, depth)
        region = inside(f, scene.px) * inside(-f - d, scene.px)  # (h, w) soft
        line = bump(((f + d) / F32(max(0.005, 0.9 * scene.px))) ** 2) * np.clip(d / F32(0.01), 0, 1)
        scene.vessels[sl] *= 1 - region
        scene.air[sl] += F32(0.05) * region
        scene.dens[sl] += F32(rng.uniform(0.05, 0.09)) * line * (1 - region)
        mask = np.zeros(scene.u.shape, bool)
        mask[sl] = (f < 0) & (f + d > 0)
        if not mask.any():  # thinner than a pixel: keep the pixel nearest the region's core
            core = np.where(d > 0, np.minimum(-f, f + d), -np.inf)
            mask[sl][np.unravel_index(np.argmax(core), core.shape)] = True
        masks.append(mask)
    return masks


def reshape(lungs: list[Lung], heart: Heart, findings, rngs: dict) -> tuple[list[Lung], Heart]:
    """Findings that change the anatomy itself: a big heart, big lungs with flat domes."""
    if "Emphysema" in findings:  # taller lungs (domes pushed down and flattened), narrow heart
        g = rngs["Emphysema"].uniform(1.06, 1.12)
        lungs = [replace(x, b_up=x.b_up * g, a_lat=x.a_lat * 1.03, dome_v=x.dome_v + 0.1 * g,
                         cy=x.cy + 0.1 * g, dome_k=x.dome_k * 0.35) for x in lungs]
        heart = replace(heart, a=heart.a * 0.88, cv=heart.cv + 0.08)
    if "Cardiomegaly" in findings:  # cardiothoracic ratio 0.53-0.66 (> 0.5 is the textbook sign)
        c, s = math.cos(heart.angle), abs(math.sin(heart.angle))
        e = math.hypot(heart.a * c, heart.b * s)  # horizontal half-extent of the tilted ellipse
        target = rngs["Cardiomegaly"].uniform(0.53, 0.66) * (lungs[0].cx + lungs[0].a_lat)
        b = heart.b * (1 + 0.4 * max(target / e - 1, 0))
        a = math.sqrt(max(target ** 2 - (b * s) ** 2, 1e-4)) / c
        heart = replace(heart, a=a, b=b, cu=heart.cu + (target - e) * 0.4, cv=heart.cv - (b - heart.b) * 0.5)
    return lungs, heart


RENDERERS: dict[str, Callable[[Scene, np.random.Generator], None]] = {
    "Atelectasis": atelectasis,
    "Cardiomegaly": lambda scene, rng: None,  # all in `reshape`
    "Effusion": effusion,
    "Infiltration": infiltration,
    "Mass": mass,
    "Nodule": nodule,
    "Pneumonia": pneumonia,
    "Consolidation": consolidation,
    "Edema": edema,
    "Emphysema": emphysema,
    "Fibrosis": fibrosis,
    "Pleural_Thickening": pleural_thickening,
    "Hernia": hernia,
}
