"""kill -9 in the middle of `prepare`, `pretrain` and `compare`: no partial output is taken as
complete, and rerunning the same command (`--resume` for pretrain) ends where an
uninterrupted run ends.

Each command runs as a real process (`python -m ptxssl.cli`) that is SIGKILLed the moment its
progress shows it is mid-way; the rerun happens in this process through the same CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ptxssl.datasets import cache as cache_module
from ptxssl.transfer.model import load_model

from .conftest import FAST_TRANSFER, Killable, assert_ok, assert_user_error, dicoms, invoke


def _h5_contents(path: Path) -> dict:
    """Every dataset (strings decoded) and attribute of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as h5:
        for name, ds in h5.items():
            out[name] = ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:]
            out[name + ".attrs"] = {k: np.asarray(v).tolist() for k, v in ds.attrs.items()}
        out[".attrs"] = {k: np.asarray(v).tolist() for k, v in h5.attrs.items()}
    return out


def _progress(stderr: str, desc: str) -> int:
    """The last count a tqdm bar called `desc` printed ("desc:  40%|...| 12/24 [...")."""
    found = re.findall(rf"{desc}:[^\r\n]*?(\d+)/\d+ \[", stderr)
    return int(found[-1]) if found else 0


def test_prepare_killed_midway_resumes_to_the_same_cache(raw, siim_cache, tmp_path, monkeypatch):
    out = tmp_path / "cache.h5"
    # the exact job the session cache was built with, uninterrupted
    args = ["prepare", raw / "siim", "--dataset", "siim", "--out", out, "--size", 32, "--workers", 1,
            "--split", "0.6,0.2,0.2"]
    n = len(dicoms(raw / "siim"))
    proc = Killable(args, module="tests.reliability.slow_cli",
                    env={"PTXSSL_TEST_DECODE_DELAY": "0.1", "PTXSSL_TEST_FLUSH_EVERY": "4"})
    proc.kill_when(lambda err: _progress(err, "prepare") >= n // 2)

    partial = Path(f"{out}.partial")
    assert not out.exists() and partial.is_file()
    with h5py.File(partial, "r") as h5:
        assert "split" not in h5  # unmistakably unfinished
        done = int((h5["status"][:] == 1).sum())
    assert 4 <= done < n, done
    assert_user_error(invoke("info", partial), partial)
    assert_user_error(invoke("info", out), out)

    decoded = []
    real = cache_module.read_image
    monkeypatch.setattr(cache_module, "read_image", lambda path: (decoded.append(path), real(path))[1])
    assert_ok(invoke(*args))
    assert len(decoded) == n - done  # the rerun continued: rows committed before the kill were kept
    assert out.is_file() and not partial.exists()

    got, want = _h5_contents(out), _h5_contents(siim_cache)
    assert got.keys() == want.keys()
    for name in want:
        if name.endswith("attrs"):
            assert got[name] == want[name], name
        else:
            assert np.array_equal(got[name], want[name], equal_nan=got[name].dtype.kind == "f"), name


PRETRAIN = ["pretrain", "--method", "ae", "--epochs", 2, "--image-size", 32, "--batch-size", 2, "--workers", 0,
            "--no-probe", "--accelerator", "cpu"]


def test_pretrain_killed_after_an_epoch_resumes_to_the_same_encoder(siim_cache, tmp_path):
    with h5py.File(siim_cache, "r") as h5:
        steps_per_epoch = int((h5["split"].asstr()[:] == "train").sum()) // 2
    assert steps_per_epoch >= 4  # epoch 2 lasts long enough to be killed in
    run = tmp_path / "run"
    proc = Killable([*PRETRAIN, "--data", siim_cache, "--out", run])
    proc.kill_when(lambda err: "Epoch 1:" in err)  # epoch 0 has ended, and so has its checkpoint

    for name in ("encoder.safetensors", "encoder.json", "method.safetensors"):
        assert not (run / name).exists(), f"{name} written by a run that did not finish"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == steps_per_epoch
    assert_user_error(invoke("embed", "--encoder", run, "--data", siim_cache, "--out", tmp_path / "e.h5"), run)

    assert_ok(invoke(*PRETRAIN, "--data", siim_cache, "--out", run, "--resume"))
    assert_ok(invoke(*PRETRAIN, "--data", siim_cache, "--out", tmp_path / "straight"))
    resumed = load_file(str(run / "encoder.safetensors"))
    straight = load_file(str(tmp_path / "straight" / "encoder.safetensors"))
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    assert json.loads((run / "encoder.json").read_text())["steps"] == 2 * steps_per_epoch


def test_compare_killed_after_a_cell_skips_it_and_finishes_the_grid(siim_cache, tmp_path):
    grid = tmp_path / "grid"
    args = ["compare", "--encoder", "random", "--fractions", "1", "--seeds", "0,1", "--data", siim_cache,
            "--out", grid, "--epochs", 1, *FAST_TRANSFER]
    cells = [grid / "runs" / "random" / "f1-s0", grid / "runs" / "random" / "f1-s1"]
    proc = Killable(args)
    proc.kill_when(lambda err: (cells[0] / "metrics.json").is_file(), poll=0.01)

    assert not (grid / "results.csv").exists() and not (grid / "table.md").exists()
    assert not (cells[1] / "metrics.json").exists()
    first = json.loads((cells[0] / "metrics.json").read_text())

    result = assert_ok(invoke(*args))
    assert result.output.count("(done before)") == 1
    assert re.search(r"\[1/2\] random fraction 1 seed 0: .*\(done before\)", result.output)
    results = pd.read_csv(grid / "results.csv")
    assert sorted(results["seed"]) == [0, 1] and len(results) == 2
    assert results.loc[results["seed"] == 0, "siim_dice"].item() == pytest.approx(first["test"]["siim_dice"])
    for cell in cells:  # a cell counted as done is whole: its model loads for predict
        model, meta = load_model(cell)
        assert meta["image_size"] == 32
        assert json.loads((cell / "metrics.json").read_text())["test_images"] > 0
