"""`ptxssl demo`: every stage that exists, end to end, on built-in synthetic data.

Each stage is skipped when its output is already there, so Ctrl-C and a rerun continue after
the last finished stage.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ptxssl.datasets.cache import cache_info, prepare
from ptxssl.datasets.synth import FORMATS, synthesize
from ptxssl.pretrain.encoder import WEIGHTS_FILE
from ptxssl.pretrain.engine import CHECKPOINT
from ptxssl.pretrain.run import pretrain, resolve_config

# (images per format, image size, pretraining steps)
SETTINGS = {"quick": (64, 64, 20), "full": (300, 128, 100)}
METHODS = ("vae", "simclr")


def run_demo(out: str | Path, quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run synth -> prepare -> info -> pretrain (vae, simclr); return a summary per stage."""
    out = Path(out)
    count, size, steps = SETTINGS["quick" if quick else "full"]
    workers = min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    summary: dict = {}

    def stage(text: str) -> None:
        echo(f"[{time.perf_counter() - t0:6.1f} s] {text}")

    data = out / "data"
    if not all((data / f / "qc_anomalies.csv").is_file() for f in FORMATS):
        stage(f"synth: {count} images per format at {size} px -> {data}")
        synthesize(data, count=count, size=size, seed=0, workers=workers)
    for fmt in FORMATS:
        cache = out / f"{fmt}.h5"
        if not cache.exists():
            stage(f"prepare {fmt} -> {cache}")
            prepare(data / fmt, fmt, cache, size=size, workers=workers)
        info = cache_info(cache)
        summary[fmt] = info["split"]
        stage(f"info {fmt}: {info['images']} images, split {info['split']}")
    for method in METHODS:
        run = out / "pretrain" / method
        if not (run / WEIGHTS_FILE).is_file():
            stage(f"pretrain {method}: {steps} steps on {out / 'chestxray14.h5'} -> {run}")
            cfg, mcfg = resolve_config(method, None, {
                "data": str(out / "chestxray14.h5"), "out": str(run), "max_steps": steps, "epochs": 1000,
                "batch_size": 16, "workers": workers})
            pretrain(cfg, mcfg, resume=(run / CHECKPOINT).is_file(), overwrite=True)
        summary[method] = str(run / WEIGHTS_FILE)
    stage(f"done: outputs in {out}")
    return summary
