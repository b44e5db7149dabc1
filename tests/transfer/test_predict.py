"""`predict`: a saved UNet on DICOMs -> a SIIM submission CSV whose masks are exactly the
model's, at each DICOM's own size; on the real sample DICOMs; and through the CLI."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ptxssl.cli import cli
from ptxssl.datasets.dicom import read_dicom, write_dicom
from ptxssl.datasets.images import letterbox, letterbox_mask
from ptxssl.datasets.rle import decode_siim, encode_siim
from ptxssl.errors import UserError
from ptxssl.encoders import NORMALIZATION
from ptxssl.transfer.metrics import postprocess
from ptxssl.transfer.model import build_unet, save_model
from ptxssl.transfer.predict import predict_dicoms, unletterbox

SIZE = 32
# (rows, cols) -> letterbox region at 32 px and the integer factor back to the DICOM size
SHAPES = {(48, 96): ((8, 0, 16, 32), 3), (96, 48): ((0, 8, 32, 16), 3), (64, 64): ((0, 0, 32, 32), 2)}


def _write_dicoms(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {}
    for i, (rows, cols) in enumerate(SHAPES):
        yy, xx = np.mgrid[:rows, :cols]
        blob = np.exp(-((yy - rows * rng.uniform(0.2, 0.8)) ** 2 + (xx - cols * rng.uniform(0.2, 0.8)) ** 2)
                      / (2 * (rows / 5) ** 2))
        pixels = np.clip(80 + 150 * blob + rng.normal(0, 10, (rows, cols)), 0, 255).astype(np.uint8)
        sop = f"1.2.826.0.1.3680043.8.498.{100 + i}"
        path = folder / ("sub" if i == 2 else "") / f"img{i}.dcm"  # one in a subfolder
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dicom(path, pixels, bits_stored=8, monochrome1=False, patient_id=f"p{i}",
                    study_uid=f"{sop}.1", series_uid=f"{sop}.2", sop_uid=sop)
        files[sop] = path
    return files


def _probs(model, images: list[np.ndarray]) -> np.ndarray:
    """The model's probabilities, computed here without ptxssl's prediction code: the film
    letterboxed and quantised to 8 bits, as the training cache stores it."""
    x = torch.from_numpy(np.stack([np.rint(letterbox(im, SIZE) * 255) / np.float32(255) for im in images]))[:, None]
    x = (x - NORMALIZATION["mean"]) / NORMALIZATION["std"]
    with torch.no_grad():
        return torch.sigmoid(model.eval()(x))[:, 0].numpy()


def _save(model, run: Path, threshold: float, min_area_fraction: float = 0.0) -> Path:
    meta = {"image_size": SIZE, "in_channels": 1, "threshold": threshold,
            "min_area_fraction": min_area_fraction, "encoder": {"init": "random"}}
    save_model(model, run, meta, "test model")
    return run


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("dicoms")
    return folder, _write_dicoms(folder)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet("random")[0].eval()


def test_csv_is_exactly_the_models_masks_at_dicom_size(dicoms, model, tmp_path):
    folder, files = dicoms
    sops = list(files)
    images = [read_dicom(files[s])[0] for s in sops]
    probs = _probs(model, images)  # (3, 32, 32)
    maxima = np.sort(probs.reshape(3, -1).max(axis=1))
    threshold = float((maxima[0] + maxima[1]) / 2)  # the weakest image comes out empty
    run = _save(model, tmp_path / "run", threshold)
    summary = predict_dicoms(run, folder, tmp_path / "sub.csv", overlays_dir=tmp_path / "png",
                             batch_size=2, progress=False)
    csv = pd.read_csv(tmp_path / "sub.csv", dtype=str)
    assert list(csv.columns) == ["ImageId", "EncodedPixels"]
    assert sorted(csv.ImageId) == sorted(sops) and summary["images"] == 3
    assert summary["positive"] == 2 and summary["skipped"] == [] and summary["duplicates"] == []
    for sop, image, prob in zip(sops, images, probs):
        (top, left, h, w), factor = SHAPES[image.shape]
        expected = postprocess(prob, threshold, 0.0)[top:top + h, left:left + w]
        expected = np.repeat(np.repeat(expected, factor, axis=0), factor, axis=1)  # (rows, cols)
        rle = csv.set_index("ImageId").EncodedPixels[sop]
        got = decode_siim(rle, *image.shape, image_id=sop)
        np.testing.assert_array_equal(got, expected)
        assert (rle == "-1") == (not expected.any())
        png = np.asarray(Image.open(tmp_path / "png" / files[sop].relative_to(folder).with_suffix(".png")))
        assert png.shape == (*image.shape, 3)
        assert (png[..., 0] > png[..., 1])[expected].all()  # red inside the mask
        assert (png[..., 0] == png[..., 1])[~expected].all()  # untouched grey outside
    assert (csv.EncodedPixels == "-1").sum() == 1


def test_min_area_from_the_run_is_applied(dicoms, model, tmp_path):
    folder, files = dicoms
    run = _save(model, tmp_path / "run", threshold=0.0, min_area_fraction=1.01)  # nothing is that big
    predict_dicoms(run, folder, tmp_path / "a.csv", progress=False)
    assert (pd.read_csv(tmp_path / "a.csv", dtype=str).EncodedPixels == "-1").all()
    run = _save(model, tmp_path / "run", threshold=0.0, min_area_fraction=0.0)  # everything
    predict_dicoms(run, folder, tmp_path / "b.csv", progress=False)
    for sop, rle in pd.read_csv(tmp_path / "b.csv", dtype=str).itertuples(index=False):
        shape = read_dicom(files[sop])[0].shape
        assert decode_siim(rle, *shape).all()


def test_unreadable_dicom_stops_or_is_skipped(dicoms, model, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(dicoms[0], folder)
    (folder / "broken.dcm").write_text("not a dicom")
    run = _save(model, tmp_path / "run", 0.5)
    with pytest.raises(UserError, match="broken.dcm"):
        predict_dicoms(run, folder, tmp_path / "x.csv", progress=False)
    assert not (tmp_path / "x.csv").exists()
    summary = predict_dicoms(run, folder, tmp_path / "x.csv", progress=False, on_error="skip")
    assert summary["images"] == 3 and [Path(p).name for p, _ in summary["skipped"]] == ["broken.dcm"]
    assert len(pd.read_csv(tmp_path / "x.csv")) == 3
    with pytest.raises(UserError, match="no .dcm files"):
        predict_dicoms(run, tmp_path / "run", tmp_path / "y.csv", progress=False)


@pytest.mark.parametrize("shape", [(1024, 1024), (1955, 1841), (100, 37), (48, 96)])
def test_unletterbox_inverts_letterbox(shape):
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    mask = ((yy - rows * 0.4) ** 2 / (rows * 0.2) ** 2 + (xx - cols * 0.6) ** 2 / (cols * 0.25) ** 2) < 1
    back = unletterbox(letterbox_mask(mask, 64), rows, cols)
    assert back.shape == shape
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.93


def test_real_sample_dicoms(shared_data, model, tmp_path):
    """Every real DICOM in the samples (SIIM, non-square JPEG 2000 CRs, JPEG-LS, ...) gets a
    row whose RLE decodes at that file's size; the two multi-frame MRs are skipped."""
    run = _save(model, tmp_path / "run", threshold=0.5, min_area_fraction=0.001)
    summary = predict_dicoms(run, shared_data, tmp_path / "real.csv", progress=False, on_error="skip")
    files = sorted(shared_data.rglob("*.dcm"))
    assert sorted(Path(p).name for p, _ in summary["skipped"]) == ["emri_small_RLE.dcm",
                                                                   "emri_small_big_endian.dcm"]
    csv = pd.read_csv(tmp_path / "real.csv", dtype=str)
    assert len(csv) == len(files) - 2 == summary["images"]
    read = [read_dicom(f) for f in files if not f.name.startswith("emri")]
    assert list(csv.ImageId) == [meta["sop_uid"] for _, meta in read]  # sorted file order
    for (image, meta), rle in zip(read, csv.EncodedPixels):
        mask = decode_siim(rle, meta["rows"], meta["columns"], image_id=meta["sop_uid"])
        assert mask.shape == image.shape
        assert encode_siim(mask) == rle
    siim = next(f for f in files if f.parent.name == "sample")
    assert siim.stem in set(csv.ImageId)  # SIIM names its files by SOPInstanceUID
    assert summary["duplicates"] == [siim.stem]  # the MONOCHROME1 copy keeps the same UID


