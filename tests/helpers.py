"""Small builders shared by the test packages."""
from __future__ import annotations

from pathlib import Path

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize


def synthetic_cache(root: Path, fmt: str, count: int, seed: int, size: int = 32, source_size: int | None = None,
                    positive_fraction: float = 0.3, **prepare_options) -> Path:
    """Synthesize `count` images of format `fmt` into `root` and prepare `root/<fmt>.h5` at `size` px."""
    synthesize(root, count=count, size=source_size or size, formats=(fmt,), positive_fraction=positive_fraction,
               seed=seed, progress=False)
    out = root / f"{fmt}.h5"
    prepare(root / fmt, fmt, out, size=size, workers=1, progress=False, **prepare_options)
    return out
