"""Builders of fake demo folders: the files each stage writes, without running any stage."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ptxssl import report

IMG = '<img src="data:image/png;base64,'
FIGURES = ["pretrain/vae/figures/reconstructions.png", "pretrain/vae/figures/samples.png",
           "pretrain/simclr/figures/views.png", "cluster/vae/umap.png", "anomaly/vae/histogram.png",
           "anomaly/random/histogram.png", "compare/dice_vs_fraction.png"]


def png(path: Path, value: int) -> None:
    """A tiny distinct PNG (a 2x2 image whose colour depends on `value`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(0.5, 0.5), dpi=20)
    ax.imshow([[value, 0], [0, value]], vmin=0, vmax=len(FIGURES))
    fig.savefig(path)
    plt.close(fig)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _detection(auroc: float, ap: float, images: int) -> dict:
    return {"auroc": auroc, "average_precision": ap, "recall_at_threshold": 0.5, "images": images}


def fake_demo(d: Path) -> Path:
    """A fake demo folder `d` with every output the report reads (no arch recorded anywhere)."""
    for i, rel in enumerate(FIGURES, 1):
        png(d / rel, i)
    for method, loss in (("vae", 2100.5), ("simclr", 3.25)):
        write_json(d / "pretrain" / method / "encoder.json", {"method": method, "steps": 20})
        (d / "pretrain" / method / "metrics.csv").write_text(
            f"epoch,loss_epoch,loss_step,probe_auroc,step\n0,,5000,,0\n0,{loss},,0.6123,19\n")
    write_json(d / "pretrain" / "pseudo" / "encoder.json", {"method": "pseudo", "steps": 20})
    agreement = {name: {"nmi": nmi, "ari": 0.01, "purity": 0.9, "purity_baseline": 0.85, "images": 64}
                 for name, nmi in (("finding", 0.1535), ("anomaly", 0.2369), ("Cardiomegaly", 0.0894),
                                   ("Mass", 0.0382), ("Edema", 0.0188), ("Hernia", 0.0101))}
    write_json(d / "cluster" / "vae" / "metrics.json", {
        "images": 64, "n_clusters": 4, "noise_fraction": 0.0, "sizes": {"0": 31, "2": 30, "1": 2, "3": 1},
        "silhouette": 0.5549, "agreement": agreement, "fit": {"method": "gmm", "pca": {"components": 3}}})
    for name, (auroc, rot) in {"vae": (0.9125, 0.9876), "random": (0.7417, 0.5432)}.items():
        write_json(d / "anomaly" / name / "metrics.json", {
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
    write_json(d / "compare" / "runs" / "vae" / "f1-s0" / "metrics.json", {"test": {"n_images": 4}})
    write_json(d / report.TIMINGS, {"runs": 1, "stages": {"synth: 64 images": 2.5, "info siim: 64 images": 0.0,
                                                          "pretrain vae: 20 steps": 50.0}})
    return d
