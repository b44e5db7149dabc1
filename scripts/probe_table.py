"""Probe table: does a CPU pretraining beat a random-init encoder?

Makes a synthetic ChestX-ray14-format cache, pretrains each method, and probes every encoder
(a ridge linear probe and a kNN vote on frozen pooled features -> val + test AUROC per NIH
finding) next to a random-init encoder, with the same probes:

    python scripts/probe_table.py --work /tmp/probe64big --count 8000 --size 64 --steps 300 \
        --methods ae,vae,simclr,moco,byol --per-finding --curve

`--methods ae:3000,simclr` gives one method its own step count; `--augment moco-cxr` trains the
two-view methods on MoCo-CXR's views (its runs are kept apart from the standard ones).
`pseudo` trains on pseudo-labels made here as the demo makes them: the --pseudo-from run's
embeddings (default vae, listed before it), PCA to 90 % of the variance, a 14-component GMM.
`--work DIR` keeps the cache and the runs: a finished run is reused, an interrupted one resumes
from its last checkpoint, so a long table can be built over several sessions. `supervised`
(the 14 weak labels) is allowed as a reference: what a probe reaches when the encoder was
trained on the labels.
Each row's Δ vs random comes with a paired bootstrap 95 % interval over the held-out images.
The probing is `ptxssl probe`'s (ptxssl/analysis/probe.py): every encoder under the same
BatchNorm protocol (re-estimated on the probe's train images), random init also with its
BatchNorm at init, labelled, so the table shows what the BatchNorm state alone does.

The probes are fitted on up to --probe-images train images and scored on the val + test splits
(more held-out positives than val alone), choosing its regularisation per finding by
cross-validation on the train images (see ptxssl/pretrain/probe.py). `--per-finding` adds a
table of every finding's AUROC, which shows where encoders differ and where nothing does.

Prints Markdown tables (the README's pretraining table comes from this script).
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ptxssl.analysis.plots import save_figure
from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize
from ptxssl.files import write_text
from ptxssl.analysis.embed import load_embedder
from ptxssl.analysis.probe import own_heads, probe_encoders, table
from ptxssl.encoders import WEIGHTS_FILE
from ptxssl.engine.trainer import CHECKPOINT
from ptxssl.pretrain.methods import get_method
from ptxssl.pretrain.methods.two_view import TwoViewMethod
from ptxssl.pretrain.probe import probe_encoder
from ptxssl.pretrain.run import pretrain, resolve_config


def make_cache(work: Path, args: argparse.Namespace) -> Path:
    cache = work / "nih.h5"
    if not cache.is_file():
        synthesize(work, count=args.count, size=args.size, formats=("chestxray14",), seed=args.seed,
                   workers=2, progress=False)
        prepare(work / "chestxray14", "chestxray14", cache, size=args.size, workers=2, seed=args.seed,
                progress=False)
    return cache


def pseudo_labels(source: Path, cache: Path, work: Path) -> Path:
    """labels.csv of a 14-component GMM on the PCA-90 % embeddings of the run `source`."""
    from ptxssl.analysis.cluster import run_cluster
    from ptxssl.analysis.embed import embed_cache

    folder = work / "pseudo-labels" / source.name
    if not (folder / "labels.csv").is_file():
        embed_cache(str(source), cache, folder / "embeddings.h5", progress=False)
        run_cluster(folder / "embeddings.h5", folder, "gmm", pca=0.9, n_clusters=14, umap=False)
    return folder / "labels.csv"


def train_run(name: str, steps: int, cache: Path, work: Path, args: argparse.Namespace,
              done: dict[str, Path]) -> tuple[str, Path, float]:
    """(table label, run folder, seconds its training took) of `name` after `steps` steps; a
    finished run is reused, and a resumed one counts the resumed part only. `done`: the runs
    made so far, by method (pseudo's labels come from one of them)."""
    views = args.augment if issubclass(get_method(name), TwoViewMethod) and args.augment != "standard" else ""
    out = work / "runs" / (f"{name}-{steps}-{views}" if views else f"{name}-{steps}")
    timing = out / "seconds.txt"
    extra = {"augment": views} if views else {}
    if name == "pseudo":
        if args.pseudo_from not in done:
            raise SystemExit(f"pseudo needs --pseudo-from {args.pseudo_from} listed before it in --methods")
        extra["labels"] = str(pseudo_labels(done[args.pseudo_from], cache, work))
    if not (out / WEIGHTS_FILE).is_file():
        cfg, mcfg = resolve_config(name, None, {
            "data": str(cache), "out": str(out), "max_steps": steps, "epochs": 100_000,
            "batch_size": args.batch_size, "seed": args.seed, "probe": args.curve, "workers": 2, **extra})
        t0 = time.perf_counter()
        pretrain(cfg, mcfg, resume=(out / CHECKPOINT).is_file(), progress=args.progress)
        write_text(timing, f"{time.perf_counter() - t0:.1f}\n")
    return (f"{name}, {views} views" if views else name), out, float(timing.read_text())


def probe_curve(run: Path) -> list[tuple[int, float]]:
    """(step, probe AUROC) pairs logged by the trainer's probe callback."""
    with open(run / "metrics.csv") as f:
        return [(int(r["step"]), float(r["probe_auroc"])) for r in csv.DictReader(f) if r.get("probe_auroc")]


def thinned(curve: list, points: int = 12) -> list:
    """About `points` evenly spaced items of `curve`, always with its last."""
    kept = curve[::max(1, len(curve) // points)]
    return kept + curve[-1:] if kept[-1] != curve[-1] else kept


def plot_curves(curves: dict[str, list[tuple[int, float]]], reference: float, path: Path) -> None:
    """The trainer's probe against steps for each run, random init as a dashed line."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for run, curve in curves.items():
        ax.plot(*zip(*curve), marker=".", label=run)
    ax.axhline(reference, color="black", linestyle="--", label="random init")
    ax.set(xlabel="optimizer steps", ylabel="linear probe AUROC (val)", title="Probe while pretraining")
    ax.legend(fontsize="small")
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=800)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=150, help="steps for methods given without :STEPS")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="ae,vae,simclr,moco,byol", help="comma list of NAME or NAME:STEPS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-images", type=int, default=1024)
    ap.add_argument("--work", type=Path, help="keep the cache and runs here (default: a temporary folder)")
    ap.add_argument("--per-finding", action="store_true", help="also print each finding's AUROC")
    ap.add_argument("--augment", default="standard", help="view augmentation of SimCLR / MoCo / BYOL")
    ap.add_argument("--progress", action="store_true", help="show the training progress bars")
    ap.add_argument("--pseudo-from", default="vae", help="the method whose embeddings pseudo's labels cluster")
    ap.add_argument("--curve", action="store_true",
                    help="log the trainer's own probe (val split) every epoch; print it against steps "
                         "(and plot it to WORK/probe_curve.png)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = make_cache(work, args)
        encoders, seconds, curves, done = {"random": "random"}, {}, {}, {}
        for item in args.methods.split(","):
            name, _, steps = item.partition(":")
            steps = int(steps or args.steps)
            label, out, took = train_run(name, steps, cache, work, args, done)
            done[name] = out
            encoders[f"{label} ({steps})"], seconds[f"{label} ({steps})"] = str(out), took
            curves[f"{label} ({steps})"] = probe_curve(out)
        # every encoder the way `ptxssl probe` reads it: same images, BatchNorm re-estimated on the
        # probe's train images, random init also with its BatchNorm at init
        rows, labels, names = probe_encoders(encoders, cache, max_images=args.probe_images, seed=args.seed,
                                             progress=print if args.progress else None, pixels=8)
        torch.manual_seed(args.seed)
        random_model, _ = load_embedder("random")
        # the callback's probe (ProbeCallback defaults: val split, 512 train images, BN precise) of random init
        curve_reference = probe_encoder(random_model.embed, str(cache), model=random_model)
    print(f"\n{args.count} synthetic ChestX-ray14 images at {args.size} px, batch {args.batch_size}, seed {args.seed}; "
          f"probes fitted on {args.probe_images} train images, scored on {labels.shape[1]} val + test images")
    print("CPU time of each pretraining: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    text, _ = table(rows, labels, names, "random")
    print("\n" + (text if args.per_finding else text.split("\n\nlinear probe AUROC per label")[0] + "\n"))
    print(own_heads(encoders))
    curves = {run: curve for run, curve in curves.items() if curve}
    if curves:
        print(f"\nthe trainer's probe (val split) on the random-init encoder: {curve_reference:.3f}")
    for run, curve in curves.items():
        print(f"probe during training, {run}: " + ", ".join(f"{s}: {a:.3f}" for s, a in thinned(curve)))
    if curves and args.work:
        plot_curves(curves, curve_reference, args.work / "probe_curve.png")
        print(f"plot: {args.work / 'probe_curve.png'}")


if __name__ == "__main__":
    main()
