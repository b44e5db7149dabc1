"""The `ptxssl` command line: each command parses, calls the library, and prints.

A `UserError` from the library becomes one line on stderr and exit code 2; anything else is
a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ptxssl import __version__
from ptxssl.datasets.sources import SOURCES
from ptxssl.errors import UserError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(2)


def _floats(text: str, option: str, n: int) -> tuple[float, ...]:
    """Parse "0.8,0.1,0.1" for `option`, or fail with a line saying what was expected."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UserError(f"{option} takes {n} comma-separated numbers like 0.8,0.1,0.1 (got {text!r})")
    return values


def _echo_config(title: str, config: dict) -> None:
    click.echo(f"{title}: " + ", ".join(f"{k}={v}" for k, v in config.items()))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="ptxssl")
def cli() -> None:
    """Self-supervised chest X-ray encoders for pneumothorax segmentation.

    \b
    Data flow:  synth/real folder -> prepare -> cache.h5 -> pretrain -> embed/cluster/anomaly
                -> transfer/compare -> predict
    Start with `ptxssl demo`, which runs the stages on built-in synthetic data.
    """


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", default=200, help="Images per format.")
@click.option("--size", default=256, help="Image side in pixels.")
@click.option("--positive-fraction", default=0.3, help="Share of studies with a pneumothorax.")
@click.option("--seed", default=0, help="Random seed; the same seed gives the same files.")
@click.option("--format", "fmt", default="all",
              type=click.Choice(["siim", "chestxray14", "chexpert", "all"]), help="Which dataset layout to write.")
@click.option("--workers", default=2, help="Processes rendering images.")
def synth(out: Path, count: int, size: int, positive_fraction: float, seed: int, fmt: str, workers: int) -> None:
    """Write synthetic chest X-rays in the real datasets' formats to OUT/<format>/.

    SIIM-ACR DICOM + train-rle.csv, ChestX-ray14 PNG + Data_Entry_2017.csv, CheXpert JPEG +
    train.csv, each with qc_anomalies.csv (flipped / rotated / inverted images).
    """
    from ptxssl.datasets.synth import FORMATS, synthesize

    formats = FORMATS if fmt == "all" else (fmt,)
    _echo_config("synth", dict(out=out, count=count, size=size, positive_fraction=positive_fraction,
                               seed=seed, format=fmt, workers=workers))
    t0 = time.perf_counter()
    written = synthesize(out, count=count, size=size, positive_fraction=positive_fraction, seed=seed,
                         formats=formats, workers=workers)
    dt = time.perf_counter() - t0
    for name, n in written.items():
        click.echo(f"  {out / name}: {n} images")
    click.echo(f"done in {dt:.1f} s ({sum(written.values()) / dt:.0f} images/s)")


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
              help="SIIM: the RLE label file, if not in SRC.")
@click.option("--uncertainty", default="zeros", type=click.Choice(["ones", "zeros", "ignore"]),
              help="CheXpert: how uncertain (-1) labels are read (ignore = unknown/NaN).")
@click.option("--all-views", is_flag=True, help="CheXpert: keep lateral views too (default: frontal only).")
@click.option("--overwrite", is_flag=True, help="Rebuild OUT if it exists.")
def prepare(src: Path, dataset: str, out: Path, size: int, workers: int, on_error: str, seed: int,
            fractions: str, labels_csv: Path | None, uncertainty: str, all_views: bool, overwrite: bool) -> None:
    """Decode a raw dataset folder SRC once into an HDF5 cache read by all training stages.

    Resumable: rerun the same command after an interruption and it continues.
    """
    from ptxssl.datasets.cache import prepare as run

    split = _floats(fractions, "--split", 3)
    options = {"siim": {"labels_csv": labels_csv},
               "chexpert": {"uncertainty": uncertainty, "frontal_only": not all_views}}.get(dataset, {})
    _echo_config("prepare", dict(src=src, dataset=dataset, out=out, size=size, workers=workers,
                                 on_error=on_error, seed=seed, split=fractions, **options))
    summary = run(src, dataset, out, size=size, workers=workers, on_error=on_error, seed=seed,
                  fractions=split, overwrite=overwrite, **options)
    for note in summary["notes"]:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {out}: {summary['images']} images"
               + (f", {summary['rejected']} rejected (see {out}.rejects.csv)" if summary["rejected"] else ""))


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
    for note in summary["notes"]:
        click.echo(f"  note: {note}")


