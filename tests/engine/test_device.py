"""The inference device: auto picks the GPU when there is one; a device the machine lacks is a
one-line error naming --device. Precision: auto is the hardware's mixed precision, recorded."""
from __future__ import annotations

import re

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.engine.device import resolve_device, resolve_precision
from ptxssl.errors import UserError


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, message", [("banana", "not a torch device"), ("cuda:99", "CUDA device(s)"),
                                           ("meta", "cpu, cuda or mps")])
def test_a_device_this_machine_lacks_is_a_one_line_error(name, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        resolve_device(name)
    assert f"--device {name}" in str(err.value).replace("'", "") and "\n" not in str(err.value)


def test_commands_refuse_a_bad_device_before_any_work(tmp_path):
    for args in (["predict", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "s.csv")],
                 ["embed", "--encoder", "random", "--data", str(tmp_path / "c.h5"), "--out", str(tmp_path / "e.h5")]):
        result = CliRunner().invoke(cli, [*args, "--device", "banana"])
        assert result.exit_code == 2 and "--device" in result.output, result.output


# --- precision --------------------------------------------------------------------------------

def test_auto_precision_is_the_fields_default_for_the_hardware(monkeypatch):
    assert resolve_precision("auto", "cpu") == resolve_precision("auto", "mps") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # Ampere and newer
    assert resolve_precision("auto", "cuda") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100, T4
    assert resolve_precision("auto", "cuda") == "16-mixed"
    assert resolve_precision("32-true", "cuda") == "32-true"  # an explicit choice stays
    with pytest.raises(UserError, match=r"--precision 'fp8'.*auto, 32-true, 16-mixed, bf16-mixed"):
        resolve_precision("fp8", "cpu")


def test_autocast_runs_convolutions_in_the_chosen_dtype():
    from ptxssl.engine.device import autocast

    conv, x = torch.nn.Conv2d(1, 4, 3), torch.rand(2, 1, 8, 8)
    with autocast(torch.device("cpu"), "bf16-mixed"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "32-true"):
        assert conv(x).dtype == torch.float32


def test_embed_in_bf16_is_close_to_float32_and_says_so(nih_cache, tmp_path):
    from ptxssl.analysis.embed import embed_cache

    torch.manual_seed(0)  # the same random weights in both
    full = embed_cache("random", nih_cache, tmp_path / "fp32.h5", device="cpu", precision="32-true", progress=False)
    torch.manual_seed(0)
    half = embed_cache("random", nih_cache, tmp_path / "bf16.h5", device="cpu", precision="bf16-mixed", progress=False)
    assert (full.attrs["precision"], half.attrs["precision"]) == ("32-true", "bf16-mixed")
    assert half.features.dtype == np.float32 and not np.array_equal(half.features, full.features)  # it ran in bf16
    # bf16 keeps 8 bits of mantissa (relative error ~4e-3 per op); 36 layers of it stay well inside 5 %
    cos = (half.features * full.features).sum(1) / np.linalg.norm(half.features, axis=1) / np.linalg.norm(
        full.features, axis=1)
    assert cos.min() > 0.95


def test_training_records_what_auto_became_and_runs_channels_last(nih_cache, tmp_path):
    import json

    from ptxssl.pretrain.run import pretrain, resolve_config

    seen = []

    class Layout(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
            seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last))

    for flag in (True, False):
        cfg, mcfg = resolve_config("ae", None, {"data": str(nih_cache), "out": str(tmp_path / f"cl{flag}"),
                                                "max_steps": 1, "batch_size": 8, "workers": 0, "probe": False,
                                                "channels_last": flag})
        pretrain(cfg, mcfg, progress=False, callbacks=[Layout()])
        runtime = json.loads((tmp_path / f"cl{flag}" / "runtime.json").read_text())
        assert runtime["precision"] == resolve_precision("auto", runtime["device"])  # the config said auto
        assert runtime["channels_last"] is flag and runtime["world_size"] == 1
    assert seen == [True, False]
