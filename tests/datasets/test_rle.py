"""RLE codecs: hand-made pixels, both orientations, roundtrips, and every real SIIM string."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptxssl.datasets.rle import (
    RLEError,
    decode_absolute,
    decode_siim,
    encode_absolute,
    encode_siim,
    merge_siim,
)
from ptxssl.errors import UserError

# A 3x3 mask written out:       column-major pixel order (SIIM)   row-major order (absolute)
#   0 1 0                          0 3 6                            0 1 2
#   0 1 1                          1 4 7                            3 4 5
#   1 0 0                          2 5 8                            6 7 8
# column-major foreground pixels 2,3,4 and 7 -> SIIM "2 3 2 1" (run at 2 for 3; the next
# starts 2 after the end of the first, at 7); row-major foreground 1 and 4,5,6 -> "2 1 5 3".
MASK_3X3 = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.uint8)


def test_3x3_known_pixels() -> None:
    assert encode_siim(MASK_3X3) == "2 3 2 1"
    np.testing.assert_array_equal(decode_siim("2 3 2 1", 3, 3), MASK_3X3)
    assert encode_absolute(MASK_3X3) == "2 1 5 3"
    np.testing.assert_array_equal(decode_absolute("2 1 5 3", 3, 3), MASK_3X3)
    assert encode_absolute(MASK_3X3, column_major=True) == "3 3 8 1"
    np.testing.assert_array_equal(decode_absolute("3 3 8 1", 3, 3, column_major=True), MASK_3X3)


def test_single_pixel_orientation() -> None:
    """Pixel (row 0, col 1) of a 4x5 image: column-major index 4 (= H), row-major index 1."""
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[0, 1] = 1
    assert encode_siim(mask) == "4 1"
    assert encode_absolute(mask) == "2 1"  # 1-based
    assert encode_absolute(mask, column_major=True) == "5 1"
    assert decode_siim("4 1", 4, 5)[0, 1] == 1 and decode_siim("4 1", 4, 5).sum() == 1
    assert decode_absolute("2 1", 4, 5)[0, 1] == 1
    # the transposed reading would light (1, 0) instead
    assert decode_siim("1 1", 4, 5)[1, 0] == 1


def test_runs_cross_column_and_relative_offsets() -> None:
    """A SIIM run continues from the bottom of one column into the top of the next."""
    mask = np.zeros((3, 3), dtype=np.uint8)
    mask[2, 0] = mask[0, 1] = 1  # column-major pixels 2 and 3: one run of 2
    mask[2, 2] = 1  # pixel 8, the last: 4 after the end (4) of the first run
    assert encode_siim(mask) == "2 2 4 1"  # SIIM's mask2rle would drop this last run
    np.testing.assert_array_equal(decode_siim("2 2 4 1", 3, 3), mask)
    full = np.ones((2, 3), dtype=np.uint8)
    assert encode_siim(full) == "0 6"
    assert encode_absolute(full) == "1 6"


@pytest.mark.parametrize("empty", ["-1", " -1", "", "   ", "-1\n"])
def test_empty_siim(empty: str) -> None:
    assert decode_siim(empty, 4, 6).shape == (4, 6)
    assert decode_siim(empty, 4, 6).sum() == 0


def test_empty_encodings() -> None:
    z = np.zeros((5, 7), dtype=bool)
    assert encode_siim(z) == "-1"
    assert encode_absolute(z) == ""
    assert decode_absolute("", 5, 7).sum() == 0
    assert decode_absolute(float("nan"), 5, 7).sum() == 0  # pandas' blank cell


def test_nonbinary_mask_and_dtype() -> None:
    mask = MASK_3X3.astype(np.int32) * 255
    assert encode_siim(mask) == "2 3 2 1"
    out = decode_siim("2 3 2 1", 3, 3)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}


def test_absolute_overlapping_runs_union() -> None:
    out = decode_absolute("5 3 1 2 6 4", 3, 4)  # unsorted, overlapping
    expected = np.zeros(12, dtype=np.uint8)
    expected[[0, 1, 4, 5, 6, 7, 8]] = 1
    np.testing.assert_array_equal(out.ravel(), expected)


def test_merge_siim() -> None:
    a = np.zeros((4, 4), dtype=np.uint8)
    a[0, 0] = 1
    b = np.zeros((4, 4), dtype=np.uint8)
    b[1:3, 2] = 1
    merged = merge_siim([encode_siim(a), " -1", "", encode_siim(b)], 4, 4)
    np.testing.assert_array_equal(merged, a | b)
    assert merge_siim(["-1", "-1"], 4, 4).sum() == 0


@pytest.mark.parametrize(
    ("rle", "problem"),
    [
        ("1 2 x 4", "non-integer"),
        ("1.5 2", "non-integer"),
        ("1 2 3", "odd number"),
        ("1 2 -3 4", "negative offset"),
        ("1 0", "length 0"),
        ("1 -2", "length -2"),
        ("10 7", "past the end"),
        ("0 8 1 8", "past the end"),
    ],
)
def test_malformed_siim_names_image(rle: str, problem: str) -> None:
    with pytest.raises(RLEError, match=problem) as info:
        decode_siim(rle, 4, 4, image_id="1.2.3.abc")
    assert "1.2.3.abc" in str(info.value)
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize(
    ("rle", "problem"),
    [("0 2", "below 1"), ("1 2 x 1", "non-integer"), ("16 2", "past the end"), ("3", "odd"),
     ("2 0", "length 0"), ("-1", "odd")],
)
def test_malformed_absolute_names_image(rle: str, problem: str) -> None:
    with pytest.raises(RLEError, match=problem) as info:
        decode_absolute(rle, 4, 4, image_id="img_7")
    assert "img_7" in str(info.value)


def test_merge_error_names_image() -> None:
    with pytest.raises(RLEError, match="img_9"):
        merge_siim(["-1", "3 x"], 4, 4, image_id="img_9")


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """Random (H, W) 0/1 masks from 1x1 to 40x40, from empty through sparse/blobby to full."""
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = (rng.random((h, w)) < density).astype(np.uint8)
    if draw(st.booleans()):  # add a rectangle so long runs crossing scan lines appear
        r0, c0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        mask[r0:r0 + draw(st.integers(1, h)), c0:c0 + draw(st.integers(1, w))] = 1
    return mask


@settings(max_examples=300, deadline=None)
@given(masks())
def test_siim_roundtrip(mask: np.ndarray) -> None:
    h, w = mask.shape
    text = encode_siim(mask)
    np.testing.assert_array_equal(decode_siim(text, h, w), mask)
    # offsets are relative: every value is >= 0 and the string only grows with the runs
    if text != "-1":
        values = np.array(text.split(), dtype=np.int64)
        assert (values >= 0).all() and (values[1::2] >= 1).all()
        assert values[1::2].sum() == mask.sum()


@settings(max_examples=300, deadline=None)
@given(masks(), st.booleans())
def test_absolute_roundtrip(mask: np.ndarray, column_major: bool) -> None:
    h, w = mask.shape
    text = encode_absolute(mask, column_major=column_major)
    np.testing.assert_array_equal(decode_absolute(text, h, w, column_major=column_major), mask)
    # column-major absolute and SIIM describe the same runs: starts agree after un-relativising
    if column_major and text:
        abs_starts = np.array(text.split(), dtype=np.int64)[0::2] - 1
        rel = np.array(encode_siim(mask).split(), dtype=np.int64)
        siim_starts = np.cumsum(rel[0::2]) + np.cumsum(rel[1::2]) - rel[1::2]
        np.testing.assert_array_equal(abs_starts, siim_starts)


# --- the real SIIM-ACR train-rle.csv ------------------------------------------------------


@pytest.fixture(scope="module")
def siim_rows(shared_data) -> pd.DataFrame:
    """The full CSV, parsed once; keeps the header's leading space as the real file has it."""
    df = pd.read_csv(shared_data / "siim" / "train-rle.csv", dtype=str, keep_default_na=False)
    assert list(df.columns) == ["ImageId", " EncodedPixels"]
    return df


