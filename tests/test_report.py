"""The demo report: every figure present is embedded (HTML) and linked (Markdown) with a
caption, the key numbers are shown, and a missing stage is a note, not a crash."""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from ptxssl import report
from ptxssl.report import StageTimer, write_report

REPO = Path(__file__).resolve().parents[1]
IMG = '<img src="data:image/png;base64,'
FIGURES = ["pretrain/vae/figures/reconstructions.png", "pretrain/vae/figures/samples.png",
           "pretrain/simclr/figures/views.png", "cluster/vae/umap.png", "anomaly/vae/histogram.png",
           "anomaly/random/histogram.png", "compare/dice_vs_fraction.png"]


def _png(path: Path, value: int) -> None:
    """A tiny distinct PNG (a 2x2 image whose colour depends on `value`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(0.5, 0.5), dpi=20)
    ax.imshow([[value, 0], [0, value]], vmin=0, vmax=len(FIGURES))
    fig.savefig(path)
    plt.close(fig)


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _detection(auroc: float, ap: float, images: int) -> dict:
    return {"auroc": auroc, "average_precision": ap, "recall_at_threshold": 0.5, "images": images}


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A fake demo folder with every output the report reads."""
    d = tmp_path / "demo"
    for i, rel in enumerate(FIGURES, 1):
        _png(d / rel, i)
    for method, loss in (("vae", 2100.5), ("simclr", 3.25)):
        _json(d / "pretrain" / method / "encoder.json", {"method": method, "steps": 20})
        (d / "pretrain" / method / "metrics.csv").write_text(
            f"epoch,loss_epoch,loss_step,probe_auroc,step\n0,,5000,,0\n0,{loss},,0.6123,19\n")
    _json(d / "pretrain" / "pseudo" / "encoder.json", {"method": "pseudo", "steps": 20})
    agreement = {name: {"nmi": nmi, "ari": 0.01, "purity": 0.9, "purity_baseline": 0.85, "images": 64}
                 for name, nmi in (("finding", 0.1535), ("anomaly", 0.2369), ("Cardiomegaly", 0.0894),
                                   ("Mass", 0.0382), ("Edema", 0.0188), ("Hernia", 0.0101))}
    _json(d / "cluster" / "vae" / "metrics.json", {
        "images": 64, "n_clusters": 4, "noise_fraction": 0.0, "sizes": {"0": 31, "2": 30, "1": 2, "3": 1},
        "silhouette": 0.5549, "agreement": agreement, "fit": {"method": "gmm", "pca": {"components": 3}}})
    for name, (auroc, rot) in {"vae": (0.9125, 0.9876), "random": (0.7417, 0.5432)}.items():
        _json(d / "anomaly" / name / "metrics.json", {
            "threshold": 1.0, "labels": {**_detection(auroc, 0.5, 4), "per_kind": {
                "flipped": _detection(0.8, 0.1, 2), "rotated": _detection(rot, 0.3, 2)}},
            "config": {"method": "gmm", "reference": "train", "percentile": 95.0}})
    (d / "compare").mkdir(parents=True, exist_ok=True)
    (d / "compare" / "table.md").write_text(
        "Test SIIM score (mean ± std over 1 seed(s)); Δ = difference from `random`.\n\n"
        "| encoder | label fraction | SIIM score | Δ vs random |\n|---|---|---|---|\n"
        "| random | 1 | 0.7500 ± 0.0000 | — |\n| vae | 1 | 0.8125 ± 0.0000 | +0.0625 [+0.0000, +0.1250] |\n")
    (d / "compare" / "results.csv").write_text(
        "encoder,fraction,siim_dice,seconds\nrandom,1,0.75,9.5\nvae,1,0.81,20.5\n")
    _json(d / "compare" / "runs" / "vae" / "f1-s0" / "metrics.json", {"test": {"n_images": 4}})
    _json(d / report.TIMINGS, {"runs": 1, "stages": {"synth: 64 images": 2.5, "info siim: 64 images": 0.0,
                                                     "pretrain vae: 20 steps": 50.0}})
    return d


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
    _json(demo / "cluster" / "vae" / "metrics.json", {"agreement": {"finding": 3}})
    md = write_report(demo)[0].read_text()
    assert "Skipped a section (cluster)" in md
    assert "dashed line is the threshold" in md


def test_stage_timer_sums_stages_over_runs(tmp_path, monkeypatch):
    clock = iter([0.0, 2.0, 12.0, 100.0, 101.5])  # indented lines read no time
    monkeypatch.setattr(report.time, "perf_counter", lambda: next(clock))
    first = StageTimer(tmp_path)
    pretrain = f"pretrain -> {tmp_path}/pretrain/vae"
    for text in ("synth", pretrain, "  a compare line", "done"):  # indented lines are not stages
        first.stage(text)
    second = StageTimer(tmp_path)  # a rerun: synth is skipped, pretrain resumes
    second.stage(pretrain)
    second.stage("done")
    log = json.loads((tmp_path / report.TIMINGS).read_text())
    assert log == {"runs": 2, "stages": {"synth": 2.0, "pretrain -> pretrain/vae": 11.5}}


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
