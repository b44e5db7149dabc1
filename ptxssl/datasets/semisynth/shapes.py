"""Where a pneumothorax goes: a real SIIM mask shape, or a procedural rim along a lung field.

Real shapes come from the positive rows of a SIIM `train-rle.csv` (3,576 rows over 2,669
images in the full file; several rows of one image are merged, as `prepare` does). A SIIM
mask lives in a 1024 x 1024 film of a whole chest, so it is stretched to the background's
frame (a lung position maps to a lung position), then flipped, scaled and shifted a little
so the same shape does not always fall on the same pixels. Either kind of shape is kept
only if most of it lies over the background's estimated lung fields.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptxssl.datasets.images import resize
from ptxssl.datasets.rle import merge_siim
from ptxssl.datasets.siim import group_rles, read_siim_csv
from ptxssl.errors import UserError

SIIM_SIDE = 1024  # SIIM-ACR films and their RLE strings are 1024 x 1024
MAX_SHIFT, SCALES = 0.04, (0.9, 1.1)  # jitter of a real shape: shift (of the frame), scale


@functools.lru_cache(maxsize=4)
def load_shapes(csv: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The positive images of a SIIM label file as (image_id, RLE rows), sorted by id.

    Cached per path, so forked workers share the parsed file.
    """
    rles, _ = group_rles(read_siim_csv(Path(csv)))
    shapes = tuple((i, r) for i, r in rles.items() if r)
    if not shapes:
        raise UserError(f"--masks {csv}: no positive rows (every EncodedPixels is -1); "
                        "pass SIIM's train-rle.csv")
    return shapes


def real_shape(image_id: str, rles: tuple[str, ...], height: int, width: int,
               rng: np.random.Generator) -> np.ndarray:
    """One SIIM mask (rows merged) in a (height, width) frame, jittered. (H, W) bool."""
    mask = merge_siim(rles, SIIM_SIDE, SIIM_SIDE, image_id)
    mask = resize(mask.astype(np.float32), height, width) >= 0.5
    if rng.random() < 0.5:
        mask = mask[:, ::-1]
    scale = rng.uniform(*SCALES)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * (height, width)
    centre = np.array(ndimage.center_of_mass(mask)) if mask.any() else np.array([height, width]) / 2
    # output pixel p samples input centre + (p - centre - shift) / scale
    offset = centre - (centre + shift) / scale
    return ndimage.affine_transform(mask.astype(np.uint8), np.full(2, 1 / scale), offset=offset,
                                    order=0, output_shape=(height, width)).astype(bool)


def procedural_shape(lungs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rim of one lung field along its apex and lateral wall, where pneumothorax gathers
    on an upright film: depth 2-7 % of the width, an arc of 50-120 degrees. (H, W) bool."""
    labels, n = ndimage.label(lungs)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    two = np.argsort(sizes)[::-1][:2]
    side = two[0] if rng.random() < 0.5 else two[-1]
    lung = labels == side
    cy, cx = ndimage.center_of_mass(lung)
    yy, xx = np.mgrid[:lungs.shape[0], :lungs.shape[1]]
    lateral = -1.0 if cx < lungs.shape[1] / 2 else 1.0  # the chest wall is away from the middle
    angle = np.arctan2(-(yy - cy), lateral * (xx - cx))  # 0 = lateral, pi/2 = apex
    centre, half = rng.uniform(0.0, math.pi / 2), rng.uniform(math.radians(25), math.radians(60))
    arc = np.abs(np.angle(np.exp(1j * (angle - centre)))) < half
    depth = rng.uniform(0.02, 0.07) * lungs.shape[1]
    return lung & arc & (ndimage.distance_transform_edt(lung) < depth)


def inside_share(mask: np.ndarray, lungs: np.ndarray) -> float:
    """Share of the mask's pixels over the lung fields (0 for an empty mask)."""
    area = int(mask.sum())
    return float((mask & lungs).sum() / area) if area else 0.0
