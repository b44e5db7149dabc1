"""`ptxssl compare`: encoders x label fractions x seeds, each cell one `transfer` run.

Cells live in OUT/runs/<encoder>/f<fraction>-s<seed>/ and a finished cell (its metrics.json
exists) is skipped on rerun; a cell killed midway resumes from its last checkpoint. The
summary compares every encoder with a baseline (ImageNet when in the grid, else random) by a
paired bootstrap over test images: the same test images are scored by both encoders, so the
per-image differences carry the comparison, not the spread between images.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ptxssl.datasets.cache import read_cache
from ptxssl.encoders import init_arch, is_encoder_file
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_text
from ptxssl.engine.trainer import CHECKPOINT
from ptxssl.bootstrap import auroc_difference, paired_bootstrap
from ptxssl.transfer.protocol import run_splits
from ptxssl.transfer.run import TransferConfig, transfer

RESULT_COLUMNS = ["encoder", "init", "arch", "fraction", "seed", "fold", "labelled_images", "siim_dice",
                  "perfect_detector", "positive_dice", "image_auroc", "recall", "f1", "threshold",
                  "min_area_fraction", "best_epoch", "seconds"]
ALL_EMPTY = "all-empty (no training)"


def grid_arch(arch: str, encoders: dict[str, str]) -> str:
    """The one encoder arch of a grid: `arch` (--arch), else the arch the encoder files share,
    else resnet34. The random / ImageNet rows use it too, so every row compares the same network.

    Raises:
        UserError: before any cell runs, when a file was made for another arch than --arch, or
            when the files are of different archs (one grid per arch).
    """
    found = {name: init_arch(init, arch or None) for name, init in encoders.items() if is_encoder_file(init)}
    archs = sorted(set(found.values()))
    if len(archs) > 1:
        listing = ", ".join(f"{name}: {a}" for name, a in found.items())
        raise UserError(f"--encoder files of different archs ({listing}); a grid compares one arch, so run one "
                        "compare per arch (each with --arch NAME)")
    return archs[0] if archs else init_arch("random", arch or None)


AT_INIT = "-bn-at-init"  # the row of a frozen random encoder read with its BatchNorm at init


def grid_rows(base: TransferConfig, encoders: dict[str, str]) -> dict[str, tuple[str, TransferConfig]]:
    """Each row of the grid: name -> (init, the config its cells run under). A random encoder
    frozen under --frozen-bn precise gets a second row, NAME-bn-at-init, frozen with its
    BatchNorm as it came (the identity), as `ptxssl probe` shows it: the table then says what
    the BatchNorm state alone does to the random baseline (on phantoms it moved positive-image
    Dice more than any pretraining did). A fine-tuned encoder's BatchNorm learns its statistics
    from the first step, so a grid without --freeze-epochs has no such row."""
    rows = {}
    for name, init in encoders.items():
        rows[name] = (init, base)
        if init == "random" and base.freeze_epochs and base.frozen_bn == "precise":
            if name + AT_INIT in encoders:
                raise UserError(f"--encoder {name + AT_INIT}: the name of random encoder {name}'s BN-at-init row; "
                                "choose another name")
            rows[name + AT_INIT] = (init, replace(base, frozen_bn="as-is"))
    return rows


def run_cell(base: TransferConfig, out: Path, init: str, fraction: float, seed: int, progress: bool,
             fold: int = 0) -> dict:
    """One transfer run in `out`, skipped when finished, resumed when interrupted."""
    done = out / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    resume = (out / CHECKPOINT).is_file()
    cfg = replace(base, encoder=init, label_fraction=fraction, label_count=0, seed=seed, fold=fold, out=str(out))
    return transfer(cfg, resume=resume, overwrite=out.exists() and not resume, progress=progress)


def compare(base: TransferConfig, encoders: dict[str, str], fractions: list[float], seeds: list[int],
            out: str | Path, progress: bool = True, echo=print, notes: list[str] = ()) -> pd.DataFrame:
    """Run the grid, then write results.csv, table.md and dice_vs_fraction.png into `out`.

    With `base.folds` = K, each encoder and fraction runs once per fold (with the first seed)
    instead of once per seed: every image is tested exactly once, by the fold that held it
    out. `notes` (e.g. the protocol followed and the run's departures from it) head the table.
    """
    out = Path(out)
    base = replace(base, arch=grid_arch(base.arch, encoders))
    notes = [*notes, f"Every row is a UNet on a {base.arch} encoder."]
    rows = []
    repeats = [(seeds[0], k) for k in range(base.folds)] if base.folds else [(s, 0) for s in seeds]
    positive = (pd.concat([positives_in_test(replace(base, fold=k)) for k in range(base.folds)]) if base.folds
                else positives_in_test(base))  # every test image of the grid, once
    grid = grid_rows(base, encoders)
    notes += [f"`{n}`: the same random weights frozen with their BatchNorm as they came (the identity) instead of "
              "re-estimated on the training images (--frozen-bn precise), to show what the BatchNorm state alone "
              "does." for n in grid if n not in encoders]
    cells = [(n, f, s, k) for n in grid for f in fractions for s, k in repeats]
    for i, (name, fraction, seed, fold) in enumerate(cells, 1):
        which = f"fold {fold}" if base.folds else f"seed {seed}"
        cell = out / "runs" / name / cell_name(fraction, seed, fold if base.folds else -1)
        t0 = time.perf_counter()
        skipped = (cell / "metrics.json").is_file()
        init, cfg = grid[name]
        metrics = run_cell(cfg, cell, init, fraction, seed, progress, fold)
        test, tuned = metrics["test"], metrics["val_tuned"]
        echo(f"[{i}/{len(cells)}] {name} fraction {fraction:g} {which}: SIIM score {test['siim_dice']:.4f}"
             + (" (done before)" if skipped else f" ({time.perf_counter() - t0:.0f} s)"))
        rows.append({"encoder": name, "init": init, "arch": base.arch, "fraction": fraction,
                     "seed": seed, "fold": fold if base.folds else -1,
                     "labelled_images": metrics["labelled_images"], "siim_dice": test["siim_dice"],
                     "perfect_detector": perfect_detector(cell / "test_dice.csv", positive),
                     "positive_dice": test["positive_dice"], "image_auroc": test["image_auroc"],
                     # image-level, at the tuned post-processing; absent from cells run before they existed
                     "recall": test.get("recall", float("nan")), "f1": test.get("f1", float("nan")),
                     "threshold": tuned["threshold"], "min_area_fraction": tuned["min_area_fraction"],
                     "best_epoch": metrics["best_epoch"], "seconds": metrics.get("seconds", float("nan"))})
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    over = f"{base.folds} folds" if base.folds else f"{len(seeds)} seed(s)"
    table = summary_table(results, out / "runs", over, positive)
    write_text(out / "table.md", "".join(f"{n}\n\n" for n in notes) + table)
    dice_vs_fraction(results, out / "dice_vs_fraction.png")
    return results


def baseline_of(names: list[str]) -> str:
    """ImageNet when it is in the grid, else random, else the first encoder."""
    return next((n for n in ("imagenet", "random") if n in names), names[0])


def positives_in_test(cfg: TransferConfig) -> pd.Series:
    """image_id -> True where the test image's cached mask is non-empty (what Dice is scored on)."""
    rows = run_splits(cfg)["test"]
    with read_cache(cfg.data) as h5:
        positive = h5["masks"][rows].reshape(len(rows), -1).any(axis=1)
        return pd.Series(positive, index=h5["ids"].asstr()[rows], name="positive")


def perfect_detector(test_dice: Path, positive: pd.Series) -> float:
    """The SIIM score had every truly negative image been predicted empty: the encoder's own
    masks on positive images, 1 on negatives. Its distance from the encoder's score is what
    false alarms on negative images cost."""
    dice = pd.read_csv(test_dice, index_col="image_id")["dice"]
    return float(dice.where(positive.reindex(dice.index).to_numpy(), 1.0).mean())


def cell_name(fraction: float, seed: int, fold: int = -1) -> str:
    """A cell's folder under runs/<encoder>/: f<fraction>-s<seed>, or f<fraction>-k<fold>."""
    return f"f{fraction:g}-k{fold}" if fold >= 0 else f"f{fraction:g}-s{seed}"


def _cells(runs: Path, results: pd.DataFrame, name: str, fraction: float) -> pd.DataFrame:
    """test_dice.csv of each of an encoder's cells at a fraction, side by side: columns
    (dice | max_prob, cell). Only the grid's own cells count, not other seeds an earlier grid
    left in the same folder; with folds each image appears in the one fold that tested it."""
    cells = results[(results["encoder"] == name) & (results["fraction"] == fraction)]
    names = [cell_name(fraction, seed, fold) for seed, fold in zip(cells["seed"], cells["fold"])]
    frames = {cell: pd.read_csv(runs / name / cell / "test_dice.csv", index_col="image_id") for cell in names}
    return pd.concat(frames, axis=1).swaplevel(axis=1)


def _image_scores(cells: pd.DataFrame, folds: bool) -> np.ndarray | None:
    """(runs, n) image scores (max probability) for the AUROC interval: one row per seed, or
    one row from all folds; None for runs written before test_dice.csv had them."""
    if "max_prob" not in cells.columns.get_level_values(0):
        return None
    scores = cells["max_prob"]
    return scores.mean(axis=1).to_numpy()[None] if folds else scores.to_numpy().T


def _delta(diff: np.ndarray) -> str:
    lo, hi = paired_bootstrap(diff)
    return f"{diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"


def summary_table(results: pd.DataFrame, runs: Path, over: str, positive: pd.Series) -> str:
    """Markdown: per encoder and fraction, mean ± std test SIIM score, its perfect-detector
    bound, positive-image Dice, image AUROC, and the paired differences from the baseline in
    all three with bootstrap 95% intervals; an all-empty row (no training) above them all."""
    names = list(dict.fromkeys(results["encoder"]))
    base = baseline_of(names)
    folds = bool((results["fold"] >= 0).any())
    empty = pd.DataFrame({("dice", "all-empty"): (~positive).astype(float)})  # predicting nothing anywhere
    lines = [f"Test SIIM score (mean ± std over {over}); perfect detector = the same masks with every truly "
             f"negative image predicted empty; Δ = difference from `{base}` in SIIM score, positive-image Dice and "
             "image AUROC, with a paired bootstrap 95% interval over test images (per-image Dice averaged over "
             "seeds, AUROC averaged over runs; with folds each image counts once, from the fold that tested it). "
             f"{len(positive)} test images, {int(positive.sum())} with a pneumothorax.", "",
             "| encoder | label fraction | labelled images | SIIM score | perfect detector | positive Dice | "
             f"image AUROC | Δ SIIM vs {base} | Δ positive Dice | Δ AUROC |", "|---|---|---|---|---|---|---|---|---|---|"]

    def deltas(cells: pd.DataFrame, fraction: float) -> list[str]:
        if not ((results["encoder"] == base) & (results["fraction"] == fraction)).any():
            return ["—"] * 3
        ref = _cells(runs, results, base, fraction).reindex(cells.index)
        diff = (cells["dice"].mean(axis=1) - ref["dice"].mean(axis=1)).to_numpy()
        pos = positive.reindex(cells.index).to_numpy()
        shown = [_delta(diff), _delta(diff[pos]) if pos.any() else "—"]
        mine, theirs = _image_scores(cells, folds), _image_scores(ref, folds)
        if mine is None or theirs is None or pos.all() or not pos.any():
            return shown + ["—"]
        d, lo, hi = auroc_difference(pos, mine, theirs)
        return shown + [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"]

    def spread(g: pd.DataFrame, column: str) -> str:
        return f"{g[column].mean():.4f}" + (f" ± {g[column].std(ddof=1):.4f}" if len(g) > 1 else "")

    for fraction in dict.fromkeys(results["fraction"]):
        shown = deltas(empty, fraction)[:2] + ["—"]  # no image scores: every image is called empty
        lines.append(f"| {ALL_EMPTY} | {fraction:g} | 0 | {empty['dice'].to_numpy().mean():.4f} | — | 0 | — | "
                     + " | ".join(shown) + " |")
    for (name, fraction), g in results.groupby(["encoder", "fraction"], sort=False):
        shown = ["—"] * 3 if name == base else deltas(_cells(runs, results, name, fraction), fraction)
        lines.append(f"| {name} | {fraction:g} | {int(g['labelled_images'].mean())} | {spread(g, 'siim_dice')} | "
                     f"{spread(g, 'perfect_detector')} | {g['positive_dice'].mean():.4f} | "
                     f"{spread(g, 'image_auroc')} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def dice_vs_fraction(results: pd.DataFrame, path: Path) -> Path:
    """Mean ± std test score against the label fraction (log axis), one line per encoder."""
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    for name, g in results.groupby("encoder", sort=False):
        stats = g.groupby("fraction")["siim_dice"].agg(["mean", "std"]).fillna(0)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training labels used (log scale)")
    ax.set_ylabel("test SIIM score (mean Dice per image)")
    ax.set_title("Pneumothorax segmentation vs label budget")
    ax.grid(alpha=0.3)
    ax.legend(title="encoder init")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
