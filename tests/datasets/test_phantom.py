"""Behaviour of the procedural chest X-ray phantom generator."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from ptxssl.datasets.labels import NIH_FINDINGS
from ptxssl.datasets.phantom import render, sample_findings, sample_patient


def _patient(seed: int):
    return sample_patient(np.random.default_rng(seed))


def _pair(seed: int, with_: set[str], without: set[str], size: int = 128):
    """The same patient and rng state rendered with two sets of findings."""
    p = _patient(seed)
    return (render(p, with_, size, np.random.default_rng(1000 + seed)),
            render(p, without, size, np.random.default_rng(1000 + seed)))


def _central_width(img: np.ndarray) -> float:
    """Mean width (fraction of the image) of the bright run through the centre column, over the
    rows of the lower lung zone: the cardiac silhouette plus mediastinum."""
    h, w = img.shape
    widths = []
    for row in img[int(0.5 * h):int(0.62 * h)]:
        bright = row > (row[w // 2] + np.percentile(row, 10)) / 2
        left = w // 2 - np.argmin(bright[w // 2::-1]) if not bright[w // 2::-1].all() else 0
        right = w // 2 + np.argmin(bright[w // 2:]) if not bright[w // 2:].all() else w
        widths.append(right - left)
    return float(np.mean(widths)) / w


def test_same_inputs_same_pixels_other_seed_other_pixels():
    p = _patient(0)
    a = render(p, {"Nodule", "Pneumothorax"}, 64, np.random.default_rng(5))
    b = render(p, ["Pneumothorax", "Nodule"], 64, np.random.default_rng(5))  # order must not matter
    assert np.array_equal(a.image, b.image)
    assert all(np.array_equal(x, y) for x, y in zip(a.pneumothorax, b.pneumothorax))
    assert not np.array_equal(a.image, render(p, {"Nodule"}, 64, np.random.default_rng(6)).image)
    assert not np.array_equal(a.image, render(_patient(1), {"Nodule"}, 64, np.random.default_rng(5)).image)


def test_same_pixels_in_another_process_with_another_hash_seed():
    """Set iteration order changes with PYTHONHASHSEED; the pixels must not."""
    code = ("import hashlib, numpy as np; from ptxssl.datasets.phantom import render, sample_patient; "
            "r = np.random.default_rng(0); f = {'Nodule', 'Mass', 'Effusion', 'Atelectasis', 'Pneumothorax'}; "
            "print(hashlib.md5(render(sample_patient(r), f, 32, r).image.tobytes()).hexdigest())")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(out) == 1


def test_global_numpy_rng_untouched():
    state = np.random.get_state()[1].copy()
    render(_patient(0), set(NIH_FINDINGS), 64, np.random.default_rng(0))
    assert np.array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("view", ["frontal", "lateral"])
@pytest.mark.parametrize("size", [32, 64, 100, 256])
def test_image_contract(size, view):
    ph = render(_patient(size), {"Effusion", "Pneumothorax"}, size, np.random.default_rng(0), view=view)
    assert ph.image.shape == (size, size) and ph.image.dtype == np.float32
    assert np.isfinite(ph.image).all() and ph.image.min() >= 0 and ph.image.max() <= 1
    assert ph.image.std() > 0.1  # an image, not a flat field
    assert ph.findings == frozenset({"Effusion", "Pneumothorax"})
    if view == "lateral":
        assert ph.pneumothorax == []
    else:
        assert len(ph.pneumothorax) in (1, 2)


def test_dark_outside_bright_mediastinum_dark_lungs():
    img = render(_patient(3), set(), 128, np.random.default_rng(0)).image
    air = img[:10, :10].mean()  # top corner, above the shoulder
    lungs = np.median(img[45:70, 25:40])  # image-left lung field, mid zone
    mediastinum = img[60:75, 60:68].mean()
    assert air < 0.1 < lungs < mediastinum - 0.2


@pytest.mark.parametrize("size,count", [(32, 40), (64, 25), (100, 5), (256, 6), (1024, 1)])
def test_pneumothorax_masks_nonempty_and_inside_body(size, count):
    for seed in range(count):
        with_, without = _pair(seed, {"Pneumothorax"}, set(), size)
        assert 1 <= len(with_.pneumothorax) <= 2
        air = without.image[: size // 10, : size // 10]  # top corner: outside the body
        for mask in with_.pneumothorax:
            assert mask.shape == (size, size) and mask.dtype == bool and mask.any()
            assert np.median(without.image[mask]) > air.max()


def test_pneumothorax_removes_lung_markings_and_is_darker():
    checked = 0
    for seed in range(40):
        with_, without = _pair(seed, {"Pneumothorax"}, set(), 256)
        core = ndimage.binary_erosion(np.any(with_.pneumothorax, 0), iterations=3)  # skip the pleural line
        if core.sum() < 150:
            continue
        hp = lambda img: img - ndimage.gaussian_filter(img, 1.0)  # noqa: E731
        assert hp(with_.image)[core].var() < hp(without.image)[core].var(), seed
        assert with_.image[core].mean() < without.image[core].mean() - 0.01, seed
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_pneumothorax_follows_the_siim_prior():
    """Over many draws: mostly on the image-left lung and in the upper half; ~10% bilateral."""
    rng = np.random.default_rng(0)
    total, two = np.zeros((64, 64)), 0
    for _ in range(200):
        ph = render(sample_patient(rng), {"Pneumothorax"}, 64, rng)
        two += len(ph.pneumothorax) == 2
        total += np.sum(ph.pneumothorax, 0)
    assert total[:, :32].sum() / total.sum() > 0.55  # image left = the patient's right
    assert total[:32].sum() / total.sum() > 0.6
    assert 5 <= two <= 40


def test_adding_a_finding_changes_only_its_region():
    with_, without = _pair(2, {"Nodule"}, set())
    changed = np.abs(with_.image - without.image) > 1e-6
    assert 0 < changed.mean() < 0.03


def test_cardiomegaly_widens_the_central_silhouette():
    for seed in range(5):
        big, normal = _pair(seed, {"Cardiomegaly"}, set())
        assert _central_width(big.image) > _central_width(normal.image) + 0.03, seed


def test_effusion_brightens_the_lung_base():
    for seed in range(5):
        with_, without = _pair(seed, {"Effusion"}, set())
        diff = with_.image - without.image
        assert diff[64:].mean() > 0.002 and np.percentile(diff[64:], 99) > 0.1, seed  # base brighter
        assert np.abs(diff[:40]).mean() < 0.1 * diff[64:].mean(), seed  # apices untouched


@pytest.mark.parametrize("finding", [f for f in NIH_FINDINGS if f not in ("Pneumothorax", "Cardiomegaly")])
def test_every_finding_is_visible(finding):
    with_, without = _pair(7, {finding}, set())
    assert np.abs(with_.image - without.image).max() > 0.05


def test_follow_ups_resemble_each_other_more_than_other_patients():
    rng = np.random.default_rng(0)
    p, q = _patient(10), _patient(11)
    a, b = render(p, set(), 64, rng).image, render(p, set(), 64, rng).image
    assert not np.array_equal(a, b)
    c = render(q, set(), 64, rng).image
    assert np.abs(a - b).mean() < np.abs(a - c).mean()


def test_sample_findings_respects_the_flag_and_covers_all_names():
    rng = np.random.default_rng(0)
    seen, empty = {}, 0
    for i in range(600):
        flag = i % 3 == 0
        found = sample_findings(rng, pneumothorax=flag)
        assert ("Pneumothorax" in found) == flag
        assert found <= set(NIH_FINDINGS)
        empty += not (found - {"Pneumothorax"})
        for name in found:
            seen[name] = seen.get(name, 0) + 1
    assert set(seen) == set(NIH_FINDINGS)
    assert all(0.02 < seen[k] / 600 < 0.3 for k in seen if k != "Pneumothorax")
    assert empty > 100  # 'No Finding' is common


def test_unknown_finding_or_view_is_named():
    p, rng = _patient(0), np.random.default_rng(0)
    with pytest.raises(ValueError, match="Pneumonitis"):
        render(p, {"Nodule", "Pneumonitis"}, 64, rng)
    with pytest.raises(ValueError, match="oblique"):
        render(p, set(), 64, rng, view="oblique")
