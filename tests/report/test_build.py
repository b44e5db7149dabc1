"""The demo report: every figure present is embedded (HTML) and linked (Markdown) with a
caption, the key numbers are shown, and a missing stage is a note, not a crash."""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from ptxssl import report
from ptxssl.report import write_report

from .fakes import FIGURES, IMG, write_json

REPO = Path(__file__).resolve().parents[2]


def _links(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_every_figure_is_embedded_once_with_a_caption(demo):
    md_path, html_path = write_report(demo)
    assert (md_path, html_path) == (demo / "report.md", demo / "report.html")
    page = html_path.read_text()
    assert page.count(IMG) == len(FIGURES)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(b) for b in embedded) == sorted((demo / f).read_bytes() for f in FIGURES)
    assert page.count("<figcaption>") == len(FIGURES)
    assert "Each dot is one image" in page and "dashed line is the threshold" in page
    assert "reconstruction of each" in page and "two random augmentations" in page
    assert "<script" not in page and "http" not in page  # self-contained: nothing to fetch or run
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == []


def test_markdown_links_the_same_figures_in_the_same_order(demo):
    md_path, html_path = write_report(demo)
    md = md_path.read_text()
    links = _links(md)
    assert sorted(links) == sorted(FIGURES)
    assert all((demo / link).is_file() for link in links)  # relative to the report's folder
    html_order = re.findall(r'alt="Figure \d+: ([^"]+)"', html_path.read_text())
    assert html_order == links
    assert md.count("*Figure ") == len(FIGURES)
    assert "Each dot is one image" in md


def test_key_numbers_are_reported(demo):
    md = write_report(demo)[0].read_text()
    assert "silhouette 0.555" in md and "**4 clusters**" in md
    assert "| finding | 0.153 |" in md and "| anomaly | 0.237 |" in md and "| Cardiomegaly | 0.089 |" in md
    assert "| Hernia |" not in md  # only the most informative findings
    assert "| AUROC (vae) | AP (vae) | AUROC (random) | AP (random) |" in md
    assert "| rotated | 2 | 0.988 | 0.300 | 0.543 | 0.300 |" in md
    assert "| **all anomalies** | 4 | 0.912 | 0.500 | 0.742 | 0.500 |" in md
    assert "| vae | 1 | 0.8125 ± 0.0000 | +0.0625 [+0.0000, +0.1250] |" in md
    assert "Only 4 test images" in md and "30 s in total" in md
    assert "| vae | 20 | 2100.5 | 0.612 |" in md and "No figures: the `pseudo` method" in md
    assert "| pretrain vae: 20 steps | 50.0 |" in md and "info siim" not in md


def test_a_missing_stage_is_noted_not_fatal(demo):
    shutil.rmtree(demo / "anomaly")
    (demo / "compare" / "dice_vs_fraction.png").unlink()
    (demo / report.TIMINGS).unlink()
    md_path, html_path = write_report(demo)
    page, md = html_path.read_text(), md_path.read_text()
    assert page.count(IMG) == len(FIGURES) - 3
    assert len(_links(md)) == len(FIGURES) - 3
    for what in ("Anomaly scores", "Dice-vs-fraction plot", "Stage timings"):
        assert f"{what}: not available" in md
        assert f"<strong>Note:</strong> {what}: not available" in page
    assert "Each dot is one image" in md  # the stages that exist are still there


def test_an_empty_folder_gives_a_report_of_notes(tmp_path):
    md_path, html_path = write_report(tmp_path)
    assert html_path.read_text().count(IMG) == 0
    assert md_path.read_text().count("not available") == 6


def test_unexpected_content_skips_the_section_with_a_note(demo):
    write_json(demo / "cluster" / "vae" / "metrics.json", {"agreement": {"finding": 3}})
    md = write_report(demo)[0].read_text()
    assert "Skipped a section (cluster)" in md
    assert "dashed line is the threshold" in md


def test_pretrain_runs_are_in_registry_order(demo):
    md = write_report(demo)[0].read_text()
    rows = re.findall(r"^\| (\w+) \| 20 \|", md, flags=re.MULTILINE)
    assert rows == ["vae", "simclr", "pseudo"]  # METHODS' order, not alphabetical


def test_a_resnet18_demo_never_says_resnet34(demo):
    """Every file that can record the arch says resnet18: the page names ResNet-18 wherever it names an
    encoder, and never the default ResNet-34 it used to hard-code."""
    for run in ("vae", "simclr", "pseudo"):
        meta = demo / "pretrain" / run / "encoder.json"
        write_json(meta, {**json.loads(meta.read_text()), "arch": "resnet18"})
    (demo / "compare" / "results.csv").write_text(
        "encoder,arch,fraction,siim_dice,seconds\nrandom,resnet18,1,0.75,9.5\nvae,resnet18,1,0.81,20.5\n")
    md_path, html_path = write_report(demo)
    md, page = md_path.read_text(), html_path.read_text()
    for text in (md, page):
        assert "ResNet-34" not in text and "resnet34" not in text
    assert "the same ResNet-18 with untrained random weights" in md  # anomaly's random, from the demo's runs
    assert "| vae | 20 | 2100.5 | 0.612 | β-VAE | ResNet-18 |" in md
    assert "(encoder: ResNet-18)" in md


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("screenshot_report", REPO / "scripts" / "screenshot_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_headless_browser_screenshot_shows_the_page(demo, tmp_path):
    shot = _screenshot_module()
    browser = shot.find_browser()
    if browser is None:
        pytest.skip(f"no headless browser binary on PATH (tried {', '.join(shot.BROWSERS)} and $PTXSSL_BROWSER); "
                    "`apt-get install chromium` provides one")
    from PIL import Image

    write_report(demo)
    out = shot.screenshot(demo / "report.html", tmp_path / "shot.png", width=800, height=6000)
    with Image.open(out) as im:
        width, height = im.size
        extrema = im.convert("L").getextrema()
    assert width == 800 and 1000 < height < 6000  # the page was drawn, and the blank bottom cropped off
    assert extrema[0] < 100  # dark text is on it, not a blank page
