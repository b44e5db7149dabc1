"""Data commands: `synth`, `prepare`, `info`."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ptxssl.cli.common import cli, echo_config, numbers
from ptxssl.datasets.semisynth.render import Style
from ptxssl.errors import UserError
from ptxssl.datasets.sources import SOURCES


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", type=int, default=None,
              help="Images per format [default: 200; with --backgrounds: one per background].")
@click.option("--size", default=256, help="Image side in pixels (with --backgrounds: the longer side).")
@click.option("--positive-fraction", default=0.3, help="Share of studies (backgrounds) with a pneumothorax.")
@click.option("--seed", default=0, help="Random seed; the same seed gives the same files.")
@click.option("--format", "fmt", default="all",
              type=click.Choice(["siim", "chestxray14", "chexpert", "candid", "all"]),
              help="Which dataset layout to write (all: siim, chestxray14 and chexpert).")
@click.option("--workers", default=2, help="Processes rendering images.")
@click.option("--backgrounds", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Semi-synthetic SIIM data: real radiographs (PNG/JPEG/DICOM) under this folder as backgrounds.")
@click.option("--masks", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --backgrounds: real mask shapes from SIIM's train-rle.csv (default: procedural rims).")
@click.option("--paired", is_flag=True, help="With --backgrounds: every background gives a negative and a positive.")
@click.option("--min-inside", default=0.7, show_default=True,
              help="With --backgrounds: share of a mask shape that must lie over the lung fields.")
@click.option("--texture-loss", default=Style.texture_loss, show_default=True,
              help="With --backgrounds: share of fine texture (vessels) removed inside the mask.")
@click.option("--darken", default=Style.darken, show_default=True,
              help="With --backgrounds: relative intensity drop inside the mask.")
@click.option("--pleural-line", default=Style.line, show_default=True,
              help="With --backgrounds: brightness of the visceral pleural line.")
def synth(out: Path, count: int | None, size: int, positive_fraction: float, seed: int, fmt: str, workers: int,
          backgrounds: Path | None, masks: Path | None, paired: bool, min_inside: float, texture_loss: float,
          darken: float, pleural_line: float) -> None:
    """Write synthetic chest X-rays in the real datasets' formats to OUT/<format>/.

    SIIM-ACR DICOM + train-rle.csv, ChestX-ray14 PNG + Data_Entry_2017.csv, CheXpert JPEG +
    train.csv, each with qc_anomalies.csv (flipped / rotated / inverted images).

    With --backgrounds DIR: SIIM only, semi-synthetic — real radiographs from DIR with a
    pneumothorax rendered into real (--masks) or procedural mask shapes over their lung fields.
    """
    t0 = time.perf_counter()
    if backgrounds is not None:
        written = _synth_on_backgrounds(out, backgrounds, masks, count, size, positive_fraction, paired, seed,
                                        fmt, workers, min_inside, Style(texture_loss, darken, pleural_line))
    else:
        from ptxssl.datasets.synth import DEFAULT_FORMATS, synthesize

        if masks is not None or paired:
            raise UserError("--masks and --paired work with --backgrounds DIR only")
        count = 200 if count is None else count
        echo_config("synth", {"out": out, "count": count, "size": size, "positive_fraction": positive_fraction,
                              "seed": seed, "format": fmt, "workers": workers})
        written = synthesize(out, count=count, size=size, positive_fraction=positive_fraction, seed=seed,
                             formats=DEFAULT_FORMATS if fmt == "all" else (fmt,), workers=workers)
    dt = time.perf_counter() - t0
    for name, n in written.items():
        click.echo(f"  {out / name}: {n} images")
    click.echo(f"done in {dt:.1f} s ({sum(written.values()) / dt:.0f} images/s)")


def _synth_on_backgrounds(out: Path, backgrounds: Path, masks: Path | None, count: int | None, size: int,
                          positive_fraction: float, paired: bool, seed: int, fmt: str, workers: int,
                          min_inside: float, style: Style) -> dict[str, int]:
    from ptxssl.datasets.semisynth.write import synthesize_on_backgrounds

    if fmt not in ("siim", "all"):
        raise UserError(f"--format {fmt}: --backgrounds writes the SIIM layout only; use --format siim")
    echo_config("synth", {"out": out, "backgrounds": backgrounds, "masks": masks or "procedural",
                          "count": count or "every background", "size": size,
                          "positive_fraction": "paired" if paired else positive_fraction, "seed": seed,
                          "min_inside": min_inside, "texture_loss": style.texture_loss, "darken": style.darken,
                          "pleural_line": style.line, "workers": workers})
    summary = synthesize_on_backgrounds(out, backgrounds, masks, size=size, positive_fraction=positive_fraction,
                                        paired=paired, count=count, seed=seed, style=style,
                                        min_inside=min_inside, workers=workers)
    click.echo(f"  {summary['backgrounds']} backgrounds: {summary['images']} images, {summary['positives']} "
               f"with a pneumothorax, {summary['skipped']} skipped (listed in {out / 'siim' / 'skipped.csv'})")
    return {"siim": summary["images"]}


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, type=click.Choice(list(SOURCES)), help="Layout of SRC.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Cache file to write (.h5).")
@click.option("--size", default=256, help="Side of the square cached images (letterboxed: aspect kept, zero-padded).")
@click.option("--workers", default=2, help="Decoding processes.")
@click.option("--on-error", default="stop", type=click.Choice(["stop", "skip"]),
              help="skip: record unreadable files in OUT.rejects.csv and go on.")
@click.option("--seed", default=0, help="Seed of the patient-level train/val/test split.")
@click.option("--split", "fractions", default="0.8,0.1,0.1", help="train,val,test fractions.")
@click.option("--labels-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SIIM / CANDID: the RLE label file, if not in SRC. folder: a CSV of an id column and "
                   "categorical columns (sex, projection, ...), each value a label; a patient_id column keeps "
                   "patients in one split.")
@click.option("--id-column", default="image_id", help="folder --labels-csv: the column naming each image.")
@click.option("--label-columns", default="", help="folder --labels-csv: the columns to use, comma-separated "
                                                  "[default: every text column with 2-10 values].")
@click.option("--rle", default="siim", type=click.Choice(["siim", "absolute"]),
              help="CANDID: how EncodedPixels are written (siim: relative offsets; absolute: 1-based starts).")
@click.option("--uncertainty", default="zeros", type=click.Choice(["ones", "zeros", "ignore"]),
              help="CheXpert: how uncertain (-1) labels are read (ignore = unknown/NaN).")
@click.option("--all-views", is_flag=True, help="CheXpert: keep lateral views too (default: frontal only).")
@click.option("--channels", default="raw",
              help="raw, or raw plus contrast-equalised copies for a 3-channel input: raw,clahe,he.")
@click.option("--overwrite", is_flag=True, help="Rebuild OUT if it exists.")
def prepare(src: Path, dataset: str, out: Path, size: int, workers: int, on_error: str, seed: int,
            fractions: str, labels_csv: Path | None, id_column: str, label_columns: str, rle: str,
            uncertainty: str, all_views: bool, channels: str, overwrite: bool) -> None:
    """Decode a raw dataset folder SRC once into an HDF5 cache read by all training stages.

    Resumable: rerun the same command after an interruption and it continues.
    """
    from ptxssl.datasets.cache import prepare as run

    split = numbers(fractions, "--split", 3)
    options = {"siim": {"labels_csv": labels_csv}, "candid": {"labels_csv": labels_csv, "rle": rle},
               "chexpert": {"uncertainty": uncertainty, "frontal_only": not all_views},
               "folder": {"labels_csv": labels_csv, "id_column": id_column, "label_columns": label_columns}
               }.get(dataset, {})
    echo_config("prepare", dict(src=src, dataset=dataset, out=out, size=size, workers=workers,
                                 on_error=on_error, seed=seed, split=fractions, channels=channels, **options))
    summary = run(src, dataset, out, size=size, workers=workers, on_error=on_error, seed=seed,
                  fractions=split, overwrite=overwrite, channels=channels, **options)
    for note in summary["notes"]:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {out}: {summary['images']} images"
               + (f", {summary['rejected']} rejected (see {out}.rejects.csv)" if summary["rejected"] else ""))


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the copy (PNG) and its qc_anomalies.csv.")
@click.option("--fraction", default=0.15, type=float, help="Share of the images given an anomaly.")
@click.option("--kinds", default="flipped,rotated,inverted", help="Anomalies, in turn: flipped, rotated, inverted.")
@click.option("--seed", default=0, help="Seed of which images, and of each rotation's direction.")
@click.option("--workers", default=2, help="Decoding processes.")
def plant(src: Path, out: Path, fraction: float, kinds: str, seed: int, workers: int) -> None:
    """Copy an image folder SRC with known QC anomalies (flipped, rotated, inverted) planted in a
    share of its films, and the answer key qc_anomalies.csv, to score `ptxssl anomaly` on real films.

    Every image is rewritten as 8-bit PNG, planted or not, so only the anomaly tells them apart.
    Then: ptxssl prepare OUT --dataset folder [--labels-csv SRC_LABELS] --out cache.h5
    """
    from ptxssl.datasets.plant import parse_kinds, plant_anomalies

    chosen = parse_kinds(kinds)
    echo_config("plant", {"src": src, "out": out, "fraction": fraction, "kinds": ",".join(chosen), "seed": seed,
                          "workers": workers})
    summary = plant_anomalies(src, out, fraction=fraction, kinds=chosen, seed=seed, workers=workers)
    click.echo(f"wrote {summary['images']} images to {out}: " + ", ".join(f"{summary[k]} {k}" for k in chosen)
               + f" (answer key: {out / 'qc_anomalies.csv'})")


@cli.command()
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(cache: Path, as_json: bool) -> None:
    """Print counts, image size, splits and label balance of a cache."""
    from ptxssl.datasets.cache import cache_info

    summary = cache_info(cache)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['path']}: {summary['kind']}, {summary['images']} images of "
               f"{summary['size']}x{summary['size']} from {summary['patients']} patients")
    click.echo("  split: " + ", ".join(f"{k} {v}" for k, v in summary["split"].items()))
    click.echo(f"  source: {summary['source']}")
    for name, c in summary.get("labels", {}).items():
        n = summary["images"] - c["unknown"]
        click.echo(f"  {name:<28} {c['positive']:>6} positive / {n} known ({c['positive'] / max(n, 1):.1%})")
    if "anomalies" in summary:
        click.echo("  QC anomalies: " + (", ".join(f"{k} {v}" for k, v in summary["anomalies"].items()) or "none"))
    for note in summary["notes"]:
        click.echo(f"  note: {note}")
