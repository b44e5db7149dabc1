"""Read any supported image file as (H, W) float32 in [0, 1], and letterbox it to a square.

DICOM goes through `read_dicom` (LUTs, BitsStored, MONOCHROME1); PNG/JPEG through Pillow:
8-bit / 255, 16-bit / 65535, colour (RGB-stored greyscale as in TBX11K) to luminance. The
letterbox keeps the aspect ratio (a chest squeezed sideways would teach the encoder a wrong
anatomy) and pads with 0; masks go through the same geometry so they stay on the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ptxssl.datasets.dicom import read_dicom
from ptxssl.errors import UserError

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")  # compared case-insensitively
_DICOM_SUFFIXES = (".dcm", ".dicom")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601, as PIL's "L"


def read_image(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a DICOM, PNG or JPEG file.

    Returns:
        image: (H, W) float32 in [0, 1] (bright = dense).
        meta: the DICOM metadata (see `read_dicom`), {} for PNG/JPEG.
    Raises:
        UserError: unsupported suffix, missing, empty, truncated or unreadable file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"{path}: unsupported image type {path.suffix or '(no suffix)'!r}; "
                        f"supported: {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise UserError(f"{path}: {what}; check the path")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (0 bytes); re-download or remove it")
    if suffix in _DICOM_SUFFIXES:
        return read_dicom(path)
    return _read_pillow(path), {}


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()  # decode now so a truncated file fails here, not later
            im = ImageOps.exif_transpose(im)  # displayed orientation, as a viewer shows it
            return _to_unit(im)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot read the image ({first}); the file is probably "
                        "truncated or not really a PNG/JPEG, re-download or remove it") from None


def _to_unit(im: Image.Image) -> np.ndarray:
    """Pillow image -> (H, W) float32 [0, 1], scaled by the mode's bit depth."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode in ("L", "LA"):
        grey = np.asarray(im.getchannel(0), dtype=np.float64) / 255.0
    elif mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float64) / 65535.0
    elif mode == "I":  # 16-bit greyscale PNGs open as "I" (int32) in older Pillow
        grey = np.asarray(im, dtype=np.float64) / 65535.0
    elif mode == "F":
        grey = np.asarray(im, dtype=np.float64)
    else:  # RGB, RGBA, P, PA, CMYK, YCbCr, ...: luminance of the RGB rendering
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)  # (H, W, 3)
        grey = (rgb @ _LUMA) / 255.0
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Fit (H, W) float32 into (size, size): longer side -> size, centred, zero padding.

    Resampling is Pillow's mode-"F" bilinear, which antialiases when shrinking (its kernel
    widens with the scale factor). With odd padding the extra row/column goes bottom/right.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"letterbox expects an (H, W) image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return pad_square(resize(image, *letterbox_shape(*image.shape, size)), size)


def pad_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre an (h, w) image no larger than size x size on a zero (size, size) canvas."""
    h, w = image.shape
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) float -> (height, width) float32 by Pillow's mode-"F" bilinear resampling."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape == (height, width):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))  # float32 (H, W) -> mode "F"
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Letterbox a 0/1 mask with exactly `letterbox`'s geometry: bilinear on float, >= 0.5.

    Ties count as foreground: shrinking by a power of two puts every edge pixel exactly on
    0.5 (weights 1/8, 3/8, 3/8, 1/8), and ">= 0.5" then agrees with the usual reference,
    Pillow's 8-bit resize of mask * 255 thresholded at > 127 (which rounds 127.5 up); a
    strict "> 0.5" would shave a pixel off every such edge and erase thin masks.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"letterbox_mask expects an (H, W) mask, got shape {mask.shape}")
    return (letterbox((mask != 0).astype(np.float32), size) >= 0.5).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 (round half to even, clipped; NaN -> 0)."""
    scaled = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def letterbox_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) with the longer side = size and the aspect kept (at least 1 px)."""
    scale = size / max(h, w)
    return max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
