"""Reading the stage outputs the report is built from, tolerantly.

The report runs last, over a folder that may hold a partial demo, files moved by hand or
written by an older ptxssl. So an absent or unreadable file reads as None (or no rows) and
its section says what is missing and how to get it, instead of the report failing; and a
number is only ever read from the file its stage documents, never recomputed here.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from ptxssl.report.render import Note

RERUN = "rerun `ptxssl demo` (it continues after the last finished stage)"


def read_json(path: Path) -> dict | list | None:
    """A stage's JSON, or None when it is absent or unreadable (reported as missing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> dict | None:
    """A run's config.yaml (a flat mapping of option: value), or None when absent or unreadable."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def read_csv(path: Path) -> list[dict]:
    """A CSV's rows as dicts; no rows when the file is absent or unreadable."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error):
        return []


def missing(what: str, path: Path, how: str = RERUN) -> Note:
    """The note that stands in for an output that is not there."""
    return Note(f"{what}: not available (`{path}` is missing); {how}.")


def fmt(x, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals, None as a dash."""
    return "—" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def last(rows: list[dict], *columns: str) -> float | None:
    """The last non-empty value of the first of `columns` present in a metrics.csv."""
    for col in columns:
        values = [r[col] for r in rows if r.get(col) not in (None, "")]
        if values:
            return float(values[-1])
    return None
