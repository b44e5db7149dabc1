"""Process-parallel map for the CPU-bound data stages (rendering, decoding).

Workers are forked where the platform allows it: a fork starts in milliseconds, while a
spawned worker re-imports the caller's modules (seconds with torch loaded). The workers run
numpy / Pillow / pydicom code only — no torch, no OpenMP — which is what makes forking safe.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int, chunksize: int = 8,
                 ordered: bool = True) -> Iterator[R]:
    """`map(fn, items)` over `workers` processes (in this process when workers <= 1)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(workers) as pool:
        run = pool.imap if ordered else pool.imap_unordered
        yield from run(fn, items, chunksize=chunksize)
