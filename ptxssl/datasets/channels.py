"""Contrast-equalised extra channels (`prepare --channels raw,clahe,he`).

Several SIIM-ACR solutions fed a 3-channel input of the raw film, its CLAHE (contrast-limited
adaptive histogram equalisation: local contrast, so a faint pleural line stands out in a dark
apex as well as in a bright base) and its global histogram equalisation. They are computed
once in `prepare`, on the resized film before the letterbox padding (the zero border would
otherwise dominate the histograms), with scikit-image, and stored in the cache beside the raw
images.
"""
from __future__ import annotations

import numpy as np
from skimage import exposure

from ptxssl.datasets.images import letterbox_shape, pad_square, resize, to_uint8
from ptxssl.errors import UserError

CHANNELS = {
    "clahe": lambda image: exposure.equalize_adapthist(image, clip_limit=0.01),
    "he": lambda image: exposure.equalize_hist(image),
}


def parse_channels(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """"raw,clahe,he" -> ("clahe", "he"): the extra channels (raw always comes first)."""
    names = tuple(n.strip() for n in text.split(",")) if isinstance(text, str) else tuple(text)
    if not names or names[0] != "raw" or any(n not in CHANNELS for n in names[1:]) or len(set(names)) != len(names):
        raise UserError(f"--channels {','.join(names)!r}: start with raw, then any of {', '.join(CHANNELS)} once "
                        "each (e.g. raw,clahe,he)")
    return names[1:]


def extra_channels(image: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
    """(h, w) float image in [0, 1] -> one (h, w) float image in [0, 1] per extra channel."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    return [np.asarray(CHANNELS[name](image), dtype=np.float32) for name in names]


def letterbox_planes(image: np.ndarray, size: int, names: tuple[str, ...] = ()) -> np.ndarray:
    """(H, W) float image -> (1 + K, size, size) uint8: the letterboxed raw film and its extra
    channels, exactly as `prepare` stores them (and `predict` must feed them)."""
    resized = resize(image, *letterbox_shape(*image.shape, size))
    return np.stack([to_uint8(pad_square(p, size)) for p in (resized, *extra_channels(resized, tuple(names)))])
