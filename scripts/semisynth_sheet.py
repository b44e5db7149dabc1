"""Contact sheet of semi-synthetic positives: the way to judge the rendering by eye.

    python scripts/semisynth_sheet.py --backgrounds ../shared/data/mhh-covid/png \
        --masks ../shared/data/siim/train-rle.csv --out docs/semisynth_sheet.png

Each sample is three tiles: the background, the rendered positive, and a 2x crop of the
positive around its mask, outlined. Uses the same code as `ptxssl synth --backgrounds` (render_job).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ptxssl.datasets.semisynth.render import Style  # noqa: E402
from ptxssl.datasets.semisynth.write import Job, list_backgrounds, load_background, render_job  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backgrounds", type=Path, required=True)
    ap.add_argument("--masks", default=None, help="SIIM train-rle.csv (default: procedural shapes)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texture-loss", type=float, default=Style.texture_loss)
    ap.add_argument("--darken", type=float, default=Style.darken)
    ap.add_argument("--line", type=float, default=Style.line)
    args = ap.parse_args(argv)
    style = Style(texture_loss=args.texture_loss, darken=args.darken, line=args.line)
    samples = []
    for i, path in enumerate(list_backgrounds(args.backgrounds)[::5]):
        job = Job(i, path, args.backgrounds, ("positive",), args.size, args.seed, Path("."), args.masks, style, 0.7)
        result = render_job(job)
        if "images" in result:
            samples.append((path, load_background(path, args.size), result["images"][0]))
        if len(samples) == args.count:
            break
    rows = (len(samples) + 1) // 2
    fig, axes = plt.subplots(rows, 6, figsize=(18, 3.2 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for k, (path, background, image) in enumerate(samples):
        row = axes.flat[3 * k: 3 * k + 3]
        row[0].imshow(background, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(path.name, fontsize=8)
        row[1].imshow(image["pixels"], cmap="gray", vmin=0, vmax=255)
        row[1].set_title("positive", fontsize=8)
        ys, xs = np.nonzero(image["mask"])
        half = args.size // 4
        top, left = max(0, int(ys.mean()) - half), max(0, int(xs.mean()) - half)
        crop = (slice(top, top + 2 * half), slice(left, left + 2 * half))
        row[2].imshow(image["pixels"][crop], cmap="gray", vmin=0, vmax=255)
        row[2].contour(image["mask"][crop], [0.5], colors="r", linewidths=0.5, linestyles="dotted")
        row[2].set_title(f"2x crop, mask from {image['shape'][-12:]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out} ({len(samples)} positives)")


if __name__ == "__main__":
    main()
