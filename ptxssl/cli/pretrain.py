"""`ptxssl pretrain`: options generated from the method config dataclasses."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ptxssl.cli.common import cli, config_options, echo_config


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
    """Pretrain an encoder (--arch, default resnet34) on a cache; export encoder.safetensors + .json.

    \b
    Methods: ae (autoencoder), vae (beta-VAE), simclr, moco, byol (contrastive),
    rotnet (which way round: rotations and mirror), supervised (weak labels),
    pseudo (cluster pseudo-labels from `ptxssl cluster`).
    Method options apply to the methods that have them (see --print-config).
    """
    import yaml

    from ptxssl.engine.config import flat
    from ptxssl.pretrain.methods import get_method
    from ptxssl.pretrain.run import pretrain as run
    from ptxssl.pretrain.run import resolve_config

    overrides = {k: v for k, v in options.items() if v is not None}  # what the user typed
    if method:
        overrides["method"] = method
    if resume and not config_file and options.get("out") and (Path(options["out"]) / "config.yaml").is_file():
        config_file = Path(options["out"]) / "config.yaml"  # a resumed run keeps its own config
    cfg, method_cfg = resolve_config(method or "ae", config_file, overrides)
    resolved = flat(cfg, method_cfg)
    if print_config:
        paper = get_method(cfg.method).paper
        for line in yaml.safe_dump(resolved, sort_keys=False).rstrip().splitlines():
            key = line.split(":", 1)[0]
            note = paper.get(key)  # (the paper's value, its source), when the method records one
            departs = note is not None and resolved.get(key) != note[0]
            click.echo(f"{line}  # the paper: {note[0]} ({note[1]})" if departs else line)
        return
    echo_config("pretrain", resolved)
    short = 0 < cfg.max_steps <= 5000 or (cfg.max_steps <= 0 and cfg.epochs < 20)
    if resolved.get("optimizer") == "sgd" and short:
        click.echo("note: --optimizer sgd is the original study's recipe for runs of many epochs; in a short run it "
                   "barely moves the weights (a median 0.43 % after 300 steps, measured): use --optimizer adamw")
    out = run(cfg, method_cfg, resume=resume, overwrite=overwrite)
    click.echo(f"encoder written to {out / 'encoder.safetensors'} (+ encoder.json); logs in {out / 'metrics.csv'}")
    meta = json.loads((out / "encoder.json").read_text())
    if meta.get("head_auroc"):
        scores = ", ".join(f"{split} {value:.3f}" for split, value in meta["head_auroc"].items())
        click.echo(f"its own head's mean AUROC: {scores} (best epoch {meta.get('best_epoch', '?')} by val)")
