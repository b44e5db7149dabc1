"""Semi-synthetic SIIM data: real radiographs (../shared/data/mhh-covid) + real SIIM mask shapes."""
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from ptxssl.cli import cli
from ptxssl.datasets.images import read_image
from ptxssl.datasets.rle import decode_siim
from ptxssl.datasets.semisynth.lungs import lung_fields
from ptxssl.datasets.semisynth.render import Style, render_pneumothorax
from ptxssl.datasets.semisynth.shapes import inside_share, procedural_shape
from ptxssl.datasets.semisynth.write import Job, load_background, render_job, synthesize_on_backgrounds

SIZE = 128
COUNT = 10  # backgrounds taken from the 243 real radiographs


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def backgrounds(shared_data, tmp_path_factory) -> Path:
    """COUNT real radiographs (links), a noise image (not a chest) and a truncated PNG."""
    root = tmp_path_factory.mktemp("backgrounds")
    for src in sorted((shared_data / "mhh-covid" / "png").glob("*.png"))[:COUNT]:
        (root / src.name).symlink_to(src)
    noise = np.random.default_rng(0).integers(0, 256, (200, 240), dtype=np.uint8)
    Image.fromarray(noise).save(root / "zz_noise.png")
    (root / "zz_truncated.png").write_bytes((root / "zz_noise.png").read_bytes()[:300])
    return root


@pytest.fixture(scope="module")
def written(backgrounds, shared_data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("semisynth")
    summary = synthesize_on_backgrounds(out, backgrounds, shared_data / "siim" / "train-rle.csv", size=SIZE,
                                        paired=True, seed=3, workers=1, progress=False)
    return out / "siim", summary


def _job(backgrounds: Path, shared_data: Path, row: dict, kinds=("negative", "positive")) -> Job:
    paths = sorted(backgrounds.glob("*.png"))
    index = [p.name for p in paths].index(row["background"])
    return Job(index, paths[index], backgrounds, kinds, SIZE, 3, Path("."),
               str(shared_data / "siim" / "train-rle.csv"), Style(), 0.7)


def _dicoms(siim: Path) -> dict[str, Path]:
    return {p.stem: p for p in siim.rglob("*.dcm")}


def test_bad_backgrounds_are_skipped_and_listed_not_fatal(written):
    siim, summary = written
    skipped = {r["background"]: r["reason"] for r in _rows(siim / "skipped.csv")}
    assert "cannot read" in skipped["zz_truncated.png"]
    assert "no lung fields" in skipped["zz_noise.png"]
    assert summary["backgrounds"] == COUNT + 2 and summary["skipped"] == len(skipped)
    used = {r["background"] for r in _rows(siim / "backgrounds.csv")}
    assert len(used) >= COUNT // 2 and not used & set(skipped)  # most real films are used
    assert summary["images"] == 2 * len(used) == len(_dicoms(siim))


def test_positive_rles_decode_to_the_rendered_masks(written, backgrounds, shared_data):
    siim, _ = written
    rles = {r["ImageId"]: r[" EncodedPixels"] for r in _rows(siim / "train-rle.csv")}
    dicoms = _dicoms(siim)
    positives = [r for r in _rows(siim / "backgrounds.csv") if r["kind"] == "positive"]
    assert positives
    for row in positives:
        rendered = render_job(_job(backgrounds, shared_data, row))["images"][1]
        pixels, _ = read_image(dicoms[row["ImageId"]])
        decoded = decode_siim(rles[row["ImageId"]], *pixels.shape)
        assert decoded.any()
        np.testing.assert_array_equal(decoded, rendered["mask"])
        np.testing.assert_array_equal(np.rint(pixels * 255).astype(np.uint8), rendered["pixels"])


def test_negatives_equal_their_background_after_quantisation(written, backgrounds):
    siim, _ = written
    dicoms = _dicoms(siim)
    rles = {r["ImageId"]: r[" EncodedPixels"] for r in _rows(siim / "train-rle.csv")}
    negatives = [r for r in _rows(siim / "backgrounds.csv") if r["kind"] == "negative"]
    for row in negatives:
        pixels, _ = read_image(dicoms[row["ImageId"]])
        expected = np.rint(load_background(backgrounds / row["background"], SIZE) * 255)
        np.testing.assert_array_equal(np.rint(pixels * 255), np.clip(expected, 0, 255))
        assert rles[row["ImageId"]] == "-1"


def test_inside_the_mask_fine_texture_is_weaker_than_in_the_background(shared_data):
    path = sorted((shared_data / "mhh-covid" / "png").glob("*.png"))[0]
    background = load_background(path, 512)
    lungs = lung_fields(background)
    mask = max((procedural_shape(lungs, np.random.default_rng(s)) for s in range(5)), key=np.sum)  # deepest
    positive = render_pneumothorax(background, mask)

    core = ndimage.binary_erosion(mask, iterations=4)  # away from the blended edge
    assert core.sum() > 100

    def fine(image):  # energy below the vessel scale
        return (image - ndimage.gaussian_filter(image, 2.0))[core].var()

    assert fine(positive) < 0.5 * fine(background)
    assert positive[mask].mean() < background[mask].mean()  # more lucent
    far = ndimage.distance_transform_edt(~mask) > 20
    np.testing.assert_allclose(positive[far], background[far], atol=1e-6)  # nothing changes away from it


def test_lung_fields_two_sides_on_a_real_film_none_on_non_chest(shared_data):
    film = load_background(sorted((shared_data / "mhh-covid" / "png").glob("*.png"))[0], 256)
    lungs = lung_fields(film)
    assert lungs is not None and 0.08 < lungs.mean() < 0.6
    labels, n = ndimage.label(lungs)
    assert n == 2
    assert film[lungs].mean() < film[~lungs].mean()  # lungs are the dark fields
    assert lung_fields(np.full((256, 256), 0.5, np.float32)) is None
    extremity = load_background(shared_data / "dicom" / "RG3_J2KI.dcm", 256)
    assert lung_fields(extremity) is None


def test_procedural_shapes_lie_in_one_lung_field(shared_data):
    film = load_background(sorted((shared_data / "mhh-covid" / "png").glob("*.png"))[0], 256)
    lungs = lung_fields(film)
    for seed in range(5):
        mask = procedural_shape(lungs, np.random.default_rng(seed))
        assert mask.sum() > 20 and inside_share(mask, lungs) == 1.0
        assert ndimage.label(mask)[1] >= 1


def test_same_seed_same_files_and_procedural_default(backgrounds, tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a = synthesize_on_backgrounds(tmp_path / "a", backgrounds, size=64, count=6, seed=1, positive_fraction=0.5,
                                  workers=2, progress=False)
    synthesize_on_backgrounds(tmp_path / "b", backgrounds, size=64, count=6, seed=1, positive_fraction=0.5,
                              workers=1, progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    rows = _rows(tmp_path / "a" / "siim" / "backgrounds.csv")
    assert a["backgrounds"] == 6 and len(rows) == a["images"]  # one image per background
    assert {r["mask_shape"] for r in rows if r["kind"] == "positive"} <= {"procedural"}


@pytest.mark.parametrize("args, needle", [
    (["--format", "chestxray14"], "--format chestxray14"),
    (["--masks", "missing.csv"], "missing.csv"),
])
def test_cli_errors_name_the_option(backgrounds, tmp_path, args, needle):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "out"), "--backgrounds", str(backgrounds), *args])
    assert result.exit_code == 2 and needle in result.output, result.output


def test_cli_masks_without_backgrounds_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "out"), "--paired"])
    assert result.exit_code == 2 and "--backgrounds" in result.output, result.output
