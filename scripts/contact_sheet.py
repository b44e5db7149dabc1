"""Contact sheet of chest X-ray phantoms: the way to check by eye what the generator draws.

    python scripts/contact_sheet.py --out sheet.png --size 256 --count 16 --seed 0

Each tile is titled with its findings; pneumothorax masks are outlined in colour. About a
third of the tiles get a pneumothorax so the masks can be judged; `--lateral` adds lateral
views.
"""
from __future__ import annotations

import argparse
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ptxssl.datasets.phantom import render, sample_findings, sample_patient  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--size", type=int, default=256, help="image size in px")
    ap.add_argument("--count", type=int, default=16, help="number of phantoms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lateral", type=float, default=0.0, help="fraction of lateral views")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    cols = math.ceil(math.sqrt(args.count))
    rows = math.ceil(args.count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.25 * rows), squeeze=False)
    colours = ("#ff3030", "#30c0ff")
    for ax in axes.flat:
        ax.axis("off")
    for ax in axes.flat[: args.count]:
        patient = sample_patient(rng)
        findings = sample_findings(rng, pneumothorax=bool(rng.random() < 0.35))
        view = "lateral" if rng.random() < args.lateral else "frontal"
        ph = render(patient, findings, args.size, rng, view=view)
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
        for mask, colour in zip(ph.pneumothorax, colours):
            ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.6)
        title = ", ".join(sorted(findings)) or "No Finding"
        ax.set_title(("[lat] " if view == "lateral" else "") + title, fontsize=7, wrap=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
