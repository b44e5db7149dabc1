"""The pretraining section: runs titled by the method they recorded, described by their arch."""
from __future__ import annotations

import yaml

from ptxssl.report import build_report, render_markdown, write_report

from .fakes import png, write_json


def _md(d) -> str:
    return render_markdown(build_report(d))


def test_a_moco_run_is_titled_moco_v2(tmp_path):
    """The folder's name says nothing: the title comes from the method in its config.yaml."""
    run = tmp_path / "pretrain" / "run1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "moco", "arch": "resnet34", "lr": 0.001}))
    png(run / "figures" / "views.png", 1)
    md, page = (p.read_text() for p in write_report(tmp_path))
    assert "### run1: MoCo v2" in md
    assert "MoCo v2 learns to embed the two views" in md and "MoCo v2 learns to embed" in page
    assert "| run1 | — | — | — | MoCo v2 | ResNet-34 |" in md


def test_a_resnet18_run_is_described_as_resnet18(tmp_path):
    run = tmp_path / "pretrain" / "vae"
    write_json(run / "encoder.json", {"method": "vae", "arch": "resnet18", "steps": 20})
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "vae", "arch": "resnet18"}))
    md = _md(tmp_path)
    assert "| vae | 20 | — | — | β-VAE | ResNet-18 |" in md
    assert "ResNet-34" not in md


def test_a_run_without_an_arch_shows_none_and_an_unknown_method_its_name(tmp_path):
    write_json(tmp_path / "pretrain" / "mine" / "encoder.json", {"method": "dino", "steps": 5})
    write_json(tmp_path / "pretrain" / "vae" / "encoder.json", {"method": "vae", "steps": 5})
    md = _md(tmp_path)
    assert "| mine | 5 | — | — | dino | — |" in md and "No figures: the `dino` method" in md
    assert md.index("| vae |") < md.index("| mine |")  # registered methods first, unknown ones after
    assert "ResNet" not in md
