"""`transfer()` end to end on a tiny SIIM cache: outputs, label subsets, freezing, resume."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.pretrain.encoder import build_encoder, save_encoder
from ptxssl.transfer.run import resolve_config, transfer
from tests.helpers import synthetic_cache

FAST = {"image_size": 32, "batch_size": 4, "workers": 0, "epochs": 2, "patience": 0}


@pytest.fixture(scope="module")
def siim_cache(tmp_path_factory):
    """48 SIIM-format images at 32 px; 60/20/20 split so val and test have positives."""
    return synthetic_cache(tmp_path_factory.mktemp("transfer_data"), "siim", count=48, seed=2, source_size=64,
                           positive_fraction=0.5, fractions=(0.6, 0.2, 0.2))


def _run(cache, out, **kw):
    cfg = resolve_config(None, {"data": str(cache), "out": str(out), **FAST, **kw})
    return transfer(cfg, progress=False)


def test_transfer_writes_metrics_model_and_subset(siim_cache, tmp_path):
    metrics = _run(siim_cache, tmp_path / "run", label_count=10)
    run = tmp_path / "run"
    for name in ("config.yaml", "labelled.csv", "metrics.csv", "metrics.json", "test_dice.csv",
                 "ptxssl.json", "model/config.json", "model/model.safetensors", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics.json").read_text()) == metrics
    test = metrics["test"]
    assert 0 <= test["siim_dice"] <= 1 and 0 <= test["positive_dice"] <= 1
    # post-processing was tuned on val and recorded for predict
    meta = json.loads((run / "ptxssl.json").read_text())
    assert meta["threshold"] == metrics["val_tuned"]["threshold"] and meta["image_size"] == 32
    # the labelled subset: 10 images, stratified (both classes), all from the train split
    subset = pd.read_csv(run / "labelled.csv")
    assert len(subset) == metrics["labelled_images"] == 10 and set(subset["pneumothorax"]) == {0, 1}
    # per-image test Dice averages to the reported score
    dice = pd.read_csv(run / "test_dice.csv")["dice"]
    assert len(dice) == metrics["test_images"] and dice.mean() == pytest.approx(test["siim_dice"], abs=1e-5)
    # the saved model loads with smp alone
    model = smp.from_pretrained(str(run / "model"))
    assert isinstance(model, smp.Unet)


def test_pretrained_encoder_starts_the_unet_and_freezing_keeps_it(siim_cache, tmp_path):
    torch.manual_seed(7)
    encoder = build_encoder(1)
    save_encoder(encoder, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    _run(siim_cache, tmp_path / "frozen", encoder=str(tmp_path / "enc"), epochs=1, freeze_epochs=1)
    unet = smp.from_pretrained(str(tmp_path / "frozen" / "model"))
    # frozen for the whole run: every encoder tensor, BatchNorm running statistics included,
    # is still the pretrained one, while the decoder learned
    for k, v in encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[k], v), k
    fresh = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1)
    assert any(not torch.equal(a, b) for a, b in zip(unet.decoder.state_dict().values(),
                                                     fresh.decoder.state_dict().values()))


def test_same_seed_same_result_and_resume_finishes(siim_cache, tmp_path):
    a = _run(siim_cache, tmp_path / "a", epochs=2)
    b = _run(siim_cache, tmp_path / "b", epochs=1)
    cfg = resolve_config(None, {"data": str(siim_cache), "out": str(tmp_path / "b"), **FAST, "epochs": 2})
    resumed = transfer(cfg, resume=True, progress=False)
    assert b["epochs_run"] == 1 and resumed["steps"] == a["steps"]
    assert resumed["test"]["siim_dice"] == pytest.approx(a["test"]["siim_dice"], abs=1e-6)
    with pytest.raises(UserError, match="already holds a run"):
        _run(siim_cache, tmp_path / "a")


def test_bad_label_fraction_and_missing_cache_are_named(siim_cache, tmp_path):
    with pytest.raises(UserError, match="--label-fraction"):
        _run(siim_cache, tmp_path / "x", label_fraction=1.5)
    with pytest.raises(UserError, match="cache file not found"):
        _run(tmp_path / "nope.h5", tmp_path / "y")


def test_transfer_cli_prints_config_and_scores(siim_cache, tmp_path):
    runner = CliRunner()
    shown = runner.invoke(cli, ["transfer", "--print-config", "--data", str(siim_cache)])
    assert shown.exit_code == 0 and "focal_weight: 1.0" in shown.output and "lr: 0.0001" in shown.output
    res = runner.invoke(cli, ["transfer", "--data", str(siim_cache), "--out", str(tmp_path / "cli"),
                              "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0",
                              "--label-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert "test SIIM score" in res.output and (tmp_path / "cli" / "metrics.json").is_file()
    bad = runner.invoke(cli, ["transfer", "--data", str(siim_cache), "--out", str(tmp_path / "bad"),
                              "--encoder", str(tmp_path / "missing.safetensors")])
    assert bad.exit_code == 2 and "missing.safetensors" in bad.output
    assert np.isfinite(json.loads((tmp_path / "cli" / "metrics.json").read_text())["test"]["siim_dice"])
