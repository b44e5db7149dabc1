"""Semi-synthetic transfer table: random init vs an encoder pretrained on the same real radiographs.

    python scripts/semisynth_table.py --backgrounds ../shared/data/mhh-covid/png \
        --masks ../shared/data/siim/train-rle.csv --work /tmp/ptx-semi --method vae \
        --pretrain-steps 300 --epochs 40 --fractions 0.25,1.0 --seeds 0,1,2

Stages (each skipped when its output exists, so a killed run continues):
synth --backgrounds --paired (rendered at --render-size) -> prepare siim (--size, 60/20/20
patient-level split; a background's negative and positive share a patient) -> prepare the
raw radiographs as an unlabelled folder cache -> pretrain --method on its train split (80 % of
the radiographs, drawn independently of the SIIM split: backgrounds of SIIM test images can be
among them, as unlabelled pretraining data would be) -> compare random vs the pretrained encoder.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ptxssl.datasets.cache import cache_info, prepare
from ptxssl.datasets.semisynth.write import synthesize_on_backgrounds
from ptxssl.demo import SIIM_SPLIT
from ptxssl.encoders import WEIGHTS_FILE
from ptxssl.pretrain.run import pretrain, resolve_config
from ptxssl.transfer.compare import compare
from ptxssl.transfer.run import resolve_config as transfer_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backgrounds", type=Path, required=True)
    ap.add_argument("--masks", type=Path, default=None)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--render-size", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--method", default="vae")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--fractions", default="0.25,1.0")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    work, t0 = args.work, time.perf_counter()

    def stage(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {text}", flush=True)

    data, siim, radiographs = work / "data", work / "siim.h5", work / "radiographs.h5"
    if not (data / "siim" / "train-rle.csv").is_file():
        stage("synth on backgrounds")
        print(synthesize_on_backgrounds(data, args.backgrounds, args.masks, size=args.render_size,
                                        paired=True, workers=2, progress=False))
    for src, kind, cache, split in ((data / "siim", "siim", siim, SIIM_SPLIT),
                                    (args.backgrounds, "folder", radiographs, (0.8, 0.1, 0.1))):
        if not cache.exists():
            stage(f"prepare {kind} -> {cache}")
            prepare(src, kind, cache, size=args.size, fractions=split, progress=False)
        stage(f"{cache.name}: {cache_info(cache)['images']} images, split {cache_info(cache)['split']}")
    run = work / "pretrain" / args.method
    if not (run / WEIGHTS_FILE).is_file():
        stage(f"pretrain {args.method}: {args.pretrain_steps} steps on {radiographs}")
        cfg, mcfg = resolve_config(args.method, None, {
            "data": str(radiographs), "out": str(run), "max_steps": args.pretrain_steps, "epochs": 10_000,
            "batch_size": 32, "workers": 0, "probe": False})
        pretrain(cfg, mcfg, overwrite=True, progress=False)
    stage("compare")
    grid = work / "compare"
    base = transfer_config(None, {"data": str(siim), "epochs": args.epochs, "batch_size": 8, "workers": 0,
                                  "patience": 0, "out": str(grid)})
    compare(base, {"random": "random", args.method: str(run)}, [float(f) for f in args.fractions.split(",")],
            [int(s) for s in args.seeds.split(",")], grid, progress=False, echo=lambda line: stage("  " + line))
    stage("done")
    print((grid / "table.md").read_text())


if __name__ == "__main__":
    main()
