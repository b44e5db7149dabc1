"""Transfer table: random vs SSL-pretrained (vae, simclr) vs pseudo-label encoders on SIIM Dice.

Runs the demo pipeline at a chosen size (synth -> prepare -> pretrain vae / simclr -> embed
-> cluster -> pseudo-label pretraining -> compare) into --work, skipping finished stages, and
prints the compare table (the README's transfer table comes from this script):

    python scripts/transfer_table.py --work /tmp/ptx-table --count 400 --size 64 \
        --pretrain-steps 200 --epochs 8 --fractions 0.1,1.0 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ptxssl.demo import DemoSize, run_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=14)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--fractions", default="0.1,1.0")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    size = DemoSize(count=args.count, size=args.size, pretrain_steps=args.pretrain_steps, pretrain_batch=32,
                    clusters=args.clusters, transfer_epochs=args.epochs,
                    fractions=tuple(float(f) for f in args.fractions.split(",")),
                    seeds=tuple(int(s) for s in args.seeds.split(",")))
    t0 = time.perf_counter()
    run_demo(args.work, size=size, progress=False)
    print(f"\n{args.count} synthetic images per format at {args.size} px; pretraining {args.pretrain_steps} "
          f"steps (batch 32); transfer {args.epochs} epochs (batch 8); {time.perf_counter() - t0:.0f} s in all\n")
    print((args.work / "compare" / "table.md").read_text())


if __name__ == "__main__":
    main()
