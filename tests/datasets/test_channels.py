"""`prepare --channels raw,clahe,he`: extra contrast-equalised channels in the cache."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner


from ptxssl.datasets.cache import cache_info, prepare
from ptxssl.datasets.channels import extra_channels, parse_channels
from ptxssl.datasets.synth import synthesize
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("channels")
    synthesize(root, count=12, size=96, formats=("siim",), progress=False)
    return root / "siim"


def test_channels_are_stored_differ_from_raw_and_are_deterministic(raw, tmp_path):
    for name in ("a.h5", "b.h5"):
        prepare(raw, "siim", tmp_path / name, size=64, workers=1, progress=False, channels="raw,clahe,he")
    plain = tmp_path / "plain.h5"
    prepare(raw, "siim", plain, size=64, workers=1, progress=False)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b, h5py.File(plain) as p:
        assert a["channels"].shape == (12, 2, 64, 64) and list(a["channels"].attrs["names"]) == ["clahe", "he"]
        np.testing.assert_array_equal(a["channels"][:], b["channels"][:])  # deterministic
        np.testing.assert_array_equal(a["images"][:], p["images"][:])  # raw unchanged by the option
        for k in range(2):
            assert np.abs(a["channels"][:, k].astype(int) - a["images"][:].astype(int)).mean() > 5
    assert cache_info(tmp_path / "a.h5")["channels"] == ["raw", "clahe", "he"]
    item = CacheDataset(tmp_path / "a.h5", channels=True)[0]
    assert item["image"].shape == (3, 64, 64)
    assert CacheDataset(tmp_path / "a.h5")[0]["image"].shape == (1, 64, 64)  # only on request


def test_equalisation_runs_on_the_film_not_on_the_letterbox_border(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "films").mkdir()
    for i in range(3):  # wide films: the letterbox adds black bands above and below
        film = (np.linspace(60, 200, 96)[None, :] + rng.normal(0, 10, (48, 96))).clip(0, 255).astype(np.uint8)
        Image.fromarray(film).save(tmp_path / "films" / f"{i}.png")
    prepare(tmp_path / "films", "folder", tmp_path / "f.h5", size=64, workers=1, progress=False,
            channels="raw,clahe,he")
    with h5py.File(tmp_path / "f.h5") as h5:
        images, channels = h5["images"][:], h5["channels"][:]
    assert (images[:, :8] == 0).all() and (images[:, 20:40] > 0).all()
    assert (channels[:, :, :8] == 0).all()  # the border stays black in every channel
    assert channels[:, 1, 20:40].std() > images[:, 20:40].std()  # HE stretched the film's own histogram


def test_histogram_equalisation_spreads_a_narrow_histogram():
    image = np.linspace(0.4, 0.5, 64 * 64).reshape(64, 64)
    clahe, he = extra_channels(image, ("clahe", "he"))
    assert np.ptp(he) > 0.9 and np.ptp(clahe) > 0.15 > np.ptp(image)


@pytest.mark.parametrize("text", ["clahe,raw", "raw,sobel", "raw,he,he", ""])
def test_bad_channel_lists_name_the_option(text, raw, tmp_path):
    with pytest.raises(UserError, match="--channels"):
        parse_channels(text)
    from ptxssl.cli import cli

    result = CliRunner().invoke(cli, ["prepare", str(raw), "--dataset", "siim", "--out", str(tmp_path / "x.h5"),
                                      "--channels", text or ","])
    assert result.exit_code == 2 and "--channels" in result.output


def test_three_channel_transfer_adapts_a_grey_encoder_and_predict_feeds_the_same_planes(raw, tmp_path):
    import json

    import segmentation_models_pytorch as smp
    import torch

    from ptxssl.encoders import build_encoder, save_encoder
    from ptxssl.transfer.predict import predict_dicoms
    from ptxssl.transfer.run import resolve_config, transfer

    cache = tmp_path / "c.h5"
    prepare(raw, "siim", cache, size=32, workers=1, progress=False, channels="raw,clahe,he",
            fractions=(0.5, 0.25, 0.25))
    torch.manual_seed(0)
    grey = build_encoder(1)
    save_encoder(grey, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    cfg = resolve_config(None, {"data": str(cache), "out": str(tmp_path / "run"), "encoder": str(tmp_path / "enc"),
                                "in_channels": 3, "batch_size": 2, "workers": 0, "epochs": 1, "patience": 0,
                                "freeze_epochs": -1})
    transfer(cfg, progress=False)
    meta = json.loads((tmp_path / "run" / "ptxssl.json").read_text())
    assert meta["in_channels"] == 3 and meta["channels"] == ["clahe", "he"]
    unet = smp.from_pretrained(str(tmp_path / "run" / "model"))
    w = unet.encoder.conv1.weight  # smp's adaptation: the grey kernel in each channel, scaled by 1/3
    for c in range(3):
        torch.testing.assert_close(w[:, c:c + 1], grey.conv1.weight / 3)
    out = predict_dicoms(tmp_path / "run", raw, tmp_path / "sub.csv", progress=False)
    assert out["images"] == 12
