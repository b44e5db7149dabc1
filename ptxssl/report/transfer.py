"""The report's transfer section: the `ptxssl compare` grid (Dice by encoder and label budget).

The table is compare's own table.md, shown as written (its notes name the protocol and the
arch); the timing line and the plot caption read results.csv, whose `arch` column says which
encoder every row of the grid, `random` included, was built on.
"""
from __future__ import annotations

from pathlib import Path

from ptxssl.report.names import arch_title, random_note, shared_arch
from ptxssl.report.read import missing, read_csv, read_json
from ptxssl.report.render import Figure, Heading, Note, Table, Text

FEW_TEST_IMAGES = 50  # below this many test images a Dice difference is mostly noise


def _table(grid: Path) -> list:
    """table.md's notes as text, its Markdown table as a table, and a warning for tiny test sets."""
    table = grid / "table.md"
    if not table.is_file():
        return [missing("Comparison table", table)]
    lines = [ln.strip() for ln in table.read_text().splitlines() if ln.strip()]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("|")]
    out: list = [Text(ln) for ln in lines if not ln.startswith("|")]
    if len(cells) >= 2:
        out.append(Table(cells[0], [c for c in cells[2:]]))
    tests = [((read_json(p) or {}).get("test") or {}).get("n_images") for p in sorted(grid.glob("runs/*/*/metrics.json"))]
    n = next((t for t in tests if t), None)
    if n is not None and n < FEW_TEST_IMAGES:
        out.append(Note(f"Only {n} test images: differences between encoders at this size are mostly noise "
                        "(see the bootstrap intervals). Run `ptxssl demo` without `--quick`, or on real data."))
    return out


def compare_section(d: Path) -> list:
    """The compare grid under `d/compare`: table, training time, Dice-vs-fraction plot."""
    grid = d / "compare"
    out = [Heading("Segmentation transfer: Dice by encoder and label budget"), *_table(grid)]
    results = read_csv(grid / "results.csv")
    try:
        seconds = [float(r["seconds"]) for r in results if r.get("seconds") not in (None, "", "nan")]
    except (KeyError, ValueError):
        seconds = []
    if seconds:
        out.append(Text(f"{len(seconds)} UNet trainings took {sum(seconds):.0f} s in total "
                        f"({min(seconds):.0f}–{max(seconds):.0f} s each)."))
    arch = shared_arch(r.get("arch") for r in results)
    plot = grid / "dice_vs_fraction.png"
    if plot.is_file():
        out.append(Figure(plot.relative_to(d), (
            "Test SIIM score (Dice per image averaged over the test set; an empty prediction on an empty mask "
            "scores 1) against the fraction of labelled training images used (log scale), one line per "
            "encoder initialisation of the same UNet" + (f" (encoder: {arch_title(arch)})" if arch else "")
            + "; error bars are the std over seeds (none with one seed). "
            f"A pretrained encoder helps where its line lies above `random` ({random_note(arch)}), above all at "
            "the small fractions; lines with equal scores hide one another (the table above has every value).")))
    else:
        out.append(missing("Dice-vs-fraction plot", plot))
    return out
