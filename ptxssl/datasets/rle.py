"""Run-length codecs for segmentation masks: SIIM-ACR (relative, column-major) and absolute.

SIIM-ACR `train-rle.csv` follows the competition's `mask_functions.py` (`rle2mask` /
`mask2rle`): pixels are numbered column-major (down the first column, then the next), the
string is pairs `offset length`, and each offset counts from the END of the previous run
(the first from pixel 0). "-1" (or a blank cell) is an empty mask. `rle2mask` returns the
mask transposed (it reshapes to (width, height)); the decoder here returns (H, W) directly.

The other common Kaggle format is absolute: pairs `start length` with a 1-based start,
row-major by default (Carvana) or column-major (Airbus ship detection). An empty absolute
mask encodes as "" (Kaggle's blank cell); SIIM's empty mask is "-1".

All functions are vectorised: cost is O(number of runs + mask pixels), never a Python loop
over pixels.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ptxssl.errors import UserError


class RLEError(UserError):
    """A malformed RLE string; the message names the ImageId and what is wrong."""


def _is_blank(rle: object) -> bool:
    """True for None, NaN (pandas' blank cell) and whitespace-only strings."""
    if rle is None:
        return True
    if isinstance(rle, float):
        return bool(np.isnan(rle))
    return isinstance(rle, str) and not rle.strip()


def _parse_pairs(rle: str, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Split an RLE string into (firsts, lengths) int64 arrays, rejecting malformed text."""
    if not isinstance(rle, str):
        raise RLEError(f"ImageId {image_id}: RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(t for t in tokens if not _is_int(t))
        raise RLEError(
            f"ImageId {image_id}: RLE has a non-integer value {bad[:20]!r}"
        ) from None
    if values.size % 2:
        raise RLEError(
            f"ImageId {image_id}: RLE has an odd number of values ({values.size}); "
            "it must be pairs of offset/start and length"
        )
    return values[0::2], values[1::2]


def _is_int(token: str) -> bool:
    try:
        int(token)
    except (ValueError, OverflowError):
        return False
    return True


def _check_shape(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"mask size must be positive, got {height}x{width}")


def _paint(starts: np.ndarray, lengths: np.ndarray, height: int, width: int,
           column_major: bool) -> np.ndarray:
    """(H, W) uint8 mask with flat pixel runs [start, start + length) set to 1."""
    total = int(lengths.sum())
    # flat index of every foreground pixel: run start repeated, plus its position in the run
    run_of_pixel_start = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    flat = run_of_pixel_start + np.arange(total, dtype=np.int64)
    if column_major:
        flat = (flat % height) * width + flat // height  # column-major -> row-major index
    mask = np.zeros(height * width, dtype=np.uint8)
    mask[flat] = 1
    return mask.reshape(height, width)


def _runs(mask: np.ndarray, column_major: bool) -> tuple[np.ndarray, np.ndarray]:
    """0-based (starts, lengths) of the foreground runs in the chosen pixel order.

    Runs continue from the end of one scan line (column or row) into the next, as in SIIM's
    `mask2rle`. Change points are found in the array's own memory order and then sorted, so
    a column-major scan never pays for a transposed copy of the image.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    fg = mask != 0
    if not fg.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lines = fg.T if column_major else fg  # (n_lines, line_len): one scan line per row
    line_len = lines.shape[1]
    # np.flatnonzero + divmod: 2-D np.nonzero is ~20x slower on a 1024x1024 mask
    if column_major:
        change = fg[1:, :] != fg[:-1, :]  # (H-1, W): pixel (r, c) differs from (r+1, c)
        pos, line = np.divmod(np.flatnonzero(change), change.shape[1])
    else:
        change = fg[:, 1:] != fg[:, :-1]  # (H, W-1): pixel (r, c) differs from (r, c+1)
        line, pos = np.divmod(np.flatnonzero(change), change.shape[1])
    inner = line * line_len + pos + 1
    wrap = np.flatnonzero(lines[1:, 0] != lines[:-1, -1]).astype(np.int64)
    edges = np.concatenate((
        np.array([0] if lines[0, 0] else [], dtype=np.int64),
        inner,
        (wrap + 1) * line_len,
        np.array([fg.size] if lines[-1, -1] else [], dtype=np.int64),
    ))
    edges.sort()
    return edges[0::2], edges[1::2] - edges[0::2]


def decode_siim(rle: str, height: int, width: int, image_id: str = "?") -> np.ndarray:
    """Decode one SIIM-ACR RLE string (relative offsets, column-major) to an (H, W) 0/1 mask.

    Args:
        rle: "offset length offset length ..." as in `train-rle.csv`; "-1" or blank = empty.
        height, width: the image size (1024 x 1024 for SIIM).
        image_id: named in the error message when the string is malformed.
    Returns:
        (H, W) uint8 array of 0/1.
    Raises:
        RLEError: non-integers, an odd count, a negative offset, a length < 1, or a run
            past the image end.
    """
    _check_shape(height, width)
    if _is_blank(rle) or (isinstance(rle, str) and rle.strip() == "-1"):
        return np.zeros((height, width), dtype=np.uint8)
    offsets, lengths = _parse_pairs(rle, image_id)
    if (offsets < 0).any():
        bad = int(np.argmax(offsets < 0))
        raise RLEError(f"ImageId {image_id}: RLE pair {bad + 1} has a negative offset "
                       f"({int(offsets[bad])}); offsets must be >= 0")
    _check_lengths(lengths, image_id)
    # start of run i = sum of all offsets up to i + sum of all lengths before i
    starts = np.cumsum(offsets) + np.cumsum(lengths) - lengths
    _check_end(starts, lengths, height, width, image_id)
    return _paint(starts, lengths, height, width, column_major=True)


def encode_siim(mask: np.ndarray) -> str:
    """Encode an (H, W) mask (nonzero = foreground) as a SIIM-ACR RLE string; "-1" if empty.

    Gives the same string as SIIM's `mask2rle(mask.T * 255, ...)` (except that `mask2rle`
    silently drops a run touching the last pixel; this encoder keeps it).
    """
    starts, lengths = _runs(mask, column_major=True)
    if starts.size == 0:
        return "-1"
    ends = starts + lengths
    offsets = starts - np.concatenate(([0], ends[:-1]))
    return _join(offsets, lengths)


def decode_absolute(rle: str, height: int, width: int, image_id: str = "?",
                    column_major: bool = False) -> np.ndarray:
    """Decode an absolute RLE string ("start length ...", 1-based starts) to (H, W) 0/1.

    Row-major by default (Carvana convention); `column_major=True` for the Airbus-ship style.
    Blank means empty. Overlapping or unsorted runs are accepted and unioned.
    """
    _check_shape(height, width)
    if _is_blank(rle):
        return np.zeros((height, width), dtype=np.uint8)
    starts, lengths = _parse_pairs(rle, image_id)
    if (starts < 1).any():
        raise RLEError(f"ImageId {image_id}: absolute RLE start "
                       f"{int(starts[starts < 1][0])} is below 1 (starts are 1-based)")
    _check_lengths(lengths, image_id)
    starts = starts - 1
    _check_end(starts, lengths, height, width, image_id)
    order = np.argsort(starts, kind="stable")
    starts, lengths = starts[order], lengths[order]
    # clip overlaps so _paint's flat indices stay valid (pixel set unchanged: union)
    run_end = np.maximum.accumulate(starts + lengths)
    new_starts = np.maximum(starts, np.concatenate(([0], run_end[:-1])))
    new_lengths = np.maximum(starts + lengths - new_starts, 0)
    keep = new_lengths > 0
    return _paint(new_starts[keep], new_lengths[keep], height, width, column_major)


def encode_absolute(mask: np.ndarray, column_major: bool = False) -> str:
    """Encode an (H, W) mask as absolute RLE (1-based starts); "" for an empty mask."""
    starts, lengths = _runs(mask, column_major=column_major)
    return _join(starts + 1, lengths)


def merge_siim(rles: Iterable[str], height: int, width: int, image_id: str = "?",
               variant: str = "siim") -> np.ndarray:
    """Union of several rows of one image (624 SIIM images have several masks).

    "-1" and blank rows are ignored, so an image with only "-1" rows gives an empty mask.
    `variant`: "siim" (relative offsets, column-major) or "absolute" (1-based starts,
    column-major), see RLE_VARIANTS.
    """
    if variant not in RLE_VARIANTS:
        raise UserError(f"--rle {variant!r}: choose from {', '.join(RLE_VARIANTS)}")
    decode = RLE_VARIANTS[variant]
    mask = np.zeros((height, width), dtype=np.uint8)
    for rle in rles:
        if not (_is_blank(rle) or (isinstance(rle, str) and rle.strip() == "-1")):
            mask |= decode(rle, height, width, image_id)
    return mask


def _check_lengths(lengths: np.ndarray, image_id: str) -> None:
    if (lengths < 1).any():
        bad = int(np.argmax(lengths < 1))
        raise RLEError(f"ImageId {image_id}: RLE run {bad + 1} has length {int(lengths[bad])}; "
                       "lengths must be >= 1")


def _check_end(starts: np.ndarray, lengths: np.ndarray, height: int, width: int,
               image_id: str) -> None:
    ends = starts + lengths
    if ends.size and ends.max() > height * width:
        bad = int(np.argmax(ends > height * width))
        raise RLEError(f"ImageId {image_id}: RLE run {bad + 1} ends at pixel {int(ends[bad])}, "
                       f"past the end of a {height}x{width} image ({height * width} pixels)")


def _join(a: np.ndarray, b: np.ndarray) -> str:
    pairs = np.empty(a.size * 2, dtype=np.int64)
    pairs[0::2], pairs[1::2] = a, b
    return " ".join(map(str, pairs.tolist()))


# How a label file's EncodedPixels are read (`prepare --rle`). SIIM-ACR: offsets relative to
# the end of the previous run, column-major. CANDID-PTX's public users decode its strings the
# same way (accumulating offsets, then transposing), so "siim" is its default too; "absolute"
# (Kaggle's usual 1-based absolute starts, column-major) is there for files written that way.
RLE_VARIANTS = {
    "siim": decode_siim,
    "absolute": lambda rle, height, width, image_id: decode_absolute(rle, height, width, image_id, column_major=True),
}
