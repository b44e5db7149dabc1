"""The compare section reads the grid's arch from results.csv."""
from __future__ import annotations

from ptxssl.report import write_report


def test_the_plot_caption_names_the_grids_arch(demo):
    (demo / "compare" / "results.csv").write_text(
        "encoder,arch,fraction,siim_dice,seconds\nrandom,densenet121,1,0.75,9.5\nvae,densenet121,1,0.81,20.5\n")
    md = write_report(demo)[0].read_text()
    assert "of the same UNet (encoder: DenseNet-121)" in md
    assert "`random` (the same DenseNet-121 with untrained random weights" in md


def test_without_an_arch_column_the_caption_stays_generic(demo):
    md = write_report(demo)[0].read_text()
    assert "of the same UNet;" in md and "`random` (the same encoder with untrained random weights" in md
