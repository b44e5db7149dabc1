"""Procedural chest X-ray phantoms: the default data when no real images are at hand.

A phantom is a projection: soft-tissue thickness minus lung air plus bone, vessel markings
and findings, turned into brightness by an exponential (film-like) response, then blurred
and given quantum noise. Everything is a vectorised field drawn in anatomical coordinates
(u right, v down, the rib cage spanning u in ~[-0.8, 0.8]) that a per-image shift, scale and
rotation maps onto the pixel grid, so one `Patient` gives consistent follow-up images.
Findings live in `findings.py`. Images are as displayed (MONOCHROME2, bright = dense), PA
convention: the patient's right is on the image left.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from ptxssl.datasets import findings as fx
from ptxssl.datasets.labels import NIH_FINDINGS

F32 = np.float32
VIEWS = ("frontal", "lateral")
PREVALENCE = MappingProxyType({  # per-image probability of each finding, drawn independently
    "Atelectasis": 0.12, "Cardiomegaly": 0.08, "Effusion": 0.14, "Infiltration": 0.18, "Mass": 0.07,
    "Nodule": 0.08, "Pneumonia": 0.05, "Consolidation": 0.07, "Edema": 0.06, "Emphysema": 0.06,
    "Fibrosis": 0.05, "Pleural_Thickening": 0.06, "Hernia": 0.05,
})
MIN_RENDER = 128  # smaller images are rendered at a multiple of their size and averaged down
BAND = 1 << 14    # pixels per band of the big pointwise passes (see `_rows`)
LEVELS, DMAX = 4096, 3.0  # film lookup table: density 0..DMAX in LEVELS steps


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy and acquisition habits: what stays the same across one patient's
    follow-up images (each image then adds a small jitter of position and exposure)."""

    seed: int             # the vessel tree: identical markings on every follow-up
    female: bool          # breast shadows over the lung bases
    scale: float          # thorax size in the frame
    shift: tuple[float, float]  # (x, y) thorax offset in the frame, image units
    rotation: float       # degrees, in-plane
    lung_width: float     # ~1
    lung_height: float    # ~1
    ctr: float            # cardiothoracic ratio (heart width / thorax width)
    dome: float           # v of the right (image-left) dome, the higher one
    dome_gap: float       # how much lower the left dome sits
    rib_spacing: float
    soft_tissue: float    # habitus: chest-wall thickness and density
    bubble: float         # gastric air bubble radius (0 = none)
    penetration: float    # attenuation -> brightness contrast (kVp-ish)
    gamma: float
    noise: float          # quantum-noise std at mid grey
    blur: float           # focal spot / detector blur, anatomical units


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw a plausible adult patient."""
    u = rng.uniform
    female = bool(rng.random() < 0.5)
    return Patient(
        seed=int(rng.integers(2**31)), female=female, scale=u(0.86, 1.0),
        shift=(u(-0.04, 0.04), u(-0.01, 0.08)), rotation=float(np.clip(rng.normal(0, 2), -5, 5)),
        lung_width=u(0.93, 1.05), lung_height=u(0.92, 1.06), ctr=u(0.38, 0.47),
        dome=u(0.2, 0.32), dome_gap=u(0.02, 0.07), rib_spacing=u(0.105, 0.125),
        soft_tissue=u(0.85, 1.15) + 0.1 * female, bubble=0.0 if rng.random() < 0.3 else u(0.03, 0.07),
        penetration=u(1.5, 2.1), gamma=u(0.8, 1.2), noise=u(0.006, 0.02), blur=u(0.002, 0.006),
    )


def sample_findings(rng: np.random.Generator, pneumothorax: bool) -> frozenset[str]:
    """Independent findings with plausible prevalences (~5-20% each; often none = 'No Finding').
    'Pneumothorax' is in the set iff `pneumothorax`: the caller sets the positive fraction."""
    draw = rng.random(len(PREVALENCE)) < np.array(list(PREVALENCE.values()))
    return frozenset([k for k, hit in zip(PREVALENCE, draw) if hit] + ["Pneumothorax"] * bool(pneumothorax))


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
            masks = fx.pneumothorax(scene, rngs[name])
        elif name in findings:
            fx.RENDERERS[name](scene, rngs[name])

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


def _tube(z: np.ndarray, cortex: float = 0.75) -> np.ndarray:
    """Projected thickness across a hollow bone (z in [-1, 1]): bright cortical edges."""
    z2 = z * z
    outer = np.sqrt(np.clip(1 - z2, 0, 1))
    return F32(1.5) * outer - np.sqrt(np.clip(F32(cortex * cortex) - z2, 0, 1))


def _body(u, v, wt: float, soft: float) -> np.ndarray:
    """Soft-tissue thickness: trunk, neck sloping to the shoulders, arms beside the chest."""
    au = np.abs(u)
    x2 = (au * F32(1 / wt)) ** 2
    neck = np.clip(1 - au * F32(2), 0, 1)
    top = F32(-0.86) - F32(0.5) * neck * neck + F32(0.22) * x2 * x2  # trapezius slope
    da = (au - F32(wt + 0.1)) * F32(1 / 0.15)
    arm = np.sqrt(np.clip(F32(0.72) - F32(0.72) * da * da, 0, 1))  # 0.85 at the arm's axis
    return np.maximum(np.clip(1 - x2, 0, 1), arm) * np.clip((v - top) * F32(15 * soft), 0, F32(soft))


@functools.lru_cache(maxsize=1)
def _rib_profiles() -> tuple[np.ndarray, np.ndarray]:
    """(256,) brightness across one rib period, posterior and anterior ribs: lookup tables
    indexed by the fractional rib index (a gather is cheaper than the profile formula)."""
    t = (np.arange(256, dtype=F32) + F32(0.5)) / F32(256)
    post, ant = _tube(t * F32(4.2) - 1), fx.bump((t * F32(5) - 1) ** 2)
    post.flags.writeable = ant.flags.writeable = False
    return post, ant


def _ribs(u, v, sp: float, tw: float, dome: float) -> np.ndarray:
    """Posterior ribs (arches falling laterally), fainter anterior ribs (falling medially) and
    the rib cage's lateral edge."""
    post_lut, ant_lut = _rib_profiles()
    w = np.abs(u)
    upper = np.clip((F32(-0.25) - v) * F32(2.5), 0, 1)  # upper ribs arch more tightly
    d = w - F32(0.2)
    phi = (v - (F32(1.2) + upper) * d * d + F32(0.9)) * F32(1 / sp)
    phi -= F32(0.025) * phi * phi  # rib index; spacing widens downward
    # (phi * 256) & 255 is the fraction of a rib period (two's complement keeps it right below 0)
    post = post_lut[(phi * F32(256)).astype(np.intp) & 255] * np.clip(np.minimum(phi, F32(10.5) - phi), 0, 1)
    d = F32(tw) - w
    pa = (v - F32(0.55) * d * d + F32(0.62)) * F32(1 / (sp * 1.35))
    ant = ant_lut[(pa * F32(256)).astype(np.intp) & 255] * np.clip(np.minimum(pa, F32(6.5) - pa), 0, 1)
    ant *= np.clip((w - F32(0.3)) * F32(12), 0, 1)  # costal cartilage medially: not seen
    edge = fx.bump(((w - F32(tw + 0.02)) * F32(45)) ** 2) * np.clip((v + F32(0.7)) * F32(8), 0, 1)
    inner = np.clip((F32(tw + 0.035) - w) * F32(40), 0, 1) * np.clip((w - F32(0.05)) * F32(25), 0, 1)
    below = np.clip((v - F32(dome)) * F32(5), 0, F32(0.7))  # lower ribs fade behind the liver
    return ((F32(0.075) * post + F32(0.04) * ant) * inner + F32(0.05) * edge) * (1 - below)


