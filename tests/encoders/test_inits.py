"""The inits registry (random, imagenet, imagenet:FILE, an encoder file or run folder):
weights that land tensor for tensor, smp's 1-channel adaptation, and bad files named in one
line. Never touches the network."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision
from safetensors.torch import save_file
from segmentation_models_pytorch.encoders._utils import patch_first_conv

from ptxssl.encoders import INITS, build_encoder, init_encoder, save_encoder
from ptxssl.errors import UserError
from tests.helpers import assert_state_equal, scrambled


@pytest.fixture(scope="module")
def tv34_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(1)
    state = scrambled(torchvision.models.resnet34(weights=None), 1).state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet34.pth"
    torch.save(state, path)
    return path, state


def _one_line_error(init: str, in_channels: int = 1, arch: str | None = None) -> str:
    with pytest.raises(UserError) as err:
        init_encoder(init, in_channels=in_channels, arch=arch)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_imagenet_file_one_channel_is_smp_adaptation(tv34_file):
    path, state = tv34_file
    encoder, desc = init_encoder(f"imagenet:{path}", in_channels=1)
    conv1 = encoder.conv1.weight
    assert torch.equal(conv1, state["conv1.weight"].sum(1, keepdim=True))  # RGB kernels summed
    tv = torchvision.models.resnet34(weights=None)
    tv.load_state_dict(state)
    patch_first_conv(tv, new_in_channels=1, pretrained=True)  # what smp does to ImageNet weights
    assert torch.equal(conv1, tv.conv1.weight)
    rest = {k: v for k, v in state.items() if k != "conv1.weight"}
    own = encoder.state_dict()
    assert all(torch.equal(own[k], v) for k, v in rest.items() if not k.startswith("fc."))
    assert desc == {"init": "imagenet", "spec": f"imagenet:{path}", "source": str(path),
                    "sha1": hashlib.sha1(path.read_bytes()).hexdigest(), "in_channels": 1, "arch": "resnet34"}


def test_imagenet_file_three_channels_and_safetensors(tv34_file, tmp_path):
    path, state = tv34_file
    st = tmp_path / "resnet34.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    for f in (path, st):
        encoder, _ = init_encoder(f"imagenet:{f}", in_channels=3)
        assert_state_equal(encoder, state)


def test_imagenet_offline_is_one_line_pointing_to_file(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # no cached weights
    message = _one_line_error("imagenet")
    assert "imagenet:FILE" in message and "resnet34" in message


def test_bad_weight_files_name_the_file(tmp_path):
    r18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), r18)
    message = _one_line_error(f"imagenet:{r18}")
    assert str(r18) in message and "missing" in message and "layer1.2" in message

    junk = tmp_path / "junk.pth"
    torch.save({"foo": torch.zeros(3)}, junk)
    message = _one_line_error(f"imagenet:{junk}")
    assert str(junk) in message and "unexpected" in message

    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    assert str(text) in _one_line_error(f"imagenet:{text}")
    assert str(text) in _one_line_error(str(text))  # as a ptxssl encoder file

    nested = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {"conv1.weight": torch.zeros(1)}}, nested)
    assert "not a state_dict" in _one_line_error(f"imagenet:{nested}")

    pickled = tmp_path / "model.pth"
    torch.save(torchvision.models.resnet18(weights=None), pickled)  # a whole pickled module
    assert str(pickled) in _one_line_error(f"imagenet:{pickled}")

    assert "not found" in _one_line_error(f"imagenet:{tmp_path / 'absent.pth'}")
    assert "random" in _one_line_error(str(tmp_path / "absent"))


def test_wrong_channel_count_and_truncated_encoder(tmp_path):
    rgb = save_encoder(build_encoder(3), tmp_path / "rgb", {"in_channels": 3})
    message = _one_line_error(str(rgb), in_channels=1)
    assert str(rgb) in message and "3 input channels" in message and "has 1" in message

    grey = save_encoder(build_encoder(1), tmp_path / "grey", {"in_channels": 1})
    grey.write_bytes(grey.read_bytes()[: grey.stat().st_size // 2])
    assert str(grey) in _one_line_error(str(grey))

    r18 = tmp_path / "r18" / "encoder.safetensors"
    r18.parent.mkdir()
    enc18 = smp.encoders.get_encoder("resnet18", in_channels=1, weights=None)
    save_file({k: v.contiguous() for k, v in enc18.state_dict().items()}, str(r18))
    assert str(r18) in _one_line_error(str(r18))
    assert "--in-channels" in _one_line_error("random", in_channels=2)


@pytest.fixture()
def sources(tv34_file, tmp_path) -> dict[str, tuple[str, dict | None]]:
    """One init spec per registry entry, with the state its encoder must end up holding
    (None: the weights as built from the seed)."""
    path, state = tv34_file
    three = init_encoder(f"imagenet:{path}", in_channels=3)[0].state_dict()  # the RGB weights as loaded
    one = {k: (v.sum(1, keepdim=True) if k == "conv1.weight" else v) for k, v in three.items()}
    encoder = scrambled(build_encoder(1), 3)
    run = tmp_path / "run"
    save_encoder(encoder, run, {"in_channels": 1, "method": "ae"})
    return {"random": ("random", None), "imagenet:": (f"imagenet:{path}", one), "path": (str(run), encoder.state_dict())}


@pytest.mark.parametrize("name", sorted(INITS))
def test_every_registered_init_builds_an_encoder_holding_its_weights(name, sources, monkeypatch):
    if name == "imagenet":  # the download itself cannot run here: smp's encoder stands in for it
        weights = scrambled(build_encoder(1), 5)
        monkeypatch.setattr(smp.encoders, "get_encoder", lambda *a, **k: weights)
        spec, expected = "imagenet", weights.state_dict()
    else:
        spec, expected = sources[name]
    torch.manual_seed(0)
    encoder, desc = init_encoder(spec)
    assert desc["spec"] == spec and desc["arch"] == "resnet34" and desc["in_channels"] == 1
    if expected is None:  # random: exactly what build_encoder draws from the same seed
        torch.manual_seed(0)
        expected = build_encoder(1).state_dict()
    own = encoder.state_dict()
    assert own.keys() == expected.keys()
    assert all(torch.equal(own[k], expected[k]) for k in own), name


def test_an_init_reads_its_source_without_moving_the_callers_seed(tv34_file):
    path, _ = tv34_file
    torch.manual_seed(0)
    init_encoder(f"imagenet:{path}")
    after_file = torch.rand(3)
    torch.manual_seed(0)
    init_encoder("random")
    after_random = torch.rand(3)
    assert torch.equal(after_file, after_random)  # both drew one encoder from the caller's seed
