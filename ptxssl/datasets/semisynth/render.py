"""Render a pneumothorax into a real radiograph, inside a given mask.

What a pneumothorax looks like on a frontal film: air between the chest wall and the
collapsed lung. Inside that space the lung markings (vessels) vanish and the film is more
lucent (darker in MONOCHROME2), while the ribs and the chest wall, which lie outside the
lung, stay visible; the edge of the collapsed lung shows as a thin bright visceral pleural
line. The approximation here, on an image in [0, 1] (bright = dense):

- split the image into coarse and fine scales with a Gaussian (sigma `texture_sigma` px at
  1024 px: vessels are finer, ribs coarser) and keep only (1 - texture_loss) of the fine
  scale inside the mask;
- multiply by (1 - darken) inside the mask;
- add `line` along the mask's medial edge (the side facing the lung, found as edge pixels
  with mask lateral to or above them), `line_width` px wide at 1024 px; thinner than a
  pixel at low resolution, it is drawn one pixel wide at a proportionally lower brightness;
- blend every change over the mask edge with a Gaussian of `edge_sigma` px at 1024 px.

Limits: no change in the collapsed lung itself (real ones get denser), no mediastinal
shift or deep sulcus sign, and the fine/coarse split also removes fine texture of
overlying lines and tubes inside the mask. Defaults were chosen by eye on the contact sheet
(`scripts/semisynth_sheet.py`): visible when one knows where to look, not at a glance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

REFERENCE_SIDE = 1024  # style lengths are given in pixels of a 1024-px film


@dataclass(frozen=True)
class Style:
    """Strength of the rendered signs (see the module docstring)."""

    texture_loss: float = 0.9  # share of fine-scale texture removed inside the mask
    darken: float = 0.08  # relative intensity drop inside the mask
    line: float = 0.10  # brightness added on the visceral pleural line
    line_width: float = 2.0  # px at 1024 px
    texture_sigma: float = 10.0  # px at 1024 px: finer than this is "texture"
    edge_sigma: float = 3.0  # px at 1024 px


def medial_edge(mask: np.ndarray) -> np.ndarray:
    """Pixels just outside the mask on its lung side: the mask lies lateral to or above them.

    Lateral is away from the image's vertical midline. (H, W) bool.
    """
    h, w = mask.shape
    ring = ndimage.binary_dilation(mask) & ~mask
    shifted_up = np.zeros_like(mask)
    shifted_up[1:] = mask[:-1]  # mask one row above
    lateral = np.zeros_like(mask)
    half = w // 2
    lateral[:, 1:half] = mask[:, :half - 1]  # image-left half: mask one column to the left
    lateral[:, half:-1] = mask[:, half + 1:]  # image-right half: one column to the right
    return ring & (shifted_up | lateral)


def render_pneumothorax(image: np.ndarray, mask: np.ndarray, style: Style = Style()) -> np.ndarray:
    """(H, W) image in [0, 1] and (H, W) bool mask -> (H, W) float32 image in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    px = max(image.shape) / REFERENCE_SIDE  # pixels of this image per pixel at 1024
    coarse = ndimage.gaussian_filter(image, max(0.5, style.texture_sigma * px))
    soft = ndimage.gaussian_filter(mask.astype(np.float32), style.edge_sigma * px)
    soft = np.clip(np.maximum(soft, mask), 0.0, 1.0)  # full strength everywhere inside
    out = (coarse + (image - coarse) * (1 - style.texture_loss * soft)) * (1 - style.darken * soft)
    width = style.line_width * px
    line = ndimage.gaussian_filter(medial_edge(mask).astype(np.float32), max(0.5, width / 2))
    line *= style.line * min(1.0, width) / max(line.max(), 1e-6)
    return np.clip(out + line, 0.0, 1.0)
