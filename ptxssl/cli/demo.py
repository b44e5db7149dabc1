"""`ptxssl demo`: every stage end to end on built-in synthetic data."""
from __future__ import annotations

from pathlib import Path

import click

from ptxssl.cli.common import cli


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
