"""The GPU path (`scripts/gpu_check.sh` runs these with `-m gpu`; they skip without CUDA).

Each runs the commands' own code on the GPU in the precision `auto` picks there, and checks
where the work happened: the precision recorded, the post-fit scoring on the device, DDP
across GPUs when there are several, inference that agrees with the CPU's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import synthetic_cache

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (scripts/gpu_check.sh)")]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    return (synthetic_cache(root / "nih", "chestxray14", count=48, seed=1, size=64),
            synthetic_cache(root / "siim", "siim", count=48, seed=2, size=64, positive_fraction=0.5))


def test_pretraining_steps_in_mixed_precision_on_the_gpu(caches, tmp_path):
    from ptxssl.pretrain.run import pretrain, resolve_config

    for method in ("simclr", "vae"):
        cfg, mcfg = resolve_config(method, None, {"data": str(caches[0]), "out": str(tmp_path / method),
                                                  "max_steps": 3, "batch_size": 16, "workers": 2, "probe": False})
        pretrain(cfg, mcfg, progress=False)
        runtime = json.loads((tmp_path / method / "runtime.json").read_text())
        assert runtime["device"] == "cuda" and runtime["precision"] in ("bf16-mixed", "16-mixed")
        assert runtime["float32_matmul_precision"] == "high" and runtime["cudnn_benchmark"]
        losses = pd.read_csv(tmp_path / method / "metrics.csv")["loss_step"].dropna()
        assert (tmp_path / method / "encoder.safetensors").is_file()
        assert len(losses) == 3 and np.isfinite(losses).all()


def test_transfer_trains_and_scores_on_the_gpu(caches, tmp_path, monkeypatch):
    import ptxssl.transfer.run as run

    devices, real = [], run.predict_loader
    monkeypatch.setattr(run, "predict_loader", lambda module, *a, **k: devices.append(
        (next(module.parameters()).device.type, a[3] if len(a) > 3 else k.get("precision"))) or real(module, *a, **k))
    cfg = run.resolve_config(None, {"data": str(caches[1]), "out": str(tmp_path / "unet"), "batch_size": 8,
                                    "workers": 2, "epochs": 2, "patience": 0})
    metrics = run.transfer(cfg, progress=False)
    assert [d for d, _ in devices] == ["cuda", "cuda"]  # val tuning and test scoring, where training ran
    assert devices[0][1] in ("bf16-mixed", "16-mixed")
    assert 0 <= metrics["test"]["siim_dice"] <= 1


def test_inference_on_the_gpu_agrees_with_the_cpu(caches, tmp_path):
    from ptxssl.analysis.embed import embed_cache

    runs = {}
    for device, precision in (("cpu", "32-true"), ("cuda", "32-true"), ("cuda", "auto")):
        torch.manual_seed(0)
        runs[device, precision] = embed_cache("random", caches[0], tmp_path / f"{device}{precision}.h5",
                                              device=device, precision=precision, progress=False).features

    def cosine(a, b):
        return ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()

    cpu = runs["cpu", "32-true"]
    assert cosine(runs["cuda", "32-true"], cpu) > 0.999  # TF32 products (10-bit mantissa) over 36 layers
    assert cosine(runs["cuda", "auto"], cpu) > 0.95  # bf16 / fp16 autocast


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_across_gpus(caches, tmp_path):
    cmd = [sys.executable, "-m", "ptxssl.cli", "pretrain", "--method", "simclr", "--data", str(caches[0]),
           "--out", str(tmp_path / "ddp"), "--max-steps", "3", "--batch-size", "8", "--workers", "2",
           "--devices", "2", "--strategy", "ddp", "--no-probe"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "runtime.json").read_text())["world_size"] == 2
    assert "distributed_backend=nccl" in result.stderr + result.stdout
