"""Building an encoder by arch: names checked with a suggestion, channels refused in one line,
feature sizes and the input convolution read from the built encoder, smp's refusals as UserErrors."""
from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from ptxssl.encoders import STUDY_ARCHS, build_encoder, check_arch, feature_dim, first_conv, input_channels
from ptxssl.encoders.build import layout, smp_build_errors
from ptxssl.errors import UserError


def _meta(in_channels: int, arch: str) -> torch.nn.Module:
    """The encoder on the meta device: its layout and shapes without memory or init cost."""
    with torch.device("meta"):
        return build_encoder(in_channels, arch)


def test_check_arch_returns_known_names_and_suggests_the_nearest_for_a_typo():
    for arch in (*STUDY_ARCHS, "mit_b0", "tu-resnet10t"):
        assert check_arch(arch) == arch
    with pytest.raises(UserError) as err:
        check_arch("resnet343")
    message = str(err.value)
    assert "\n" not in message and "'resnet343'" in message and "did you mean resnet34," in message
    with pytest.raises(UserError, match="did you mean " + ", ".join(STUDY_ARCHS)):  # nothing near: the study archs
        check_arch("zzzz")
    with pytest.raises(UserError):
        check_arch("tu-")  # the timm prefix alone is no encoder


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_build_encoder_refuses_other_channel_counts_in_one_line(channels):
    with pytest.raises(UserError) as err:
        build_encoder(channels)
    message = str(err.value)
    assert "\n" not in message and "--in-channels" in message and f"got {channels}" in message


def test_build_encoder_checks_the_arch_name():
    with pytest.raises(UserError, match="did you mean resnet34"):
        build_encoder(1, "resnet343")


@pytest.mark.parametrize("arch, dim", [("resnet18", 512), ("resnet34", 512), ("densenet121", 1024)])
def test_feature_dim_is_the_channels_of_the_deepest_output(arch, dim):
    encoder = _meta(1, arch)
    assert feature_dim(encoder) == dim
    with torch.device("meta"):  # shapes only: the forward pass on meta tensors computes no values
        deepest = encoder(torch.empty(2, 1, 64, 64))[-1]
    assert deepest.shape == (2, dim, 2, 2)


@pytest.mark.parametrize("arch, conv", [("resnet34", "conv1.weight"), ("densenet121", "features.conv0.weight")])
def test_layout_names_the_first_conv_and_matches_a_built_encoder(arch, conv):
    name, shapes = layout(arch)
    assert name == conv and shapes[conv] == (64, 1, 7, 7)
    real = build_encoder(1, arch)  # on the CPU, as a run builds it
    assert {k: v.shape for k, v in real.state_dict().items()} == shapes
    assert first_conv(real)[0] + ".weight" == conv
    three = layout(arch, 3)[1]
    assert three[conv] == (64, 3, 7, 7) and {k: v for k, v in three.items() if k != conv} == \
        {k: v for k, v in shapes.items() if k != conv}  # only the input convolution depends on the channels


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_input_channels_is_the_first_convs(arch):
    assert input_channels(_meta(3, arch)) == 3
    assert input_channels(_meta(1, arch)) == 1


def test_smp_build_errors_turns_a_refusal_into_a_one_line_user_error():
    with pytest.raises(UserError) as err:
        with smp_build_errors("mit_b0", 1):
            raise ValueError("mit_b0 takes 3 input channels only\nsecond line of smp's message")
    message = str(err.value)
    assert "\n" not in message and "--arch mit_b0" in message and "1 input channel" in message
    assert "takes 3 input channels only" in message and "second line" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback for the user
    with pytest.raises(TypeError):  # a bug is not the user's: it passes through
        with smp_build_errors("resnet34", 1):
            raise TypeError("bug")


def test_build_encoder_reports_smps_refusal_naming_the_arch(monkeypatch):
    def refuse(name, **kwargs):
        raise ValueError(f"{name} cannot take {kwargs['in_channels']} channels")

    monkeypatch.setattr(smp.encoders, "get_encoder", refuse)
    with pytest.raises(UserError, match=r"--arch vgg13: .*\(vgg13 cannot take 3 channels\)"):
        build_encoder(3, "vgg13")


def test_layout_of_an_encoder_smp_cannot_build_on_the_meta_device():
    """smp's mit_b* read tensor values while building (meta tensors have none): layout builds it
    on the CPU instead, so its files save and load like any other arch's."""
    conv, shapes = layout("mit_b0")
    built = build_encoder(1, "mit_b0").state_dict()
    assert conv in built and shapes == {k: v.shape for k, v in built.items()}
