"""The training engine through `pretrain()`: export, resume, NaN stop, run folders, DDP."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ptxssl.errors import UserError
from ptxssl.encoders import build_encoder
from ptxssl.engine.trainer import NonFiniteLossError
from ptxssl.pretrain.methods import ae as ae_module
from ptxssl.pretrain.run import load_method, pretrain, resolve_config

FAST = dict(batch_size=8, workers=0, image_size=32, probe=False)


def _run(cache, out, resume=False, overwrite=False, **kw):
    cfg, mcfg = resolve_config(kw.pop("method", "ae"), None, {"data": str(cache), "out": str(out), **FAST, **kw})
    return pretrain(cfg, mcfg, resume=resume, overwrite=overwrite, progress=False)


def test_run_folder_has_config_metrics_checkpoint_figures_and_a_trained_encoder(nih_cache, tmp_path):
    out = _run(nih_cache, tmp_path / "run", max_steps=3, probe=True, epochs=1, keep_checkpoints=True)
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "encoder.safetensors",
                 "encoder.json", "figures/reconstructions.png"):
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["loss_step"].notna().sum() == 3
    torch.manual_seed(0)
    initial = build_encoder(1).state_dict()
    trained = load_file(str(out / "encoder.safetensors"))
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial if initial[k].is_floating_point())
    # the checkpoint holds only plain data: it loads without unpickling arbitrary objects
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["hyper_parameters"]["method"] == "ae"
    # the whole model (encoder + latent + decoder) comes back for the analysis stage; the encoder
    # is stored once, in encoder.safetensors (method.safetensors holds the rest)
    assert not any(k.startswith("encoder.") for k in load_file(str(out / "method.safetensors")))
    method = load_method(out)
    assert all(torch.equal(method.encoder.state_dict()[k], v) for k, v in trained.items())
    x = torch.rand(2, 1, 32, 32)
    assert method.latent(x).shape == (2, method.cfg.latent_dim)
    assert method.reconstruct(x).shape == x.shape and 0 <= method.reconstruct(x).min()


def test_load_method_names_what_is_missing(tmp_path):
    (tmp_path / "config.yaml").write_text("method: ae\n")
    with pytest.raises(UserError, match=r"no method\.safetensors; pass a folder written by `ptxssl pretrain`"):
        load_method(tmp_path)


def test_a_finished_run_drops_its_checkpoints_unless_kept(nih_cache, tmp_path):
    out = _run(nih_cache, tmp_path / "run", max_steps=1, epochs=1)
    assert not (out / "checkpoints").exists()  # ~0.4 GB of weights + optimizer state at R34
    for name in ("encoder.safetensors", "encoder.json", "method.safetensors", "config.yaml", "metrics.csv"):
        assert (out / name).is_file(), name  # what embed, transfer and the report read
    load_method(out)
    with pytest.raises(UserError, match="--keep-checkpoints"):
        _run(nih_cache, out, max_steps=2, epochs=1, resume=True)


def test_resume_after_an_interrupted_run_gives_the_same_weights(nih_cache, tmp_path):
    # a 1-epoch run stands in for a 2-epoch run killed after epoch 1; the cosine schedule's length
    # comes from --epochs, so these runs use a constant rate (tests/reliability kills a real run)
    straight = _run(nih_cache, tmp_path / "straight", epochs=2, schedule="constant")
    _run(nih_cache, tmp_path / "interrupted", epochs=1, keep_checkpoints=True, schedule="constant")
    resumed = _run(nih_cache, tmp_path / "interrupted", epochs=2, resume=True, schedule="constant")
    a = load_file(str(straight / "encoder.safetensors"))
    b = load_file(str(resumed / "encoder.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_is_never_overwritten_silently(nih_cache, tmp_path):
    _run(nih_cache, tmp_path / "run", max_steps=1)
    with pytest.raises(UserError, match="--resume.*--overwrite"):
        _run(nih_cache, tmp_path / "run", max_steps=1)
    _run(nih_cache, tmp_path / "run", max_steps=1, overwrite=True)
    with pytest.raises(UserError, match="no checkpoint"):
        _run(nih_cache, tmp_path / "fresh", max_steps=1, resume=True)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(nih_cache, tmp_path, monkeypatch):
    real = ae_module.reconstruction_loss
    calls = []

    def poisoned(*args, **kw):
        calls.append(1)
        loss = real(*args, **kw)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(ae_module, "reconstruction_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 2.*last.ckpt"):
        _run(nih_cache, tmp_path / "run", max_steps=5, checkpoint_every=1)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_label_methods_need_labels(folder_cache, nih_cache, tmp_path):
    with pytest.raises(UserError, match="needs a cache with labels"):
        _run(folder_cache, tmp_path / "a", method="supervised", max_steps=1)
    with pytest.raises(UserError, match="--target must be one of"):
        _run(nih_cache, tmp_path / "b", method="supervised", target="effusion", max_steps=1)
    with pytest.raises(UserError, match="--labels"):
        _run(nih_cache, tmp_path / "c", method="pseudo", labels=str(tmp_path / "missing.csv"), max_steps=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,cluster\nx,1\n")
    with pytest.raises(UserError, match="image_id,label"):
        _run(nih_cache, tmp_path / "d", method="pseudo", labels=str(bad), max_steps=1)
    with pytest.raises(UserError, match="unknown method"):
        resolve_config("dino", None, {})


def test_two_process_cpu_ddp_run_completes(nih_cache, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "ptxssl.cli", "pretrain", "--method", "ae", "--data", str(nih_cache),
           "--out", str(tmp_path / "ddp"), "--max-steps", "2", "--batch-size", "4", "--workers", "0",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-probe"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "encoder.safetensors").is_file()
    assert "distributed_backend=gloo" in result.stderr + result.stdout


def test_evaluation_after_fit_moves_the_module_to_the_strategys_device(monkeypatch):
    """Lightning's teardown leaves the module on the CPU; `on_training_device` takes the device
    from the strategy, not from the module (the meta device stands in for a GPU here)."""
    from types import SimpleNamespace

    from ptxssl.engine.trainer import on_training_device

    module = torch.nn.Linear(2, 1)  # as teardown leaves it: on the CPU
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    assert on_training_device(module, trainer) is module
    assert next(module.parameters()).device.type == "meta"


def test_transfer_scores_after_moving_the_module_to_the_training_device(monkeypatch, tmp_path):
    """The post-fit tuning and scoring of a transfer run see the module only after it went back
    to the strategy's device: the order of calls is recorded around the real code."""
    import ptxssl.transfer.harness as harness
    import ptxssl.transfer.run as run
    from tests.helpers import synthetic_cache

    calls = []
    real_move, real_predict = harness.on_training_device, run.predict_loader
    monkeypatch.setattr(harness, "on_training_device",
                        lambda module, trainer: calls.append(("move", trainer.strategy.root_device)) or
                        real_move(module, trainer))
    monkeypatch.setattr(run, "predict_loader",
                        lambda module, *a, **k: calls.append(("score", next(module.parameters()).device)) or
                        real_predict(module, *a, **k))
    cache = synthetic_cache(tmp_path / "data", "siim", count=24, seed=3, source_size=64, positive_fraction=0.5,
                            fractions=(0.5, 0.25, 0.25))
    cfg = run.resolve_config(None, {"data": str(cache), "out": str(tmp_path / "run"), "image_size": 32,
                                    "batch_size": 4, "workers": 0, "epochs": 1, "patience": 0})
    run.transfer(cfg, progress=False)
    assert [c[0] for c in calls] == ["move", "score", "score"]  # val tuning, then test
    assert calls[1][1] == calls[2][1] == calls[0][1]


