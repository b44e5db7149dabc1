"""The report's building blocks and their two renderings: Markdown (figures linked by relative
path) and self-contained HTML (figures embedded as base64 data URIs, inline CSS, no scripts)."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str  # may hold `code` and **bold**


@dataclass
class Note:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    path: Path  # relative to the demo folder
    caption: str


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(blocks: list) -> str:
    """GitHub-flavoured Markdown; figures link their PNG by path relative to the demo folder."""
    out, n = [], 0
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Note):
            out.append(f"> **Note:** {b.text}")
        elif isinstance(b, Table):
            out.append("\n".join(["| " + " | ".join(map(_md_cell, b.header)) + " |",
                                  "|" + "---|" * len(b.header)]
                                 + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows]))
        elif isinstance(b, Figure):
            n += 1
            out.append(f"![Figure {n}: {b.path.as_posix()}]({b.path.as_posix()})\n\n*Figure {n}.* {b.caption}")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape for HTML, then the two Markdown marks the report uses: `code` and **bold**."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; }
th { background: #f5f5f5; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.5em 0; padding: 1em; border: 1px solid #e3e3e3; border-radius: 6px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #555; font-size: 14px; margin-top: .6em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em 1em; margin: 1em 0; }
"""


def render_html(blocks: list, demo_dir: Path) -> str:
    """One self-contained HTML page: inline CSS, PNGs as base64 data URIs, no scripts."""
    body, n, title = [], 0, "ptxssl demo report"
    for b in blocks:
        if isinstance(b, Heading):
            title = b.text if b.level == 1 else title
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Note):
            body.append(f'<p class="note"><strong>Note:</strong> {_inline(b.text)}</p>')
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>\n" for r in b.rows)
            body.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>")
        elif isinstance(b, Figure):
            n += 1
            data = base64.b64encode((demo_dir / b.path).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="Figure {n}: '
                        f'{html.escape(b.path.as_posix())}">\n<figcaption><strong>Figure {n}.</strong> '
                        f'{_inline(b.caption)} <span class="src">(<code>{html.escape(b.path.as_posix())}</code>)'
                        "</span></figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
