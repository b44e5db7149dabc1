"""The demo report: every stage's figures and key numbers on one page, as Markdown and HTML.

`ptxssl demo` leaves its results in a dozen folders; a reader wants one page that says what
each picture shows and how to read it. `write_report` collects whatever stage outputs exist
in a demo folder (a stage that has not run, or whose files were moved, is noted and skipped,
never an error) and writes two files:

- report.md links the PNGs by relative path, so it reads well inside the folder (an IDE,
  GitHub) and stays small;
- report.html embeds every PNG as a base64 data URI, so the one file opens anywhere, mailed
  or copied away from the folder (no JavaScript, no network).

Stage outputs are read from their documented files only (metrics.json, table.md, results.csv,
figures), never recomputed. This module is the package's face; the work is in:

- build.py: the page's sections in order, and `write_report`;
- pretrain.py, analysis.py (cluster, anomaly), transfer.py (compare): one section per stage;
- timer.py: `StageTimer`, which the demo uses to time its stages, and the timings section;
- names.py: method titles from the method registry, encoder archs from the runs' own files;
- read.py: tolerant readers of the stage files; render.py: the blocks and their two renderings.
"""
from __future__ import annotations

from ptxssl.report.build import build_report, write_report
from ptxssl.report.names import DISPLAY_NAMES, METHOD_ORDER, RANDOM_NOTE, arch_title, method_title, random_note
from ptxssl.report.pretrain import FIGURE_CAPTIONS
from ptxssl.report.render import Figure, Heading, Note, Table, Text, render_html, render_markdown
from ptxssl.report.timer import TIMINGS, StageTimer
from ptxssl.report.transfer import FEW_TEST_IMAGES

__all__ = ["DISPLAY_NAMES", "FEW_TEST_IMAGES", "FIGURE_CAPTIONS", "METHOD_ORDER", "RANDOM_NOTE", "TIMINGS",
           "Figure", "Heading", "Note", "StageTimer", "Table", "Text", "arch_title", "build_report",
           "method_title", "random_note", "render_html", "render_markdown", "write_report"]