def test_pretraining_warms_up_then_decays_the_learning_rate_per_step(nih_cache, tmp_path):
    """Issue 19's check: `pretrain --method simclr --max-steps 20` logs a per-step learning rate
    that rises over the warm-up (10 % of the run: 2 steps) to --lr and then falls on a cosine."""
    from click.testing import CliRunner

    from ptxssl.cli import cli

    out = tmp_path / "simclr"
    result = CliRunner().invoke(cli, ["pretrain", "--method", "simclr", "--data", str(nih_cache), "--out", str(out),
                                      "--max-steps", "20", "--batch-size", "8", "--image-size", "32", "--workers", "0",
                                      "--no-probe", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    lr = pd.read_csv(out / "metrics.csv")["lr-AdamW"].dropna().to_numpy()
    assert len(lr) == 20
    peak = int(np.argmax(lr))
    assert peak == 2 and lr[peak] == pytest.approx(0.01)  # warm-up over 2 steps: rising to the peak rate
    assert np.all(np.diff(lr[:peak + 1]) > 0) and np.all(np.diff(lr[peak:]) < 0)  # then only falling
    assert lr[-1] < 0.01 * 0.05  # near 0 at the end of the cosine


def test_the_schedule_shape_and_a_schedule_the_method_does_not_take(nih_cache, tmp_path):
    from ptxssl.engine.schedule import warmup_cosine

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=10, warmup=0.2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and rates[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))
    with pytest.raises(UserError, match="--method ae takes --schedule cosine or constant"):
        _run(nih_cache, tmp_path / "ae", schedule="plateau")  # supervised's own schedule only
    assert not (tmp_path / "ae").exists()


def test_a_method_file_that_still_holds_the_encoder_loads(nih_cache, tmp_path):
    """method.safetensors from before the encoder was stored once (the whole state dict) still loads."""
    from safetensors.torch import save_file

    out = _run(nih_cache, tmp_path / "run", max_steps=1, epochs=1)
    method = load_method(out)
    old_style = {k: v.contiguous() for k, v in method.state_dict().items()}
    old_style["encoder.conv1.weight"] = old_style["encoder.conv1.weight"] + 1  # tell its encoder apart
    save_file(old_style, str(out / "method.safetensors"))
    again = load_method(out)
    assert torch.equal(again.encoder.conv1.weight, method.encoder.conv1.weight + 1)
