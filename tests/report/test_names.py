"""Method titles come from the method registry, archs from the runs' own files."""
from __future__ import annotations

import pytest
import yaml

from ptxssl.pretrain.methods import METHODS
from ptxssl.report import DISPLAY_NAMES, METHOD_ORDER, arch_title, method_title, random_note
from ptxssl.report.names import demo_arch, run_arch, run_method

from .fakes import write_json


def test_every_registered_method_has_a_title_and_the_report_uses_it():
    for name, cls in METHODS.items():
        assert isinstance(cls.title, str) and cls.title.strip(), f"{cls.__name__} has no title"
        assert method_title(name) == cls.title
    assert method_title("moco") == "MoCo v2"  # the old copy in the report said "MoCo"
    assert DISPLAY_NAMES == {name: cls.title for name, cls in METHODS.items()}
    assert METHOD_ORDER == tuple(METHODS)


def test_an_unknown_method_falls_back_to_its_name():
    assert method_title("dino") == "dino"


@pytest.mark.parametrize("arch, title", [("resnet18", "ResNet-18"), ("resnet34", "ResNet-34"),
                                         ("densenet121", "DenseNet-121"), ("vgg13", "VGG-13"),
                                         ("efficientnet-b3", "EfficientNet-B3"), ("mit_b0", "mit_b0")])
def test_arch_title(arch, title):
    assert arch_title(arch) == title


def test_run_arch_and_method_read_the_runs_files(tmp_path):
    pretrain, unfinished, transfer, bare = (tmp_path / n for n in ("a", "b", "c", "moco"))
    write_json(pretrain / "encoder.json", {"method": "byol", "arch": "resnet18"})
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(yaml.safe_dump({"method": "simclr", "arch": "densenet121"}))
    write_json(transfer / "ptxssl.json", {"arch": "vgg13"})
    bare.mkdir()
    assert [run_arch(p) for p in (pretrain, unfinished, transfer, bare)] == ["resnet18", "densenet121", "vgg13", None]
    assert [run_method(p) for p in (pretrain, unfinished, bare)] == ["byol", "simclr", "moco"]


def test_demo_arch_is_the_one_all_runs_share(tmp_path):
    assert demo_arch(tmp_path) is None
    write_json(tmp_path / "pretrain" / "vae" / "encoder.json", {"arch": "resnet18"})
    assert demo_arch(tmp_path) == "resnet18"
    write_json(tmp_path / "pretrain" / "simclr" / "encoder.json", {"arch": "resnet50"})
    assert demo_arch(tmp_path) is None  # they disagree: no one arch to name


def test_random_note_names_the_arch_or_speaks_generically():
    assert random_note("resnet18").startswith("the same ResNet-18 with untrained random weights")
    assert random_note(None).startswith("the same encoder with untrained random weights")
    assert random_note("efficientnet-b3", same=False).startswith("an EfficientNet-B3 with untrained")
