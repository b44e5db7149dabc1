"""The fake demo folder the report tests read (see fakes.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .fakes import fake_demo


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A fake demo folder with every output the report reads."""
    return fake_demo(tmp_path / "demo")
