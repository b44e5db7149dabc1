"""Estimate the lung fields of a frontal chest radiograph, simply.

Only good enough to ask "does this mask shape lie over lung?" and "is this a chest film at
all?". The image is percentile-normalised and smoothed (sigma 1.5 % of its width: ribs and
vessels vanish, lungs stay); the dark regions are those below Otsu's threshold. Dark regions
touching the side or bottom edge are air outside the patient and are dropped; the film is
cut at the mediastinum (the brightest column of the middle third), which separates lungs
joined over the apices; the two largest remaining regions, opened and hole-filled, are the
lung fields. Where a lung
joins the outside air, darker thresholds and wider openings are tried in turn. A chest film has one on each side of the cut, each 4-35 % of the image and
clearly darker than the rest; anything else (an extremity, an abdomen, a blank or noise
image) returns None. Lines, pacemakers and dense consolidation can bite pieces out of a
field: the estimate is conservative, which only makes a mask shape harder to accept.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

MIN_LUNG, MAX_LUNG = 0.04, 0.35  # area of one lung field as a fraction of the image
# (threshold as a fraction of Otsu's, opening radius as a fraction of the width), in turn:
# a darker threshold or a wider opening breaks a lung off the air outside the patient
ATTEMPTS = tuple((t, r) for t in (1.0, 0.9, 0.8) for r in (0.015, 0.03))
MIN_CONTRAST = 0.08  # mean intensity outside minus inside the lungs, after 1-99 % normalisation


def _normalise(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, (1, 99))
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def _touching_edge(labels: np.ndarray) -> np.ndarray:
    """Labels of regions on the left, right or bottom edge (the top may crop the apices)."""
    return np.unique(np.concatenate([labels[:, 0], labels[:, -1], labels[-1]]))


def lung_fields(image: np.ndarray) -> np.ndarray | None:
    """(H, W) float image (bright = dense) -> (H, W) bool lung-field mask, or None if the
    image does not look like a frontal chest radiograph (see the module docstring)."""
    h, w = image.shape
    smooth = ndimage.gaussian_filter(_normalise(image.astype(np.float32)), 0.015 * w)
    if smooth.max() - smooth.min() < MIN_CONTRAST:
        return None
    third = slice(w // 3, w - w // 3)
    cut = w // 3 + int(np.argmax(smooth[h // 5: h - h // 5, third].mean(axis=0)))
    otsu = threshold_otsu(smooth)
    for scale, radius in ATTEMPTS:
        dark = smooth < scale * otsu
        dark[:, max(0, cut - 1): cut + 2] = False
        lungs = _two_fields(ndimage.binary_opening(dark, iterations=max(1, round(radius * w))), cut)
        if lungs is not None and smooth[~lungs].mean() - smooth[lungs].mean() >= MIN_CONTRAST:
            return ndimage.binary_fill_holes(lungs)
    return None


def _two_fields(dark: np.ndarray, cut: int) -> np.ndarray | None:
    """The two largest dark regions off the edges, if lung-sized and one each side of `cut`."""
    labels, n = ndimage.label(dark)
    sizes = np.bincount(labels.ravel(), minlength=n + 1) / dark.size
    sizes[_touching_edge(labels)] = 0.0  # label 0 (not dark) is on an edge too
    keep = [k for k in np.argsort(sizes)[::-1][:2] if MIN_LUNG <= sizes[k] <= MAX_LUNG]
    if len(keep) != 2:
        return None
    sides = sorted(ndimage.center_of_mass(labels == k)[1] for k in keep)
    return np.isin(labels, keep) if sides[0] < cut < sides[1] else None
