"""Tiny caches for pretraining tests: 32 px, a few dozen images, made once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize
from tests.helpers import synthetic_cache


@pytest.fixture(scope="session")
def nih_cache(tmp_path_factory) -> Path:
    """A labelled (ChestX-ray14-format) cache: 64 images at 32 px."""
    return synthetic_cache(tmp_path_factory.mktemp("pretrain_data"), "chestxray14", count=64, seed=4)


@pytest.fixture(scope="session")
def folder_cache(tmp_path_factory) -> Path:
    """An unlabelled cache (a plain folder of PNGs): no labels, no masks."""
    root = tmp_path_factory.mktemp("pretrain_folder")
    synthesize(root, count=24, size=32, formats=("chestxray14",), seed=5, progress=False)
    out = root / "folder.h5"
    prepare(root / "chestxray14" / "images", "folder", out, size=32, workers=1, progress=False)
    return out