def test_real_ground_truth_rles_roundtrip(shared_data):
    sample = pd.read_csv(shared_data / "siim" / "train-rle-sample.csv", encoding="utf-8-sig", dtype=str)
    assert list(sample.columns) == ["fname", "mask"]
    positives = 0
    for image_id, rle in sample.itertuples(index=False):
        rle = rle.strip()
        mask = decode_siim(rle, 1024, 1024, image_id=image_id)
        assert encode_siim(mask) == rle
        positives += bool(mask.any())
        # the submission path keeps real masks: letterbox to 256 px and back
        if mask.any():
            back = unletterbox(letterbox_mask(mask, 256), 1024, 1024)
            assert 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum()) > 0.9
    assert positives == 5


def test_cli_predict(dicoms, model, tmp_path):
    run = _save(model, tmp_path / "run", 0.5)
    out = tmp_path / "cli.csv"
    result = CliRunner().invoke(cli, ["predict", "--model", str(run), str(dicoms[0]), "--out", str(out),
                                      "--overlays", str(tmp_path / "png"), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 3 images" in result.output
    assert len(pd.read_csv(out)) == 3 and len(list((tmp_path / "png").rglob("*.png"))) == 3

    bad = CliRunner().invoke(cli, ["predict", "--model", str(tmp_path / "nope"), str(dicoms[0]),
                                   "--out", str(tmp_path / "bad.csv")])
    assert bad.exit_code == 2
    assert bad.stderr.strip().count("\n") == 0 and str(tmp_path / "nope") in bad.stderr
    assert bad.stderr.startswith("Error:") and not (tmp_path / "bad.csv").exists()
