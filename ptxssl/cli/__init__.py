"""The `ptxssl` command line: each command parses, calls the library, and prints.

One module per stage registers its commands on the group in `common.py`:
data (synth, prepare, info), pretrain, analysis (embed, cluster, anomaly, umap),
transfer (transfer, compare, rescore, predict) and demo.
"""
from __future__ import annotations

from ptxssl.cli import analysis, data, demo, pretrain, transfer  # noqa: F401  (register the commands)
from ptxssl.cli.common import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="ptxssl")
