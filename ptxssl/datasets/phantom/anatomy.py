"""Normal anatomy of one view, drawn as density fields: body, ribs, lungs, heart, mediastinum.

`_frontal` and `_lateral` compose a patient's anatomy into a `Scene` plus tissue and bone
density; findings that change the anatomy itself (`reshape`) are applied to the shapes here,
the others are drawn onto the scene afterwards.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ptxssl.datasets.phantom.findings import reshape
from ptxssl.datasets.phantom.patient import Patient
from ptxssl.datasets.phantom.raster import F32, _rows, _window, bump, inside
from ptxssl.datasets.phantom.scene import Heart, Lung, Scene
from ptxssl.datasets.phantom.vessels import _vessels


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
    post, ant = _tube(t * F32(4.2) - 1), bump((t * F32(5) - 1) ** 2)
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
    edge = bump(((w - F32(tw + 0.02)) * F32(45)) ** 2) * np.clip((v + F32(0.7)) * F32(8), 0, 1)
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
        lungs.append(Lung(side, cx, cy, a_lat, 0.46 * lw, cy + 0.74 * lh, 0.32, 0.13 if side < 0 else 0.11,
                             0.0 if side < 0 else 0.07, dome, 0.38 * lw, 1.3, 0.25,
                             (side * 0.18, -0.1 if side < 0 else -0.13)))
    tw = cx + a_lat
    width = p.ctr * 2 * tw  # heart width
    ang, ratio = 0.65, 0.68
    a = width / 2 / math.sqrt(math.cos(ang) ** 2 + (ratio * math.sin(ang)) ** 2)  # tilted ellipse
    heart = Heart(0.17 * width, lungs[1].dome_v - 0.08, a, ratio * a, ang)
    lungs, heart = reshape(lungs, heart, findings, rngs)

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
        fl = np.maximum(fw, L.medial + L.knob * bump(((vv + F32(0.36)) * F32(10)) ** 2) - L.side * uu)
        m = inside(fl, px)
        depth = F32(0.45) + F32(0.4) * np.sqrt(np.clip(-fw * F32(10), 0, 1))  # thinner at the edges
        lung[sl] += m
        air[sl] += m * depth * tissue[sl]
        f_lung.append(fl), f_wall.append(fw), windows.append(sl)
    e = math.hypot(heart.a, heart.b)  # the heart hides most of the lung behind it
    sl = _window(frame, n, heart.cu - e, heart.cu + e, heart.cv - e, heart.cv + e)
    behind = 1 - F32(0.92) * inside(heart.sdf(u[sl], v[sl]), px)
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
        air[sl] += F32(0.3) * inside(r2 - 1, px / r) * inside(v[sl] - F32(bv + 0.2 * r), px) * tissue[sl]

    both = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(*windows))
    vessels = _vessels(p, lungs, frame, n, px, both, "frontal")
    scene = Scene(u, v, px, frame, True, lungs, heart, (heart.cu - 0.05, heart.cv - 0.1 * heart.b), windows,
                     f_lung, f_wall, lung, air, vessels, np.zeros((n, n), F32))
    return scene, tissue, bone


def _lateral(p: Patient, findings, rngs, u, v, px: float, frame):
    """Lateral anatomy (patient facing image left) -> (scene, tissue (n, n), bone (n, n))."""
    n = u.shape[0]
    dome = p.dome + 0.03
    L = Lung(1, 0.0, dome + 0.02, 0.7 * p.lung_width, 0.68 * p.lung_width, dome + 0.02 + 0.74 * p.lung_height,
                0.35, -10.0, 0.0, dome, -0.15, 0.45, 0.45, (0.08, -0.12))
    heart = Heart(-0.33, dome - 0.04, 0.38 * p.ctr / 0.43, 0.3, -0.6)
    (L,), heart = reshape([L], heart, findings, rngs)

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
        bone += F32(0.18) * bump(((u + F32(0.78) - F32(0.05) * v) * F32(30)) ** 2) \
            * np.clip((F32(0.35) - v) * 4, 0, 1) * np.clip((v + F32(0.65)) * 8, 0, 1)  # sternum
        pr = (v - F32(0.6) * u) * F32(1 / p.rib_spacing)
        bone += F32(0.06) * _tube((pr - np.floor(pr)) * 4 - 1) * np.clip((u - F32(0.1)) * 4, 0, 1) \
            * np.clip((F32(0.85) - u) * 8, 0, 1)
        bone *= np.clip(body * 4, 0, 1)
        behind = np.sqrt(inside(heart.sdf(u, v) + F32(0.005), 0.12))  # heart overlaps the lung
        m = inside(L.sdf(u, v, wall=True), px) * (1 - F32(0.75) * behind)
        t = np.clip((v + F32(0.9)) * F32(1.4), 0, 1)  # trachea, oblique towards the back
        trach = np.clip(1 - ((u - F32(0.1) * t) * F32(25)) ** 2, 0, 1) * np.clip((F32(-0.2) - v) * 20, 0, 1)
        air = (F32(0.7) * m + F32(0.2) * trach) * tissue
        if p.bubble:
            r2 = ((u + F32(0.3)) * F32(1 / p.bubble)) ** 2 + ((v - F32(dome + 0.15)) * F32(1 / (0.6 * p.bubble))) ** 2
            air += F32(0.25) * inside(r2 - 1, px / p.bubble) * tissue
        return tissue, bone, m, air

    tissue, bone, m, air = _rows(anatomy, u, v)
    fw = L.sdf(u, v, wall=True)  # (n, n)
    full = (slice(0, n), slice(0, n))
    vessels = _vessels(p, [L], frame, n, px, full, "lateral")
    scene = Scene(u, v, px, frame, False, [L], heart, (0.12, dome - 0.06), [full], [fw], [fw], m, air,
                     vessels, np.zeros((n, n), F32))
    return scene, tissue, bone
