"""Shared pieces of the reliability suite: tiny data made once, a CLI runner that checks the
one-line-error contract, folder fingerprints, and a subprocess that can be killed mid-way.

Everything is 32 px and a couple of dozen images, so each CLI call takes a second or two; the
session fixtures (a SIIM cache, a 1-step pretrain run, a 1-epoch transfer run) are built once
and only ever read by the tests (a test that changes a run works on its own copy).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ptxssl.cli import cli

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# tqdm / Lightning progress bars and Lightning's info lines share stderr with the error line
_NOISE = re.compile(r"\d+%\||\d+/\d+ \[|it/s\]|s/it\]|GPU available|TPU available|HPU available")

FAST_PRETRAIN = ["--image-size", "32", "--batch-size", "4", "--workers", "0", "--no-probe",
                 "--accelerator", "cpu"]
FAST_TRANSFER = ["--image-size", "32", "--batch-size", "4", "--workers", "0", "--patience", "0",
                 "--accelerator", "cpu"]


# ---------------------------------------------------------------- running the CLI


def invoke(*args) -> Result:
    """`ptxssl ARGS` in this process (exceptions other than the CLI's own exit are kept)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{_trace(result)}"
    return result


def assert_user_error(result: Result, *names: object) -> str:
    """Exit code 2, no traceback, and exactly one error line (naming every one of `names`)
    among the lines on stderr that are not progress bars. Returns that line."""
    assert result.exit_code == 2, f"exit {result.exit_code}, expected 2\n{result.output}\n{_trace(result)}"
    assert isinstance(result.exception, SystemExit), _trace(result)
    assert "Traceback" not in result.output
    lines = [line for line in re.split(r"[\r\n]+", result.stderr) if line.strip()]
    errors = [line for line in lines if not _NOISE.search(line)]
    assert len(errors) == 1, f"expected one error line on stderr, got {errors}"
    line = errors[0]
    assert line.startswith("Error: "), line
    for name in names:
        assert str(name) in line, f"{name!r} not named in: {line}"
    return line


def _trace(result: Result) -> str:
    if result.exc_info and not isinstance(result.exception, SystemExit):
        import traceback

        return "".join(traceback.format_exception(*result.exc_info))
    return ""


# ---------------------------------------------------------------- fingerprints of files


def tree_digest(path: Path) -> dict[str, str]:
    """{relative path: sha1 of the bytes} of every file under `path` (or of `path` itself)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for f in files:
        h = hashlib.sha1()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        out[str(f.relative_to(path)) if f != path else f.name] = h.hexdigest()
    return out


# ---------------------------------------------------------------- a killable CLI process


class Killable:
    """`python -m MODULE ARGS` with its output (stdout and stderr: tqdm writes to stderr,
    Lightning's progress bar to stdout) collected on a thread, to be SIGKILLed when a condition
    on its progress holds."""

    def __init__(self, args: list[str], module: str = "ptxssl.cli", env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                                     env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def kill_when(self, ready: Callable[[str], bool], timeout: float = 240.0, poll: float = 0.02) -> None:
        """Poll `ready(output so far)` and SIGKILL the process the moment it is true; fail if
        the process ends (or the timeout passes) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(self.output):
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
                self._reader.join(5)
                assert self.proc.returncode == -signal.SIGKILL
                return
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"the command ended (exit {self.proc.returncode}) before it could be "
                            f"killed mid-way; output tail:\n{self.output[-3000:]}")
            time.sleep(poll)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        pytest.fail(f"no progress within {timeout} s; output tail:\n{self.output[-3000:]}")


# ---------------------------------------------------------------- tiny data, made once


@pytest.fixture(scope="session")
def raw(tmp_path_factory) -> Path:
    """Synthetic raw data: RAW/siim (24 DICOMs, 64 px, train-rle.csv) and RAW/chestxray14
    (12 PNGs, 32 px, Data_Entry_2017.csv)."""
    from ptxssl.datasets.synth import synthesize

    root = tmp_path_factory.mktemp("raw")
    synthesize(root, count=24, size=64, formats=("siim",), positive_fraction=0.5, seed=2, progress=False)
    synthesize(root, count=12, size=32, formats=("chestxray14",), seed=3, progress=False)
    return root


@pytest.fixture
def siim_src(raw, tmp_path) -> Path:
    """A private copy of the SIIM folder that a test may add bad files to."""
    return Path(shutil.copytree(raw / "siim", tmp_path / "siim"))


@pytest.fixture
def nih_src(raw, tmp_path) -> Path:
    """A private copy of the ChestX-ray14 folder that a test may add bad files to."""
    return Path(shutil.copytree(raw / "chestxray14", tmp_path / "chestxray14"))


@pytest.fixture(scope="session")
def siim_cache(raw, tmp_path_factory) -> Path:
    """The SIIM folder prepared at 32 px with a 60/20/20 split (val and test for transfer)."""
    from ptxssl.datasets.cache import prepare

    out = tmp_path_factory.mktemp("cache") / "siim.h5"
    prepare(raw / "siim", "siim", out, size=32, workers=1, fractions=(0.6, 0.2, 0.2), progress=False)
    return out


@pytest.fixture(scope="session")
def pretrain_run(siim_cache, tmp_path_factory) -> Path:
    """A finished 1-step AE pretrain run (read-only for the tests)."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert_ok(invoke("pretrain", "--method", "ae", "--data", siim_cache, "--out", out, "--max-steps", 1,
                     "--epochs", 1, *FAST_PRETRAIN))
    return out


@pytest.fixture(scope="session")
def transfer_run(siim_cache, tmp_path_factory) -> Path:
    """A finished 1-epoch transfer run from a random encoder (read-only for the tests)."""
    out = tmp_path_factory.mktemp("transfer") / "run"
    assert_ok(invoke("transfer", "--data", siim_cache, "--out", out, "--epochs", 1, *FAST_TRANSFER))
    return out


def dicoms(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob("*.dcm"))