def config_options(classes: dict[str, type], skip: tuple[str, ...] = ()):
    """Click options generated from config dataclass fields: one option per field, its help
    text, and its default(s) per config (`classes` maps a label such as a method name to its
    config class). The click default is None, so only what the user typed overrides the
    config file and the method's defaults."""
    import dataclasses

    from ptxssl.pretrain.config import field_help

    specs: dict[str, tuple[type, str]] = {}
    defaults: dict[str, dict[str, object]] = {}
    for label, cls in classes.items():
        for f in dataclasses.fields(cls):
            specs.setdefault(f.name, field_help(cls)[f.name])
            defaults.setdefault(f.name, {})[label] = f.default

    def shown(name: str) -> str:
        values = defaults[name]
        if len(set(map(str, values.values()))) == 1:
            return f"[default: {next(iter(values.values()))}]"
        return "[" + ", ".join(f"{k}: {v}" for k, v in values.items()) + "]"

    def decorate(fn):
        for name, (kind, help_text) in reversed(specs.items()):
            if name in skip:
                continue
            flag = "--" + name.replace("_", "-")
            decl = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
            fn = click.option(decl, name, type=None if kind is bool else kind, default=None,
                              show_default=False, help=f"{help_text} {shown(name)}")(fn)
        return fn
    return decorate


def _pretrain_config_classes() -> dict[str, type]:
    from ptxssl.pretrain.methods import METHODS
    from ptxssl.pretrain.run import PretrainConfig

    return {"all": PretrainConfig, **{name: m.config_class for name, m in METHODS.items()}}


def _method_names() -> list[str]:
    from ptxssl.pretrain.methods import METHODS

    return list(METHODS)


@cli.command()
@click.option("--method", type=click.Choice(_method_names()), default=None,
              help="Pretraining method [default: ae].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file of options (unknown keys are an error); command-line options win.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.ckpt.")
@click.option("--overwrite", is_flag=True, help="Start again in an --out that already holds a run.")
@click.option("--print-config", is_flag=True, help="Print the resolved config (every default) and exit.")
@config_options(_pretrain_config_classes(), skip=("method",))
def pretrain(method: str | None, config_file: Path | None, resume: bool, overwrite: bool,
             print_config: bool, **options) -> None:
    """Pretrain a ResNet-34 encoder on a cache and export encoder.safetensors + encoder.json.

    \b
    Methods: ae (autoencoder), vae (beta-VAE), simclr, moco, byol (contrastive),
    supervised (weak labels), pseudo (cluster pseudo-labels from `ptxssl cluster`).
    Method options apply to the methods that have them (see --print-config).
    """
    import yaml

    from ptxssl.pretrain.config import flat
    from ptxssl.pretrain.run import pretrain as run, resolve_config

    overrides = {k: v for k, v in options.items() if v is not None}  # what the user typed
    if method:
        overrides["method"] = method
    if resume and not config_file and options.get("out") and (Path(options["out"]) / "config.yaml").is_file():
        config_file = Path(options["out"]) / "config.yaml"  # a resumed run keeps its own config
    cfg, method_cfg = resolve_config(method or "ae", config_file, overrides)
    resolved = flat(cfg, method_cfg)
    if print_config:
        click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())
        return
    _echo_config("pretrain", resolved)
    out = run(cfg, method_cfg, resume=resume, overwrite=overwrite)
    click.echo(f"encoder written to {out / 'encoder.safetensors'} (+ encoder.json); logs in {out / 'metrics.csv'}")


@cli.command()
@click.option("--out", default="ptxssl-demo", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for every stage's output.")
@click.option("--quick", is_flag=True, help="Fewer, smaller images.")
def demo(out: Path, quick: bool) -> None:
    """Run the stages end to end on built-in synthetic data (no download, CPU).

    synth -> prepare -> info -> pretrain (vae, simclr). Rerunning continues after the last
    finished stage.
    """
    from ptxssl.demo import run_demo

    run_demo(out, quick=quick, echo=click.echo)


def main() -> None:
    cli(prog_name="ptxssl")


if __name__ == "__main__":
    sys.exit(main())
