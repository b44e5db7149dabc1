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

    synth -> prepare -> pretrain (vae, simclr) -> embed -> cluster -> pseudo-label pretraining
    -> anomaly -> compare -> report. Open OUT/report.html: one self-contained page (figures
    embedded, opens anywhere) with every stage's figures, captions saying how to read them,
    the key numbers and the stage timings; OUT/report.md is the same with linked PNGs.
    Rerunning continues after the last finished stage and rewrites the report.
    """
    from ptxssl.demo import run_demo

    run_demo(out, quick=quick, echo=click.echo)
