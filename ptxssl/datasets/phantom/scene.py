"""The scene: what the anatomy hands to the findings.

`Lung` and `Heart` are implicit shapes in anatomical coordinates (u right, v down, the rib
cage spanning u in ~[-0.8, 0.8]); a `Scene` holds them with the pixel grid and the density
layers that finding renderers edit in place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptxssl.datasets.phantom.raster import F32, bump

VIEWS = ("frontal", "lateral")  # the projections a scene is built for


@dataclass(frozen=True)
class Lung:
    """One lung field as an implicit shape in anatomical coordinates (u right, v down, ~[-1, 1]).

    `side` is -1 for the image-left lung (the patient's right) and +1 for the image-right one;
    w = side * u is the distance from the midline, so both lungs share one formula. The shape
    is four ellipse quadrants around (cx, cy) (rounded apex, convex lateral wall), cut by a flat
    medial border and by the diaphragm dome v = dome_v + dome_k (w - dome_w)^2; where the
    lateral wall meets the dome it leaves a sharp costophrenic angle.
    """

    side: int
    cx: float
    cy: float
    a_lat: float
    a_med: float
    b_up: float
    b_down: float
    medial: float   # w of the medial (mediastinal) border; very negative = none (lateral view)
    knob: float     # aortic-knob bulge of the medial border
    dome_v: float
    dome_w: float
    dome_k: float   # curvature lateral to the dome's top (deep costophrenic recess)
    dome_km: float  # curvature medial to it (shallow cardiophrenic side)
    hilum: tuple[float, float]  # (u, v)

    def sdf(self, u, v, wall: bool = False):
        """Approximate signed distance to the lung edge, negative inside. `wall=True` ignores
        the medial border: the distance to the chest wall and diaphragm (pleural space)."""
        w = self.side * u
        dx, dy = w - self.cx, v - self.cy
        # quadrant-wise semi-axes, without np.where: x / a = max(x, 0) / a_lat + min(x, 0) / a_med
        nx = np.maximum(dx, 0) * F32(1 / self.a_lat) + np.minimum(dx, 0) * F32(1 / self.a_med)
        ny = np.maximum(dy, 0) * F32(1 / self.b_down) + np.minimum(dy, 0) * F32(1 / self.b_up)
        gx = np.maximum(dx, 0) * F32(self.a_lat ** -2) + np.minimum(dx, 0) * F32(self.a_med ** -2)
        gy = np.maximum(dy, 0) * F32(self.b_down ** -2) + np.minimum(dy, 0) * F32(self.b_up ** -2)
        r = np.sqrt(nx * nx + ny * ny)
        f = (r - 1) * r / (np.sqrt(gx * gx + gy * gy) + F32(1e-6))  # (r - 1) / |grad r|
        t = w - self.dome_w
        k = np.maximum(t, 0) * F32(self.dome_k) + np.minimum(t, 0) * F32(self.dome_km)  # k * t
        f = np.maximum(f, (v - self.dome_v - k * t) / np.sqrt(1 + 4 * k * k))
        if not wall:
            f = np.maximum(f, self.medial + self.knob * bump(((v + F32(0.36)) * F32(10)) ** 2) - w)
        return f

    @property
    def base_v(self) -> float:
        """v of the costophrenic angle (where the lateral wall meets the dome)."""
        return self.dome_v + self.dome_k * (self.cx + 0.9 * self.a_lat - self.dome_w) ** 2

    @property
    def mid_v(self) -> float:
        """v halfway between apex and costophrenic angle: the centre for angles around the lung."""
        return 0.5 * (self.cy - self.b_up + self.base_v)


@dataclass(frozen=True)
class Heart:
    """The cardiac silhouette: an ellipse centred at (cu, cv), long axis tilted by `angle`."""

    cu: float
    cv: float
    a: float
    b: float
    angle: float  # radians

    def sdf(self, u, v):
        c, s = math.cos(self.angle), math.sin(self.angle)
        du, dv = u - self.cu, v - self.cv
        p, q = (c * du + s * dv) / self.a, (c * dv - s * du) / self.b
        r = np.sqrt(p * p + q * q)
        return (r - 1) * r / (np.sqrt((p / self.a) ** 2 + (q / self.b) ** 2) + F32(1e-6))


@dataclass
class Scene:
    """Everything a finding renderer needs; the (n, n) layers are edited in place."""

    u: np.ndarray            # (n, n) anatomical coordinates of the pixel centres
    v: np.ndarray            # (n, n)
    px: float                # pixel size in anatomical units (sets edge softness)
    frame: tuple[float, float, float, float]  # (shift_x, shift_y, scale, rotation rad): anatomy -> image
    frontal: bool
    lungs: list[Lung]
    heart: Heart
    retrocardiac: tuple[float, float]  # (u, v) where a hiatal hernia sits
    windows: list[tuple[slice, slice]]  # per lung: the pixel box that holds it
    f_lung: list[np.ndarray]  # per lung: signed distance to its edge over its window
    f_wall: list[np.ndarray]  # per lung: distance to the chest wall/diaphragm over its window
    lung: np.ndarray          # (n, n) soft mask of lung tissue (both lungs, heart removed)
    air: np.ndarray           # (n, n) air thickness, subtracted from the density
    vessels: np.ndarray       # (n, n) vessel markings, added to the density
    dens: np.ndarray          # (n, n) extra density (opacities, pleural lines)

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        """(row, col) of an anatomical point."""
        sx, sy, scale, rot = self.frame
        n = self.u.shape[0]
        x = sx + scale * (math.cos(rot) * u - math.sin(rot) * v)
        y = sy + scale * (math.sin(rot) * u + math.cos(rot) * v)
        return (y + 1) * n / 2 - 0.5, (x + 1) * n / 2 - 0.5

    def window(self, u: float, v: float, r: float) -> tuple[slice, slice]:
        """Pixel box around the anatomical disc (u, v, r): local findings are drawn only there."""
        row, col = self.to_pixel(u, v)
        half = r / self.px * 1.1 + 2
        n = self.u.shape[0]
        return (slice(int(max(row - half, 0)), int(min(row + half + 1, n))),
                slice(int(max(col - half, 0)), int(min(col + half + 1, n))))
