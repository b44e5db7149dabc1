"""Shared fixtures: the real public samples in ../shared/data, and tiny synthetic data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # smp must never reach for the network in tests
# Spinning OpenMP threads make each small torch op cost ~8 ms when another process shares the
# 2 cores (measured: ResNet-34 step 3.9 vs 34 img/s); passive waiting keeps the suite's time
# stable under load, at ~20% less speed on idle cores (README, "Speed on shared cores").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ptxssl.datasets.cache import prepare  # noqa: E402 - after the environment above
from ptxssl.datasets.synth import synthesize  # noqa: E402
from tests.helpers import synthetic_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PTXSSL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real samples folder; tests that need it skip (visibly) when it is absent.

    `.ci/run` sets PTXSSL_REQUIRE_SHARED_DATA=1 when the folder exists, turning a skip into
    a failure, so real-data tests cannot silently stop running.
    """
    if not SHARED_DATA.is_dir():
        if os.environ.get("PTXSSL_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"real samples required but {SHARED_DATA} is missing")
        pytest.skip(f"real samples not found at {SHARED_DATA} (set PTXSSL_SHARED_DATA)")
    return SHARED_DATA


# Tiny caches for training tests (pretraining and the engine): 32 px, a few dozen images, made
# once per session and only when a test asks (tests/analysis has its own nih_cache).
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