def _frontal(p: Patient, findings, rngs, u, v, px: float, frame):
    """PA anatomy -> (scene, tissue density (n, n), bone density (n, n))."""
    n = u.shape[0]
    lw, lh = p.lung_width, p.lung_height
    cx, a_lat = 0.42 * lw, 0.36 * lw
    lungs = []
    for side in (-1, 1):
        dome = p.dome + (0 if side < 0 else p.dome_gap)
        cy = dome + 0.1
        lungs.append(fx.Lung(side, cx, cy, a_lat, 0.46 * lw, cy + 0.74 * lh, 0.32, 0.13 if side < 0 else 0.11,
                             0.0 if side < 0 else 0.07, dome, 0.38 * lw, 1.3, 0.25,
                             (side * 0.18, -0.1 if side < 0 else -0.13)))
    tw = cx + a_lat
    width = p.ctr * 2 * tw  # heart width
    ang, ratio = 0.65, 0.68
    a = width / 2 / math.sqrt(math.cos(ang) ** 2 + (ratio * math.sin(ang)) ** 2)  # tilted ellipse
    heart = fx.Heart(0.17 * width, lungs[1].dome_v - 0.08, a, ratio * a, ang)
    lungs, heart = fx.reshape(lungs, heart, findings, rngs)

    wt = tw + 0.05 + 0.07 * p.soft_tissue  # skin line
    tissue = _rows(lambda uu, vv: _body(uu, vv, wt, p.soft_tissue), u, v)
    bone = np.zeros((n, n), F32)
    sl = _window(frame, n, -tw - 0.06, tw + 0.06, -1.0, 0.65)
    bone[sl] = _rows(lambda uu, vv: _ribs(uu, vv, p.rib_spacing, tw, p.dome), u[sl], v[sl])

    # lungs: air replaces tissue; a little less at the apices and the periphery
    f_lung, f_wall, windows = [], [], []
    lung, air = np.zeros((n, n), F32), np.zeros((n, n), F32)
    for L in lungs:
        lo_u, hi_u = sorted((L.side * (L.medial - 0.02), L.side * (L.cx + L.a_lat + 0.03)))
        sl = _window(frame, n, lo_u, hi_u, L.cy - L.b_up - 0.03, L.base_v + 0.05)
        uu, vv = u[sl], v[sl]
        fw = L.sdf(uu, vv, wall=True)
        fl = np.maximum(fw, L.medial + L.knob * fx.bump(((vv + F32(0.36)) * F32(10)) ** 2) - L.side * uu)
        m = fx.inside(fl, px)
        depth = F32(0.45) + F32(0.4) * np.sqrt(np.clip(-fw * F32(10), 0, 1))  # thinner at the edges
        lung[sl] += m
        air[sl] += m * depth * tissue[sl]
        f_lung.append(fl), f_wall.append(fw), windows.append(sl)
    e = math.hypot(heart.a, heart.b)  # the heart hides most of the lung behind it
    sl = _window(frame, n, heart.cu - e, heart.cu + e, heart.cv - e, heart.cv + e)
    behind = 1 - F32(0.92) * fx.inside(heart.sdf(u[sl], v[sl]), px)
    lung[sl] *= behind
    air[sl] *= behind

    # mediastinum: spine through it, trachea and main bronchi as air columns
    sl = _window(frame, n, -0.16, 0.16, -1.2, 1.2)
    us, vs = u[sl], v[sl]
    ph = (vs + F32(0.9)) * F32(1 / (p.rib_spacing * 0.95))
    disc = np.clip(np.abs(ph - np.floor(ph) - F32(0.5)) * 8 - 3, 0, 1)  # dark disc spaces
    bone[sl] += F32(0.14) * np.sqrt(np.clip(1 - (us * F32(1 / 0.09)) ** 2, 0, 1)) * (1 - F32(0.5) * disc)
    trach = np.clip(1 - (us * F32(1 / 0.045)) ** 2, 0, 1) * np.clip((F32(-0.3) - vs) * F32(20), 0, 1)
    air[sl] += F32(0.22) * trach * tissue[sl]
    sl = _window(frame, n, -0.16, 0.16, -0.34, -0.1)
    us, vs = u[sl], v[sl]
    for side in (-1, 1):  # main bronchi from the carina towards the hila
        hu, hv = lungs[(side + 1) // 2].hilum
        du, dv = 0.6 * abs(hu), 0.6 * (hv + 0.3)
        t = np.clip((us * side * du + (vs + F32(0.3)) * dv) * F32(1 / (du * du + dv * dv)), 0, 1)
        d2 = (us * side - t * F32(du)) ** 2 + (vs + F32(0.3) - t * F32(dv)) ** 2
        air[sl] += F32(0.14) * np.clip(1 - d2 * F32(1 / 0.02 ** 2), 0, 1) * tissue[sl]

    # clavicles, humeral heads, breasts, gastric bubble
    sl = _window(frame, n, -0.8, 0.8, -0.95, -0.5)
    w, vc = np.abs(u[sl]), v[sl]
    d = w - F32(0.4)
    cl = F32(-0.7) - F32(0.2) * d + F32(0.3) * d * d * d  # S-shaped, rising to the acromion
    bone[sl] += F32(0.2) * _tube((vc - cl) * F32(1 / 0.032)) * np.clip((w - F32(0.07)) * F32(30), 0, 1) \
        * np.clip((F32(0.75) - w) * F32(25), 0, 1)
    for side in (-1, 1):
        hu = side * (wt + 0.08)
        sl = _window(frame, n, hu - 0.12, hu + 0.12, -0.57, -0.33)
        r2 = ((u[sl] - F32(hu)) ** 2 + (v[sl] + F32(0.45)) ** 2) * F32(1 / 0.11 ** 2)
        bone[sl] += F32(0.2) * _tube(np.sqrt(r2), 0.85) * np.clip(tissue[sl] * 4, 0, 1)  # humeral head
        if p.female:
            bu, bv = side * (cx + 0.1), lungs[(side + 1) // 2].dome_v + 0.06
            sl = _window(frame, n, bu - 0.34, bu + 0.34, bv - 0.25, bv + 0.25)
            r2 = ((u[sl] - F32(bu)) * F32(1 / 0.34)) ** 2 + ((v[sl] - F32(bv)) * F32(1 / 0.23)) ** 2
            tissue[sl] += F32(0.15) * np.sqrt(np.clip(1 - r2, 0, 1)) * np.clip((v[sl] - F32(bv - 0.2)) * 4, 0, 1)
    if p.bubble:
        bu, bv, r = cx * 0.85, lungs[1].dome_v + 0.05 + p.bubble * 0.6, p.bubble
        sl = _window(frame, n, bu - r, bu + r, bv - r, bv + r)
        r2 = ((u[sl] - F32(bu)) * F32(1 / r)) ** 2 + ((v[sl] - F32(bv)) * F32(1 / (0.6 * r))) ** 2
        air[sl] += F32(0.3) * fx.inside(r2 - 1, px / r) * fx.inside(v[sl] - F32(bv + 0.2 * r), px) * tissue[sl]

    both = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(*windows))
    vessels = _vessels(p, lungs, frame, n, px, both, "frontal")
    scene = fx.Scene(u, v, px, frame, True, lungs, heart, (heart.cu - 0.05, heart.cv - 0.1 * heart.b), windows,
                     f_lung, f_wall, lung, air, vessels, np.zeros((n, n), F32))
    return scene, tissue, bone


def _lateral(p: Patient, findings, rngs, u, v, px: float, frame):
    """Lateral anatomy (patient facing image left) -> (scene, tissue (n, n), bone (n, n))."""
    n = u.shape[0]
    dome = p.dome + 0.03
    L = fx.Lung(1, 0.0, dome + 0.02, 0.7 * p.lung_width, 0.68 * p.lung_width, dome + 0.02 + 0.74 * p.lung_height,
                0.35, -10.0, 0.0, dome, -0.15, 0.45, 0.45, (0.08, -0.12))
    heart = fx.Heart(-0.33, dome - 0.04, 0.38 * p.ctr / 0.43, 0.3, -0.6)
    (L,), heart = fx.reshape([L], heart, findings, rngs)

    def anatomy(u, v):  # -> (tissue, bone, lung mask, air)
        top = F32(-0.8) + F32(0.15) * (u * F32(1 / 0.92)) ** 2  # shoulders; the neck rises above
        neck = np.sqrt(np.clip(1 - ((u - F32(0.12)) * F32(1 / 0.42)) ** 2, 0, 1))
        skin = np.clip((v - top) * 5, 0, 1)  # shoulders and raised arms blur the upper outline
        body = np.sqrt(np.clip(1 - (u * F32(1 / 0.92)) ** 2, 0, 1)) * np.maximum(skin, F32(0.85) * neck)
        arms = np.clip(1 - ((u + F32(0.35)) * F32(1 / 0.4)) ** 2 - ((v + F32(0.6)) * F32(1 / 0.3)) ** 2, 0, 1)
        tissue = F32(1.25 * p.soft_tissue) * (body + F32(0.25) * arms * skin)  # arms raised in front
        ph = (v + F32(0.9)) * F32(1 / (p.rib_spacing * 0.95))
        disc = np.clip(np.abs(ph - np.floor(ph) - F32(0.5)) * 8 - 3, 0, 1)
        spine = F32(0.6) + F32(0.06) * v * v  # slight kyphosis
        bone = F32(0.22) * np.clip(1 - ((u - spine) * F32(1 / 0.09)) ** 4, 0, 1) * (1 - F32(0.7) * disc)
        bone += F32(0.18) * fx.bump(((u + F32(0.78) - F32(0.05) * v) * F32(30)) ** 2) \
            * np.clip((F32(0.35) - v) * 4, 0, 1) * np.clip((v + F32(0.65)) * 8, 0, 1)  # sternum
        pr = (v - F32(0.6) * u) * F32(1 / p.rib_spacing)
        bone += F32(0.06) * _tube((pr - np.floor(pr)) * 4 - 1) * np.clip((u - F32(0.1)) * 4, 0, 1) \
            * np.clip((F32(0.85) - u) * 8, 0, 1)
        bone *= np.clip(body * 4, 0, 1)
        behind = np.sqrt(fx.inside(heart.sdf(u, v) + F32(0.005), 0.12))  # heart overlaps the lung
        m = fx.inside(L.sdf(u, v, wall=True), px) * (1 - F32(0.75) * behind)
        t = np.clip((v + F32(0.9)) * F32(1.4), 0, 1)  # trachea, oblique towards the back
        trach = np.clip(1 - ((u - F32(0.1) * t) * F32(25)) ** 2, 0, 1) * np.clip((F32(-0.2) - v) * 20, 0, 1)
        air = (F32(0.7) * m + F32(0.2) * trach) * tissue
        if p.bubble:
            r2 = ((u + F32(0.3)) * F32(1 / p.bubble)) ** 2 + ((v - F32(dome + 0.15)) * F32(1 / (0.6 * p.bubble))) ** 2
            air += F32(0.25) * fx.inside(r2 - 1, px / p.bubble) * tissue
        return tissue, bone, m, air

    tissue, bone, m, air = _rows(anatomy, u, v)
    fw = L.sdf(u, v, wall=True)  # (n, n)
    full = (slice(0, n), slice(0, n))
    vessels = _vessels(p, [L], frame, n, px, full, "lateral")
    scene = fx.Scene(u, v, px, frame, False, [L], heart, (0.12, dome - 0.06), [full], [fw], [fw], m, air,
                     vessels, np.zeros((n, n), F32))
    return scene, tissue, bone


# lungs in which the vessel templates grow (an average patient's image-right lung, and the lateral one)
_CANON = {"frontal": fx.Lung(1, 0.42, 0.4, 0.36, 0.46, 1.14, 0.32, 0.11, 0.0, 0.3, 0.38, 1.3, 0.25, (0.18, -0.13)),
          "lateral": fx.Lung(1, 0.0, 0.35, 0.7, 0.68, 1.09, 0.35, -10.0, 0.0, 0.33, -0.15, 0.45, 0.45, (0.08, -0.12))}
TEMPLATES = 16  # vessel trees per view; a patient's seed picks one per lung


def _height(lung: fx.Lung) -> float:
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


def _vessels(p: Patient, lungs: list[fx.Lung], frame, n: int, px: float, sl, view: str) -> np.ndarray:
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
