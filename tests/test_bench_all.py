"""scripts/bench_all.py: each benchmark's printout becomes a table with its ratio, the header
describes the machine, and a missing GPU is said plainly. The end-to-end run uses the smoke
preset and writes to a temp path (never the repository's BENCHMARKS.md)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_OUT = ["synth siim 256px, 2 workers: 181 images/s (10,860 per minute)",
            "prepare DICOM 1024px -> 256px, 2 workers: 88 images/s",
            "DataLoader 256px, 0 workers: cache 2,242 images/s, decoding sources 99 images/s, ratio 22.8x",
            "DataLoader 256px, 2 workers: cache 2,715 images/s, decoding sources 196 images/s, ratio 13.9x"]
PRETRAIN_OUT = ["64 px, batch 32, 30 steps, 2 threads, cpu, 32-true",
                "      ae: ptxssl   47.0 img/s (peak 1,663 MB) | plain loop   47.8 img/s (peak 1,458 MB) | ratio 0.98",
                "  simclr: ptxssl   27.7 img/s (peak 2,478 MB) | plain loop   25.6 img/s (peak 2,262 MB) | ratio 1.08"]
ANALYSIS_OUT = ["| step | N | ptxssl s | peak GB | +GB | ARI | baseline | ratio | notes |",
                "|---|---|---|---|---|---|---|---|---|",
                "| kmeans | 1000 | 0.0 | 0.18 | +0.00 | 0.938 | KMeans(14) 0.0 s | 5.52x | n_clusters=14 |"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_all", REPO / "scripts" / "bench_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_all"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_all", None)


def test_data_lines_become_a_table_with_the_ratios(bench):
    table, other = bench.to_markdown("data", DATA_OUT + ["something unexpected"])
    assert ("| DataLoader from the cache, 256 px, 0 workers | 2,242 | decoding the DICOM each time | 99 | **22.8×** |"
            in table)
    assert "| synth siim 256px, 2 workers | 181 | — | — | — (no baseline) |" in table
    assert other == ["something unexpected"]  # kept, shown under "Other output"


def test_pretrain_lines_become_a_table_with_the_ratios(bench):
    table, other = bench.to_markdown("pretrain", PRETRAIN_OUT)
    assert table[0] == "Settings: 64 px, batch 32, 30 steps, 2 threads, cpu, 32-true."
    assert "| ae | 47.0 | 47.8 | **0.98** | 1,663 / 1,458 |" in table
    assert "| simclr | 27.7 | 25.6 | **1.08** | 2,478 / 2,262 |" in table
    assert other == []


def test_analysis_table_passes_through(bench):
    assert bench.to_markdown("analysis", ["noise", *ANALYSIS_OUT]) == (ANALYSIS_OUT, ["noise"])
    device = ["Device: CPU, 2 threads; torch 2.x", "", *ANALYSIS_OUT, "", "| a | b |", "|---|---|"]
    assert bench.to_markdown("device", ["", *device, "warning: x"]) == (device, ["warning: x"])


def test_render_states_the_machine_status_and_a_missing_gpu(bench):
    info = {"CPU": "Test CPU", "cores": "2", "RAM": "1.0 GB", "torch": "2.x", "GPU": "none"}
    s = bench.Section("pretrain", [sys.executable, "scripts/bench_pretrain.py", "--steps", "5"], PRETRAIN_OUT,
                      returncode=0, seconds=3.0)
    page = bench.render(info, "smoke", [s], ["analysis"], "today", ["1.00 / 1.00 / 1.00"], gpu=False)
    assert "| CPU | Test CPU |" in page and "| RAM | 1.0 GB |" in page
    assert "**incomplete** — still to run: analysis" in page
    assert "scripts/bench_pretrain.py --steps 5\n```" in page
    assert "No GPU was available on this machine" in page
    failed = bench.Section("data", [sys.executable, "x.py"], [], stderr_tail="Boom: it broke", returncode=1)
    page = bench.render(info, "smoke", [failed], [], "today", ["1", "2"], gpu=False)
    assert "**Failed** (exit 1)" in page and "Boom: it broke" in page and "| status | complete |" in page


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    repo_file = REPO / "BENCHMARKS.md"
    before = repo_file.stat().st_mtime_ns if repo_file.exists() else None
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "scripts/bench_all.py", "--smoke", "--out", str(out)], cwd=REPO, check=False,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    page = out.read_text()
    for heading in ("## Data path", "## Loader overhead", "## Pretraining loop (CPU)",
                    "## Memory format and the UNet on the CPU", "## Embedding analysis",
                    "## GPU: fp32 and mixed precision, channels-last"):
        assert heading in page
    assert "| 64 | 64 | 0 |" in page  # the loader at 64 px, 64 images, 0 workers, beside bare h5py
    assert "| UNet-R34 transfer 32 px, batch 4 | 32-true |" in page and "channels-last img/s" in page
    assert "| status | complete |" in page and "| cores |" in page and "| torch |" in page
    assert page.count("×** |") == 2  # the two DataLoader ratios
    assert "| ae |" in page and "| kmeans | 1000 |" in page
    assert "Other output" not in page  # every line understood
    assert (repo_file.stat().st_mtime_ns if repo_file.exists() else None) == before  # the repo's file untouched
