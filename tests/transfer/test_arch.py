"""`--arch`: a non-default encoder arch end to end (pretrain -> encoder file -> transfer ->
predict), and the refusals when an encoder file and the arch a run asks for disagree."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from ptxssl.analysis.embed import embed_cache
from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.encoders import build_encoder, load_encoder, save_encoder
from ptxssl.transfer.compare import grid_arch
from ptxssl.transfer.model import build_unet, load_model
from ptxssl.transfer.predict import predict_dicoms
from tests.helpers import assert_encoder_is

from .test_predict import _write_dicoms
from .test_run import _run, siim_cache  # noqa: F401  (the module-scoped tiny SIIM cache)


@pytest.fixture(scope="module")
def r18_run(siim_cache, tmp_path_factory) -> Path:  # noqa: F811
    """`ptxssl pretrain --arch resnet18`: 2 AE steps from the CLI, on the SIIM cache's train split."""
    out = tmp_path_factory.mktemp("r18") / "run"
    result = CliRunner().invoke(cli, ["pretrain", "--method", "ae", "--arch", "resnet18", "--data", str(siim_cache),
                                      "--out", str(out), "--max-steps", "2", "--batch-size", "8", "--workers", "0",
                                      "--image-size", "32", "--no-probe", "--accelerator", "cpu"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def r34_file(tmp_path_factory) -> Path:
    return save_encoder(build_encoder(1), tmp_path_factory.mktemp("r34") / "enc", {"in_channels": 1})


def test_pretrain_arch_exports_a_file_that_loads_strictly_into_that_unet(r18_run):
    meta = json.loads((r18_run / "encoder.json").read_text())
    assert meta["arch"] == "resnet18" and meta["method"] == "ae"
    assert yaml.safe_load((r18_run / "config.yaml").read_text())["arch"] == "resnet18"
    state = load_file(str(r18_run / "encoder.safetensors"))
    unet = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=1)
    unet.encoder.load_state_dict(dict(state), strict=True)
    assert_encoder_is(unet.encoder, state)
    with pytest.raises(RuntimeError):  # the file is truly a resnet18, not a resnet34
        smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1).encoder.load_state_dict(
            dict(state), strict=True)
    from ptxssl.pretrain.run import load_method  # the whole AE comes back as a resnet18 too

    assert load_method(r18_run).arch == "resnet18"


def test_transfer_takes_the_files_arch_and_predict_rebuilds_it(r18_run, siim_cache, tmp_path):  # noqa: F811
    state = load_file(str(r18_run / "encoder.safetensors"))
    unet, desc = build_unet(str(r18_run))  # no arch given: the file's
    assert desc["arch"] == "resnet18" and smp.Unet("resnet18", encoder_weights=None, in_channels=1).encoder \
        .state_dict().keys() == unet.encoder.state_dict().keys()
    assert_encoder_is(unet.encoder, state)

    # one tiny epoch with the encoder frozen with its own BatchNorm statistics, so the saved encoder is the file's
    metrics = _run(siim_cache, tmp_path / "unet", encoder=str(r18_run), epochs=1, freeze_epochs=-1, frozen_bn="as-is")
    run = tmp_path / "unet"
    assert metrics["encoder"]["arch"] == "resnet18" and 0 <= metrics["test"]["siim_dice"] <= 1
    assert json.loads((run / "ptxssl.json").read_text())["arch"] == "resnet18"
    assert yaml.safe_load((run / "config.yaml").read_text())["arch"] == "resnet18"  # resolved, for reruns
    assert json.loads((run / "model" / "config.json").read_text())["encoder_name"] == "resnet18"
    model, _ = load_model(run)
    assert_encoder_is(model.encoder, state)

    folder = tmp_path / "dicoms"
    sops = _write_dicoms(folder)
    summary = predict_dicoms(run, folder, tmp_path / "sub.csv", progress=False)
    assert summary["images"] == 3 and sorted(pd.read_csv(tmp_path / "sub.csv").ImageId) == sorted(sops)

    meta = json.loads((run / "ptxssl.json").read_text())
    (run / "ptxssl.json").write_text(json.dumps({**meta, "arch": "resnet34"}))
    with pytest.raises(UserError, match="resnet34.*resnet18"):  # ptxssl.json and model/ disagree
        load_model(run)


def test_a_file_for_another_arch_is_a_one_line_error_naming_both(r34_file, siim_cache, tmp_path):  # noqa: F811
    result = CliRunner().invoke(cli, ["transfer", "--arch", "resnet18", "--encoder", str(r34_file), "--data",
                                      str(siim_cache), "--out", str(tmp_path / "run"), "--image-size", "32",
                                      "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and str(r34_file) in line and "resnet34" in line and "resnet18" in line
    assert "--arch resnet34" in line  # the fix
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="vgg13"):
        load_encoder(r34_file, arch="vgg13")


def test_unknown_arch_and_a_grid_of_mixed_archs_fail_before_training(r34_file, r18_run, tmp_path):
    with pytest.raises(UserError, match="did you mean resnet34"):
        build_unet("random", arch="resnet-34")
    with pytest.raises(UserError, match="different archs"):
        grid_arch("", {"a": str(r34_file), "b": str(r18_run)})
    assert grid_arch("", {"random": "random", "mine": str(r18_run)}) == "resnet18"  # baselines follow the file
    assert grid_arch("", {"random": "random"}) == "resnet34"
    with pytest.raises(UserError, match="--arch resnet18"):
        grid_arch("vgg13", {"mine": str(r18_run)})


def test_embed_sizes_features_by_the_files_arch(siim_cache, tmp_path):  # noqa: F811
    save_encoder(build_encoder(1, "densenet121"), tmp_path / "enc", {"in_channels": 1, "arch": "densenet121"})
    emb = embed_cache(str(tmp_path / "enc"), siim_cache, tmp_path / "emb.h5", batch_size=16, progress=False)
    assert emb.features.shape[1] == 1024 and emb.attrs["arch"] == "densenet121"  # not resnet34's 512
