"""Image reading (real PNGs, written 16-bit PNG / JPEG, DICOM), letterboxing and errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptxssl.datasets.images import (
    IMAGE_SUFFIXES,
    letterbox,
    letterbox_mask,
    read_image,
    to_uint8,
)
from ptxssl.errors import UserError

SIIM_SOP = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"


def test_real_chestxray14_pngs(shared_data: Path) -> None:
    files = sorted((shared_data / "chestxray14" / "images").glob("*.png"))
    assert len(files) == 2
    for path in files:
        image, meta = read_image(path)
        raw = np.asarray(Image.open(path))
        assert raw.dtype == np.uint8 and raw.ndim == 2
        assert image.shape == raw.shape == (512, 512) and image.dtype == np.float32
        np.testing.assert_allclose(image, raw / 255.0, atol=1e-7)
        assert meta == {}


def test_real_mhh_covid_pngs(shared_data: Path) -> None:
    for path in sorted((shared_data / "mhh-covid" / "png").glob("*.png"))[:4]:
        image, _ = read_image(path)
        raw = np.asarray(Image.open(path).convert("L"))
        assert image.shape == raw.shape and image.shape[1] == 640
        np.testing.assert_allclose(image * 255, raw, atol=1e-4)


def test_real_tbx11k_rgb_grey(shared_data: Path) -> None:
    """TBX11K stores grey X-rays as RGB: the result is the grey value itself."""
    files = sorted((shared_data / "tbx11k").glob("*.png"))
    assert len(files) == 3
    for path in files:
        raw = np.asarray(Image.open(path))
        assert raw.ndim == 3 and raw.shape[2] >= 3
        assert (raw[..., 0] == raw[..., 1]).all() and (raw[..., 1] == raw[..., 2]).all()
        image, _ = read_image(path)
        assert image.shape == raw.shape[:2]
        np.testing.assert_allclose(image * 255, raw[..., 0], atol=1e-3)


def test_colour_png_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    image, _ = read_image(tmp_path / "c.png")
    np.testing.assert_allclose(image[0], [0.299, 0.587, 0.114], atol=1e-6)
    np.testing.assert_allclose(image[1], 200 / 255, atol=1e-6)
    rgba = np.dstack([rgb, np.full((2, 3), 7, np.uint8)])  # alpha is ignored
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png")[0], image, atol=1e-6)


def test_16bit_png(tmp_path: Path) -> None:
    values = np.array([[0, 1, 255, 256], [4095, 32768, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")
    image, _ = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(np.rint(image.astype(np.float64) * 65535), values)
    assert image[0, 2] < 0.01  # 255 of 65535 is dark, not white (not scaled by /255)


def test_jpeg(tmp_path: Path) -> None:
    grad = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(grad).save(tmp_path / "g.jpg", quality=95)
    image, _ = read_image(tmp_path / "g.jpg")
    decoded = np.asarray(Image.open(tmp_path / "g.jpg"))
    np.testing.assert_allclose(image, decoded / 255.0, atol=1e-7)
    assert np.abs(image * 255.0 - grad).max() <= 4  # lossy, but close
    Image.fromarray(np.dstack([grad] * 3)).save(tmp_path / "rgb.JPEG", quality=95)
    colour, _ = read_image(tmp_path / "rgb.JPEG")  # upper-case suffix accepted
    assert np.abs(colour * 255.0 - grad).max() <= 4


def test_dicom_via_read_image(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "siim" / "dicom-images-train" / "sample" / f"{SIIM_SOP}.dcm"
    image, meta = read_image(src)
    assert image.shape == (1024, 1024) and meta["sop_uid"] == SIIM_SOP
    upper = tmp_path / "x.DICOM"
    shutil.copyfile(src, upper)
    np.testing.assert_array_equal(read_image(upper)[0], image)


# --- errors -------------------------------------------------------------------------------


def _error(path: Path, *patterns: str) -> None:
    with pytest.raises(UserError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for pattern in patterns:
        assert pattern in message, message


def test_errors_name_the_file(shared_data: Path, tmp_path: Path) -> None:
    _error(tmp_path / "missing.png", "not found")
    (tmp_path / "empty.png").write_bytes(b"")
    _error(tmp_path / "empty.png", "empty")
    (tmp_path / "empty.dcm").write_bytes(b"")
    _error(tmp_path / "empty.dcm", "empty")
    png = (shared_data / "chestxray14" / "images" / "00000001_000.png").read_bytes()
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])
    _error(tmp_path / "half.png", "truncated")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all" * 30)
    _error(tmp_path / "junk.jpg", "cannot read")
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom at all" * 30)
    _error(tmp_path / "junk.dcm", "not a DICOM")


def test_unsupported_suffix_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    path.write_bytes(b"II*\x00")
    _error(path, "unsupported", *IMAGE_SUFFIXES)
    _error(tmp_path / "noext", "unsupported")


# --- letterbox ----------------------------------------------------------------------------


def test_letterbox_wide_keeps_aspect() -> None:
    image = np.ones((60, 100), np.float32)  # -> 30 x 50 inside 50 x 50, 10 rows above/below
    out = letterbox(image, 50)
    assert out.shape == (50, 50) and out.dtype == np.float32
    assert (out[:10] == 0).all() and (out[40:] == 0).all()
    np.testing.assert_allclose(out[10:40], 1.0, atol=1e-5)


def test_letterbox_tall_odd_padding() -> None:
    image = np.ones((90, 41), np.float32)  # -> 30 x 14 (13.67 rounds to 14) in 30 x 30
    out = letterbox(image, 30)
    cols = np.flatnonzero(out.max(axis=0) > 0)
    assert (cols[0], cols[-1]) == (8, 21)  # 16 padding columns: 8 left, 8 right
    assert (out.max(axis=1) > 0).all()


def test_letterbox_content_is_centred_and_antialiased() -> None:
    yy, xx = np.mgrid[:200, :300]
    image = ((yy // 2 + xx // 2) % 2).astype(np.float32)  # 2-px checkerboard
    out = letterbox(image, 60)  # shrink by 5: antialiasing averages it to ~0.5
    assert (out[:10] == 0).all() and (out[50:] == 0).all()
    inner = out[12:48, 2:58]
    assert abs(inner.mean() - 0.5) < 0.02 and inner.std() < 0.1


def test_letterbox_square_identity_and_upscale() -> None:
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    np.testing.assert_array_equal(letterbox(image, 32), image)
    assert letterbox(image, 64).shape == (64, 64)


def test_square_mask_matches_pil_bilinear() -> None:
    """A square mask letterboxes like PIL's BILINEAR resize of mask*255 thresholded at 127.

    Exact for up-scaling and for halving (where edges land exactly on 0.5: ties count as
    mask, as 127.5 rounds up in PIL). At other shrink factors PIL's 8-bit two-pass resize
    rounds in between, so pixels within a hair of 0.5 may differ; everywhere else they agree.
    """
    yy, xx = np.mgrid[:48, :48]
    mask = ((yy - 20) ** 2 + (xx - 27) ** 2 < 15**2).astype(np.uint8)
    mask[5:9, 3:30] = 1
    for size in (96, 24, 36, 20):
        ours = letterbox_mask(mask, size)
        ref = np.asarray(Image.fromarray(mask * 255).resize((size, size),
                                                            Image.Resampling.BILINEAR)) > 127
        assert ours.dtype == np.uint8 and set(np.unique(ours)) <= {0, 1}
        if size in (96, 24):
            np.testing.assert_array_equal(ours, ref)
        else:
            soft = letterbox(mask.astype(np.float32), size)
            differ = ours.astype(bool) != ref
            assert (np.abs(soft[differ] - 0.5) < 0.01).all()
            assert differ.sum() <= 0.01 * size * size


def test_mask_ties_count_as_foreground() -> None:
    """Halving a 3-column stripe: output column 1 sits exactly on 0.5 and is kept."""
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :3] = 1
    soft = letterbox(mask.astype(np.float32), 4)
    assert soft[0, 1] == 0.5
    assert letterbox_mask(mask, 4)[:, :2].all() and not letterbox_mask(mask, 4)[:, 2:].any()


def test_mask_stays_on_the_image() -> None:
    image = np.zeros((80, 120), np.float32)
    image[20:50, 30:70] = 1.0
    mask = (image > 0).astype(np.uint8)
    boxed, boxed_mask = letterbox(image, 64), letterbox_mask(mask, 64)
    bright = boxed > 0.5
    inter, union = (bright & (boxed_mask == 1)).sum(), (bright | (boxed_mask == 1)).sum()
    assert inter / union > 0.99
    rows, cols = np.flatnonzero(boxed_mask.any(axis=1)), np.flatnonzero(boxed_mask.any(axis=0))
    # scale 64/120, top padding (64 - 43) // 2 = 10: rows 20.7..36.7, cols 16..37.3
    assert abs(rows[0] - 20.7) <= 1 and abs(rows[-1] - 36.2) <= 1
    assert abs(cols[0] - 16) <= 1 and abs(cols[-1] - 36.8) <= 1


def test_to_uint8() -> None:
    x = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 2.0, np.nan], np.float32)
    out = to_uint8(x)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 2, 128, 255, 255, 0]  # rint: halves to even
