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
