"""Linear-probe table: does a short CPU pretraining beat a random-init encoder?

Makes a synthetic ChestX-ray14-format cache, pretrains each method briefly, and probes every
encoder (logistic regression on frozen pooled features -> mean val AUROC over the 14 NIH
findings) next to a random-init encoder, with the same probe:

    python scripts/probe_table.py --count 1600 --size 64 --steps 300 --methods ae,vae,simclr,moco,byol

The probe is fitted on up to --probe-images train images and scored on the val + test splits
(more held-out positives than val alone), choosing its regularisation per label by 3-fold
search on the train images (see ptxssl/pretrain/probe.py).

Prints a Markdown table (the README's pretraining table comes from this script).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize
from ptxssl.pretrain.encoder import build_encoder, load_encoder, pooled
from ptxssl.pretrain.probe import probe_encoder
from ptxssl.pretrain.run import pretrain, resolve_config


def probe(embed, cache: Path, args: argparse.Namespace) -> float:
    return probe_encoder(embed, str(cache), max_images=args.probe_images, eval_split=["val", "test"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=800)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="ae,vae,simclr,moco,byol")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-images", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp, count=args.count, size=args.size, formats=("chestxray14",), seed=args.seed,
                   workers=2, progress=False)
        cache = tmp / "nih.h5"
        prepare(tmp / "chestxray14", "chestxray14", cache, size=args.size, workers=2, seed=args.seed, progress=False)
        torch.manual_seed(args.seed)
        random_encoder = build_encoder(1).eval()
        rows = [("random init", 0, 0.0, probe(lambda x: pooled(random_encoder, x), cache, args))]
        for name in args.methods.split(","):
            cfg, mcfg = resolve_config(name, None, {
                "data": str(cache), "out": str(tmp / name), "max_steps": args.steps, "epochs": 10_000,
                "batch_size": args.batch_size, "seed": args.seed, "probe": False, "workers": 2})
            t0 = time.perf_counter()
            pretrain(cfg, mcfg, progress=False)
            seconds = time.perf_counter() - t0
            encoder, _ = load_encoder(tmp / name)
            encoder.eval()
            rows.append((name, args.steps, seconds, probe(lambda x: pooled(encoder, x), cache, args)))
    print(f"\n{args.count} synthetic ChestX-ray14 images at {args.size} px, batch {args.batch_size}, seed {args.seed}")
    print("\n| encoder | steps | CPU time | probe AUROC (mean over findings, val + test) |")
    print("|---|---|---|---|")
    for name, steps, seconds, auroc in rows:
        print(f"| {name} | {steps} | {seconds:.0f} s | {auroc:.3f} |")


if __name__ == "__main__":
    main()
