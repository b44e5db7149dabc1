"""Assembling the report: the page's blocks in order, and the two files written from them.

The content is built once as a list of blocks (heading, text, note, table, figure; see
render.py) and rendered twice, so report.md and report.html cannot drift apart. Each stage
has its own section builder; one that meets a hand-edited or foreign file is replaced by a
note naming it, so one odd file never costs the reader the rest of the page.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ptxssl.files import write_text
from ptxssl.report.analysis import anomaly_section, cluster_section
from ptxssl.report.pretrain import pretrain_section
from ptxssl.report.render import Heading, Note, Text, render_html, render_markdown
from ptxssl.report.timer import timings_section
from ptxssl.report.transfer import compare_section

# section name (as the skip note names it) -> builder, in page order: the order the demo runs the stages
SECTIONS: dict[str, Callable[[Path], list]] = {
    "timings": timings_section, "pretrain": pretrain_section, "cluster": cluster_section,
    "anomaly": anomaly_section, "compare": compare_section}


def write_report(demo_dir: str | Path) -> tuple[Path, Path]:
    """Write `demo_dir/report.md` and `demo_dir/report.html` from the stage outputs present.

    Returns:
        (report.md path, report.html path).
    """
    demo_dir = Path(demo_dir)
    blocks = build_report(demo_dir)
    md, page = demo_dir / "report.md", demo_dir / "report.html"
    write_text(md, render_markdown(blocks))
    write_text(page, render_html(blocks, demo_dir))
    return md, page


def build_report(d: Path) -> list:
    """The report's blocks, in page order."""
    d = Path(d)
    intro = Text(f"Outputs of `ptxssl demo` in `{d}`, collected on {datetime.now():%Y-%m-%d %H:%M}. "
                 "Each figure's caption says what it shows and how to read it. The demo runs on small "
                 "synthetic images for a few steps, so it shows that every stage works and what its "
                 "outputs look like, not how good the methods are.")
    blocks = [Heading("ptxssl demo report", 1), intro]
    for name, section in SECTIONS.items():
        try:
            blocks += section(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a hand-edited or foreign file
            blocks.append(Note(f"Skipped a section ({name}): unexpected content in its "
                               f"files ({type(e).__name__}: {e})."))
    return blocks
