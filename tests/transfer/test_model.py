"""build_unet (the UNet around an init from ptxssl.encoders: seeded decoder, only the encoder
replaced) and the save_model / load_model round trip through smp's own format. Never touches the network."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
import torchvision

from ptxssl.encoders import NORMALIZATION, build_encoder, save_encoder
from ptxssl.errors import UserError
from ptxssl.transfer.model import build_unet, load_model, save_model
from tests.helpers import assert_state_equal, scrambled


def _one_line_error(init: str, in_channels: int = 1, arch: str | None = None) -> str:
    with pytest.raises(UserError) as err:
        build_unet(init, in_channels=in_channels, arch=arch)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_random_is_seeded():
    torch.manual_seed(0)
    a, desc = build_unet("random")
    torch.manual_seed(0)
    b, _ = build_unet("random")
    torch.manual_seed(1)
    c, _ = build_unet("random")
    assert desc == {"init": "random", "spec": "random", "source": None, "sha1": None, "in_channels": 1,
                    "arch": "resnet34"}
    assert a.encoder.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.equal(a.encoder.conv1.weight, b.encoder.conv1.weight)
    assert not torch.equal(a.encoder.conv1.weight, c.encoder.conv1.weight)
    assert not torch.equal(a.decoder.blocks[0].conv1[0].weight, c.decoder.blocks[0].conv1[0].weight)


@pytest.mark.parametrize("as_folder", [False, True])
def test_ptxssl_encoder_lands_tensor_for_tensor(tmp_path, as_folder):
    encoder = scrambled(build_encoder(1), 7)
    weights = save_encoder(encoder, tmp_path / "run", {"in_channels": 1, "method": "simclr"})
    torch.manual_seed(0)
    unet, desc = build_unet(str(tmp_path / "run" if as_folder else weights))
    torch.manual_seed(0)
    reference, _ = build_unet("random")
    assert_state_equal(unet.encoder, encoder.state_dict())
    assert not torch.equal(unet.encoder.conv1.weight, reference.encoder.conv1.weight)
    for name in ("decoder", "segmentation_head"):  # only the encoder is replaced
        for (k, v), w in zip(getattr(unet, name).state_dict().items(),
                             getattr(reference, name).state_dict().values()):
            assert torch.equal(v, w), f"{name}.{k}"
    assert desc["init"] == "encoder" and desc["method"] == "simclr"
    assert desc["source"] == str(weights)
    assert desc["sha1"] == hashlib.sha1(weights.read_bytes()).hexdigest()


def test_imagenet_file_for_other_archs_as_smp_loads_it(tmp_path):
    """imagenet:FILE takes what smp's own encoder for --arch loads: torchvision's densenet121
    state_dict lands (conv0 summed to 1 channel); torchvision's efficientnet_b3 does not fit smp's
    efficientnet-b3 (another implementation), which the error says, naming smp's own file."""
    state = scrambled(torchvision.models.densenet121(weights=None), 2).state_dict()
    torch.save(state, tmp_path / "densenet121.pth")
    unet, desc = build_unet(f"imagenet:{tmp_path / 'densenet121.pth'}", arch="densenet121")
    assert desc["arch"] == "densenet121" and unet.config["encoder_name"] == "densenet121"
    own = unet.encoder.state_dict()
    assert torch.equal(own["features.conv0.weight"], state["features.conv0.weight"].sum(1, keepdim=True))
    shared = [k for k in own if k != "features.conv0.weight"]
    assert len(shared) == len(own) - 1 and all(torch.equal(own[k], state[k]) for k in shared)

    torch.save(torchvision.models.efficientnet_b3(weights=None).state_dict(), tmp_path / "effb3.pth")
    message = _one_line_error(f"imagenet:{tmp_path / 'effb3.pth'}", arch="efficientnet-b3")
    assert str(tmp_path / "effb3.pth") in message and "smp-hub/efficientnet-b3.imagenet" in message
    # a densenet file under the default arch names the arch it fits
    assert "--arch densenet121" in _one_line_error(f"imagenet:{tmp_path / 'densenet121.pth'}")


META = {"image_size": 32, "in_channels": 1, "threshold": 0.4, "min_area_fraction": 0.002,
        "encoder": {"init": "random"}, "data": "synthetic siim cache (fingerprint abc)"}


def test_save_load_roundtrip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model, _ = build_unet("random")
    scrambled(model.decoder, 3)
    model.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
    out = save_model(model, tmp_path / "run", META, "Command: `ptxssl transfer --encoder random`",
                     metrics={"siim_dice": 0.81})
    assert out == tmp_path / "run" / "model"
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    card = (out / "README.md").read_text()
    assert "ptxssl transfer --encoder random" in card and "0.81" in card and "synthetic siim" in card
    meta = json.loads((tmp_path / "run" / "ptxssl.json").read_text())
    assert meta == {"normalization": NORMALIZATION, "arch": "resnet34", **META}

    for where in (tmp_path / "run", tmp_path / "run" / "model"):
        loaded, loaded_meta = load_model(where)
        assert not loaded.training and loaded_meta == meta
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)

    save_model(model, tmp_path / "run", META, "again")  # overwrite: no leftovers beside it
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model", "ptxssl.json"]
    assert "again" in (out / "README.md").read_text()


def test_smp_loads_the_model_without_ptxssl(tmp_path):
    torch.manual_seed(0)
    model, _ = build_unet("random")
    save_model(model.eval(), tmp_path / "run", META, "card")
    x = torch.rand(1, 1, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "y.pt")
    code = ("import sys, torch, segmentation_models_pytorch as smp\n"
            f"m = smp.from_pretrained({str(tmp_path / 'run' / 'model')!r}).eval()\n"
            f"x, y = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'y.pt')!r})\n"
            "with torch.no_grad(): assert torch.equal(m(x), y)\n"
            "assert not any(n.startswith('ptxssl') for n in sys.modules), 'ptxssl was imported'\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE",
                               # the same thread count as this process, so the sums agree bit for bit
                               "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_load_model_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="not a transfer run folder") as err:
        load_model(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    torch.manual_seed(0)
    model, _ = build_unet("random")
    save_model(model, tmp_path / "run", META, "card")
    (tmp_path / "run" / "model" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors"):
        load_model(tmp_path / "run")
    with pytest.raises(ValueError, match="threshold"):
        save_model(model, tmp_path / "other", {k: v for k, v in META.items() if k != "threshold"}, "")