def test_real_csv_every_string_roundtrips(siim_rows: pd.DataFrame) -> None:
    assert len(siim_rows) == 12954
    mismatches = []
    for image_id, text in zip(siim_rows["ImageId"], siim_rows[" EncodedPixels"]):
        mask = decode_siim(text, 1024, 1024, image_id)
        if encode_siim(mask) != text.strip():
            mismatches.append(image_id)
    assert mismatches == []
    negatives = (siim_rows[" EncodedPixels"].str.strip() == "-1").sum()
    assert negatives == 9378


def test_real_masks_anatomy_orientation(siim_rows: pd.DataFrame) -> None:
    """Pneumothoraces sit at the apices and lateral rims: a transposed decoder fails this.

    Measured on the first 1,500 positive rows: centroid y = 0.34, x = 0.45; 74 % of the mass
    in the top half and 63 % in the image's left half (the patient's right). Transposed, the
    centroid would be y = 0.45, x = 0.34 and only 63 % in the top half.
    """
    positive = siim_rows[siim_rows[" EncodedPixels"].str.strip() != "-1"]
    heat = np.zeros((1024, 1024), dtype=np.int32)
    for image_id, text in zip(positive["ImageId"][:1500], positive[" EncodedPixels"][:1500]):
        heat += decode_siim(text, 1024, 1024, image_id)
    total = heat.sum()
    cy = (heat.sum(axis=1) * np.arange(1024)).sum() / total / 1024
    cx = (heat.sum(axis=0) * np.arange(1024)).sum() / total / 1024
    assert cy == pytest.approx(0.35, abs=0.03)
    assert cx == pytest.approx(0.46, abs=0.03)
    assert heat[:512].sum() / total > 0.68
    assert heat[:, :512].sum() / total > 0.55


def test_real_multi_mask_images_merge(siim_rows: pd.DataFrame) -> None:
    """624 images have several rows; merging unions them (no row overwrites another)."""
    positive = siim_rows[siim_rows[" EncodedPixels"].str.strip() != "-1"]
    groups = positive.groupby("ImageId")[" EncodedPixels"].apply(list)
    multi = groups[groups.map(len) > 1]
    assert len(multi) == 624
    for image_id, texts in multi.head(20).items():
        merged = merge_siim(texts, 1024, 1024, image_id)
        parts = [decode_siim(t, 1024, 1024, image_id) for t in texts]
        np.testing.assert_array_equal(merged, np.bitwise_or.reduce(parts))
        assert merged.sum() >= max(p.sum() for p in parts)
