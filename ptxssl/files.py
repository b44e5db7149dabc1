"""Atomic file writing: a killed run never leaves a half-written file that looks complete.

Every file ptxssl writes goes to a temporary name in the destination folder and is renamed
into place (`os.replace`, atomic on POSIX) only once it is complete.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` if the block succeeds.

    The temporary file keeps `suffix` (default: the destination's) so writers that choose a
    format by extension (matplotlib, PIL) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix or path.suffix) + ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write pretty JSON atomically (keys in insertion order, trailing newline)."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable) -> None:
    """Write a CSV (header, then rows) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def sha1_text(*parts: str) -> str:
    """A short, stable fingerprint of some strings (e.g. a cache's ids and attributes)."""
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_sha1(path: str | Path) -> str:
    """Hex SHA-1 of a file's bytes (recorded so a run names exactly which weights it used)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
