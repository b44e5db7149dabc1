"""The encoder file contract (encoder.safetensors + encoder.json): a round trip that keeps every
tensor and records the meta, the paths it accepts, and the refusals when tensors and arch disagree."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ptxssl import __version__
from ptxssl.encoders import (META_FILE, NORMALIZATION, WEIGHTS_FILE, build_encoder, load_encoder,
                             resolve_encoder_path, save_encoder)
from ptxssl.errors import UserError
from ptxssl.transfer.model import build_unet
from tests.helpers import assert_encoder_is


def _scrambled(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and buffer (BN statistics and step counters too) set to values no initialiser draws."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.fill_(seed + 3)
    return module


def test_save_then_load_keeps_every_tensor_and_records_the_meta(tmp_path):
    encoder = _scrambled(build_encoder(1, "resnet18"), 7)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    meta = {"in_channels": 1, "arch": "resnet18", "method": "ae", "steps": 12}
    weights = save_encoder(encoder, tmp_path / "run", meta)
    assert weights == tmp_path / "run" / WEIGHTS_FILE
    recorded = json.loads((tmp_path / "run" / META_FILE).read_text())
    assert recorded == {"arch": "resnet18", "in_channels": 1, "normalization": NORMALIZATION,
                        "ptxssl_version": __version__, "method": "ae", "steps": 12}
    assert_encoder_is(_loaded(weights), state)  # the file alone holds every tensor
    loaded, desc = load_encoder(tmp_path / "run")  # no arch asked: the file's
    assert_encoder_is(loaded, state)
    assert desc == recorded


def _loaded(weights) -> torch.nn.Module:
    """A fresh resnet18 filled from the safetensors file by nn.Module's own strict load (no ptxssl reader)."""
    fresh = build_encoder(1, "resnet18")
    torch.nn.Module.load_state_dict(fresh, load_file(str(weights)), strict=True)
    return fresh


def test_load_reads_the_channel_count_from_the_tensors(tmp_path):
    encoder = _scrambled(build_encoder(3, "resnet18"), 2)
    save_encoder(encoder, tmp_path / "enc", {"arch": "resnet18"})  # meta without in_channels
    loaded, desc = load_encoder(tmp_path / "enc")
    assert desc["in_channels"] == 3 and loaded.conv1.in_channels == 3
    assert_encoder_is(loaded, encoder.state_dict())


def test_resolve_encoder_path_takes_the_file_the_run_folder_or_its_export(tmp_path):
    own = tmp_path / "run" / WEIGHTS_FILE
    exported = tmp_path / "other" / "export" / WEIGHTS_FILE
    renamed = tmp_path / "mine.safetensors"
    for path in (own, exported, renamed, tmp_path / "run" / "export" / WEIGHTS_FILE):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert resolve_encoder_path(own) == own
    assert resolve_encoder_path(str(renamed)) == renamed  # any file name, as str or Path
    assert resolve_encoder_path(tmp_path / "run") == own  # the folder's own file before its export/
    assert resolve_encoder_path(tmp_path / "other") == exported


def test_a_folder_without_an_encoder_file_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "empty" / "export").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        resolve_encoder_path(tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "empty") in message and WEIGHTS_FILE in message
    with pytest.raises(UserError, match="encoder file not found"):
        resolve_encoder_path(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="empty"):  # load_encoder goes through the same path
        load_encoder(tmp_path / "empty")


def test_save_encoder_refuses_an_arch_its_tensors_do_not_fit(tmp_path):
    encoder = build_encoder(1, "resnet18")
    with pytest.raises(ValueError, match="not a resnet34"):
        save_encoder(encoder, tmp_path / "a", {"in_channels": 1, "arch": "resnet34"})
    with pytest.raises(ValueError, match="not a resnet34"):  # no arch in meta: the default, resnet34
        save_encoder(encoder, tmp_path / "b", {"in_channels": 1})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written


def test_tensors_that_do_not_fit_the_recorded_arch_are_named(tmp_path):
    weights = tmp_path / "enc" / "encoder.safetensors"
    save_encoder(build_encoder(1, "resnet18"), weights.parent, {"in_channels": 1, "arch": "resnet18"})
    meta = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    (tmp_path / "enc" / "encoder.json").write_text(json.dumps({**meta, "arch": "resnet34"}))  # a wrong label
    with pytest.raises(UserError) as err:
        load_encoder(weights)
    message = str(err.value)
    assert "\n" not in message and str(weights) in message and "resnet34" in message and "resnet18" in message
    bare = tmp_path / "bare.safetensors"  # no encoder.json: loaded as --arch (resnet34), told it is a resnet18
    save_file(load_file(str(weights)), str(bare))
    with pytest.raises(UserError, match="pass --arch resnet18"):
        build_unet(str(bare))
    assert build_unet(str(bare), arch="resnet18")[1]["arch"] == "resnet18"


@pytest.mark.parametrize("arch", ["vgg13", "densenet121", "efficientnet-b3"])
def test_encoder_file_contract_holds_for_non_resnet_archs(arch, tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder(1, arch)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01)  # not what any initialiser draws
    weights = save_encoder(encoder, tmp_path / "enc", {"in_channels": 1, "arch": arch})
    assert json.loads((tmp_path / "enc" / "encoder.json").read_text())["arch"] == arch
    built, desc = build_unet(str(weights))
    assert desc["arch"] == arch and built.config["encoder_name"] == arch and built.config["encoder_weights"] is None
    assert_encoder_is(built.encoder, encoder.state_dict())
    # the contract itself, on that smp.Unet(arch, encoder_weights=None, in_channels=1).encoder; nn.Module's
    # strict load because smp's densenet encoder overrides load_state_dict without `strict`
    torch.nn.Module.load_state_dict(built.encoder, load_file(str(weights)), strict=True)
    with torch.no_grad():
        assert built(torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)
