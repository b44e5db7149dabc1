"""Published-pipeline tables on a finished transfer grid: post-processing x TTA, and the cascade.

    python scripts/pipeline_table.py --work /tmp/ptx-table --encoders random,vae --fraction 1 --seeds 0,1,2

Reads the segmentation runs `scripts/transfer_table.py` left in WORK/compare/runs (so run
that first), then
1. re-scores each run under doublet / triplet post-processing x no TTA / flip TTA
   (`ptxssl.transfer.rescore`: training never sees these options, so this is what four
   trainings with them would give, on the very same weights);
2. trains one `transfer --task classify` run per encoder and seed with the grid's options
   (into WORK/classify, skipped when finished) and scores segmentation-only vs
   classifier-only vs the cascade on the test split (`cascade_scores`).
Both tables go to stdout and WORK/pipelines.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ptxssl.files import write_text
from ptxssl.engine.config import load_yaml
from ptxssl.transfer.cascade import cascade_scores
from ptxssl.bootstrap import paired_bootstrap
from ptxssl.transfer.compare import cell_name
from ptxssl.transfer.rescore import rescore
from ptxssl.transfer.run import resolve_config, transfer

RULES = (("tuned", "none"), ("tuned", "hflip"), ("triplet", "none"), ("triplet", "hflip"))
COLUMNS = ("siim_dice", "positive_dice", "image_auroc", "recall", "f1")


def spread(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def post_tta_table(work: Path, encoders: list[str], fraction: float, seeds: list[int], stage) -> str:
    rows, dice = [], {}
    for encoder in encoders:
        for seed in seeds:
            run = work / "compare" / "runs" / encoder / cell_name(fraction, seed)
            for post, tta in RULES:
                got = rescore(run, work / "siim.h5", post, tta)
                dice[encoder, seed, post, tta] = got["dice"]
                rows.append({"encoder": encoder, "seed": seed, "post": post, "tta": tta,
                             **{k: got["test"][k] for k in COLUMNS}})
            stage(f"rescored {run}")
    frame = pd.DataFrame(rows)
    lines = ["| encoder | post-processing | TTA | SIIM score | positive Dice | image AUROC | recall | F1 | "
             "Δ SIIM vs doublet, no TTA [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for (encoder, post, tta), g in frame.groupby(["encoder", "post", "tta"], sort=False):
        # per-image differences averaged over seeds, then a paired bootstrap over test images
        diff = np.mean([dice[encoder, s, post, tta] - dice[encoder, s, "tuned", "none"] for s in seeds], axis=0)
        lo, hi = paired_bootstrap(diff)
        delta = "—" if (post, tta) == RULES[0] else f"{diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
        name = {"tuned": "doublet", "triplet": "triplet"}[post]
        lines.append(f"| {encoder} | {name} | {tta} | " + " | ".join(spread(g[k]) for k in COLUMNS) + f" | {delta} |")
    return "\n".join(lines)


def cascade_table(work: Path, encoders: list[str], fraction: float, seeds: list[int], stage) -> str:
    rows = []
    for encoder in encoders:
        for seed in seeds:
            seg = work / "compare" / "runs" / encoder / cell_name(fraction, seed)
            cls = work / "classify" / encoder / cell_name(fraction, seed)
            if not (cls / "metrics.json").is_file():
                saved = load_yaml(seg / "config.yaml")
                cfg = resolve_config(None, {k: saved[k] for k in ("data", "epochs", "batch_size", "workers", "patience",
                                                                   "seed", "encoder", "label_fraction")}
                                     | {"task": "classify", "out": str(cls)})
                t0 = time.perf_counter()
                transfer(cfg, overwrite=True, progress=False)
                stage(f"trained {cls} ({time.perf_counter() - t0:.0f} s)")
            got = cascade_scores(seg, cls, work / "siim.h5")
            for model in ("segmentation", "classifier", "cascade"):
                rows.append({"encoder": encoder, "seed": seed, "model": model, "gated": got["gated"],
                             **{k: got[model].get(k, np.nan) for k in COLUMNS}})
    frame = pd.DataFrame(rows)
    lines = ["| encoder | model | SIIM score | positive Dice | image AUROC | recall | F1 | images gated |",
             "|---|---|---|---|---|---|---|---|"]
    for (encoder, model), g in frame.groupby(["encoder", "model"], sort=False):
        cells = [("—" if g[k].isna().all() else spread(g[k])) for k in COLUMNS]
        gated = spread(g["gated"].astype(float)) if model == "cascade" else "—"
        lines.append(f"| {encoder} | {model} | " + " | ".join(cells) + f" | {gated} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--encoders", default="random,vae")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    t0 = time.perf_counter()

    def stage(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {text}", flush=True)

    encoders, seeds = args.encoders.split(","), [int(s) for s in args.seeds.split(",")]
    text = (f"## Post-processing x TTA (label fraction {args.fraction:g}, seeds {args.seeds}; mean ± std over seeds)\n\n"
            + post_tta_table(args.work, encoders, args.fraction, seeds, stage)
            + f"\n\n## Cascade (label fraction {args.fraction:g}, seeds {args.seeds})\n\n"
            + cascade_table(args.work, encoders, args.fraction, seeds, stage) + "\n")
    write_text(args.work / "pipelines.md", text)
    print("\n" + text)


if __name__ == "__main__":
    main()
