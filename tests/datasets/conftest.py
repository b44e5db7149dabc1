"""A tiny synthetic dataset in all three formats, made once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from ptxssl.datasets.synth import synthesize

SYNTH = dict(count=24, size=64, positive_fraction=0.4, seed=1)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, progress=False, **SYNTH)
    return out
