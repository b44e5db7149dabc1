"""The inference device: auto picks the GPU when there is one; a device the machine lacks is a
one-line error naming --device."""
from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.engine.device import resolve_device
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
