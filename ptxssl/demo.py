"""`ptxssl demo`: every stage end to end on built-in synthetic data.

synth -> prepare -> pretrain (vae, simclr) -> embed -> cluster -> pseudo-label pretraining
-> anomaly -> compare (random vs vae vs simclr vs pseudo on SIIM masks) -> report.

Each stage is skipped when its output is already there, so Ctrl-C and a rerun continue after
the last finished stage (a stage killed midway resumes from its own checkpoints or starts
that stage again; nothing half-written is taken as finished).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptxssl.datasets.cache import cache_info, prepare
from ptxssl.datasets.synth import DEFAULT_FORMATS, synthesize
from ptxssl.encoders import WEIGHTS_FILE
from ptxssl.engine.trainer import CHECKPOINT
from ptxssl.pretrain.run import pretrain, resolve_config
from ptxssl.report import StageTimer, write_report


@dataclass(frozen=True)
class DemoSize:
    """How big each stage runs; `quick` fits in ~3 minutes, `full` in ~15 on 2 CPU cores."""

    count: int  # synthetic images per dataset format
    size: int  # image side, px
    pretrain_steps: int
    pretrain_batch: int
    clusters: int  # pseudo-label classes
    transfer_epochs: int
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    probe: bool = True  # the per-epoch linear probe (its cost dominates very short epochs)
    save_models: bool = True  # each compare cell's UNet (~100 MB): the quick demo keeps scores only


SIZES = {"quick": DemoSize(count=64, size=64, pretrain_steps=20, pretrain_batch=16, clusters=4, transfer_epochs=2,
                           fractions=(0.25, 1.0), seeds=(0,), probe=False, save_models=False),
         "full": DemoSize(count=400, size=64, pretrain_steps=150, pretrain_batch=32, clusters=8, transfer_epochs=6,
                          fractions=(0.1, 1.0), seeds=(0,))}
SIIM_SPLIT = (0.6, 0.2, 0.2)  # enough val images to tune post-processing and test images to score
METHODS = ("vae", "simclr")


def run_demo(out: str | Path, quick: bool = False, echo: Callable[[str], None] = print,
             size: DemoSize | None = None, progress: bool = True) -> dict:
    """Run every stage into `out` (skipping finished ones); return where each output went."""
    from ptxssl.analysis.anomaly import run_anomaly
    from ptxssl.analysis.cluster import run_cluster
    from ptxssl.analysis.embed import embed_cache
    from ptxssl.transfer.compare import compare
    from ptxssl.transfer.run import resolve_config as transfer_config

    out = Path(out)
    s = size or SIZES["quick" if quick else "full"]
    workers = min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    summary: dict = {"out": str(out), "size": s}
    timer = StageTimer(out)  # each stage's time, for the report

    def stage(text: str) -> None:
        echo(f"[{time.perf_counter() - t0:6.1f} s] {text}")
        timer.stage(text)

    data, nih = out / "data", out / "chestxray14.h5"
    if not all((data / f / "qc_anomalies.csv").is_file() for f in DEFAULT_FORMATS):
        stage(f"synth: {s.count} images per format at {s.size} px -> {data}")
        synthesize(data, count=s.count, size=s.size, seed=0, workers=workers, progress=progress)
    for fmt in DEFAULT_FORMATS:
        cache = out / f"{fmt}.h5"
        if not cache.exists():
            stage(f"prepare {fmt} -> {cache}")
            prepare(data / fmt, fmt, cache, size=s.size, workers=workers, progress=progress,
                    **({"fractions": SIIM_SPLIT} if fmt == "siim" else {}))
        info = cache_info(cache)
        stage(f"info {fmt}: {info['images']} images, split {info['split']}")

    def pretrain_stage(method: str, **extra) -> Path:
        run = out / "pretrain" / method
        if not (run / WEIGHTS_FILE).is_file():
            stage(f"pretrain {method}: {s.pretrain_steps} steps on {nih} -> {run}")
            cfg, mcfg = resolve_config(method, None, {
                "data": str(nih), "out": str(run), "max_steps": s.pretrain_steps, "epochs": 10_000,
                "batch_size": s.pretrain_batch, "workers": workers, "probe": s.probe, **extra})
            pretrain(cfg, mcfg, resume=(run / CHECKPOINT).is_file(), overwrite=True, progress=progress)
        return run

    runs = {m: pretrain_stage(m) for m in METHODS}
    embeddings = {}
    for name, encoder in (("vae", runs["vae"]), ("random", "random")):
        emb = out / "embed" / f"{name}.h5"
        if not emb.is_file():
            stage(f"embed {nih} with {name} -> {emb}")
            embed_cache(str(encoder), nih, emb, workers=0, progress=progress)
        embeddings[name] = emb
    clusters = out / "cluster" / "vae"
    if not (clusters / "metrics.json").is_file():
        stage(f"cluster the vae embeddings into {s.clusters} pseudo-labels (PCA + GMM) -> {clusters}")
        run_cluster(embeddings["vae"], clusters, "gmm", pca=0.9, n_clusters=s.clusters, color_by="Cardiomegaly")
    runs["pseudo"] = pretrain_stage("pseudo", labels=str(clusters / "labels.csv"))
    for name, emb in embeddings.items():
        scores = out / "anomaly" / name
        if not (scores / "metrics.json").is_file():
            stage(f"anomaly: GMM on {name} train embeddings, score every image -> {scores}")
            run_anomaly(emb, scores, "gmm")
    grid = out / "compare"
    stage(f"compare random, vae, simclr, pseudo at fractions {s.fractions}, seeds {s.seeds} -> {grid}")
    base = transfer_config(None, {"data": str(out / "siim.h5"), "epochs": s.transfer_epochs, "batch_size": 8,
                                  "workers": 0, "patience": 0, "out": str(grid), "save_model": s.save_models})
    encoders = {"random": "random", **{m: str(r) for m, r in runs.items()}}
    compare(base, encoders, list(s.fractions), list(s.seeds), grid, progress=False,
            echo=lambda line: stage("  " + line))
    stage(f"report -> {out / 'report.html'}")
    md, page = write_report(out)
    summary.update(runs={m: str(r) for m, r in runs.items()}, embeddings={k: str(v) for k, v in embeddings.items()},
                   clusters=str(clusters), compare=str(grid), report=str(page), report_md=str(md))
    stage(f"done: outputs in {out}, the report is {page}")
    return summary
