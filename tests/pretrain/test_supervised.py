"""`supervised` as an upper bound: trained with augmentation and AdamW + cosine by default, the
best epoch by its own head's val AUROC exported, that AUROC on val and test recorded."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ptxssl.analysis.probe import run_probe
from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.pretrain.methods.supervised import SupervisedConfig
from ptxssl.pretrain.probe import mean_label_auroc
from ptxssl.pretrain.run import pretrain, resolve_config


def test_the_best_epoch_by_val_auroc_is_the_one_exported(nih_cache, tmp_path):
    out = tmp_path / "sup"
    cfg, mcfg = resolve_config("supervised", None, {"data": str(nih_cache), "out": str(out), "epochs": 3,
                                                    "batch_size": 8, "workers": 0, "probe": False,
                                                    "keep_checkpoints": True, "lr": 0.01})
    pretrain(cfg, mcfg, progress=False)
    meta = json.loads((out / "encoder.json").read_text())
    val = pd.read_csv(out / "metrics.csv")[["epoch", "val_auroc"]].dropna()
    assert len(val) == 3  # scored at every epoch end
    assert meta["best_epoch"] == int(val.loc[val["val_auroc"].idxmax(), "epoch"])
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    exported = load_file(str(out / "encoder.safetensors"))
    assert all(torch.equal(exported[k], best[f"method.encoder.{k}"]) for k in exported)
    assert set(meta["head_auroc"]) == {"val", "test"} and all(0 <= v <= 1 for v in meta["head_auroc"].values())
    assert meta["head_auroc"]["val"] == pytest.approx(val["val_auroc"].max(), abs=1e-3)  # same weights, same images
    table = run_probe({"supervised": str(out)}, nih_cache, tmp_path / "probe", max_images=32, device="cpu")
    assert f"supervised: its own head's mean AUROC val {meta['head_auroc']['val']:.3f}" in table


def test_mean_label_auroc_skips_unknown_labels_and_one_class_columns():
    labels = np.array([[1, 0, np.nan], [0, 0, 1], [1, 0, 0], [np.nan, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.8], [0.8, 0.3, 0.1], [0.0, 0.2, 0.7]])
    # column 0: known rows 0-2, perfectly ranked; column 1: one class, left out; column 2: rows 1-3, perfect
    assert mean_label_auroc(scores, labels) == 1.0
    assert np.isnan(mean_label_auroc(scores[:, 1:2], labels[:, 1:2]))


def test_optimizer_is_checked_and_a_short_sgd_run_is_told_what_it_gets(nih_cache, tmp_path):
    with pytest.raises(UserError, match="--optimizer must be one of adamw, sgd"):
        SupervisedConfig(optimizer="lamb")
    result = CliRunner().invoke(cli, ["pretrain", "--method", "supervised", "--data", str(nih_cache), "--out",
                                      str(tmp_path / "sgd"), "--optimizer", "sgd", "--max-steps", "2", "--batch-size",
                                      "8", "--workers", "0", "--no-probe", "--no-train-augment"])
    assert result.exit_code == 0, result.output
    assert "note: --optimizer sgd is the original study's recipe" in result.output
    assert "its own head's mean AUROC" in result.output


def test_a_run_that_stops_inside_an_epoch_validates_its_last_step(nih_cache, tmp_path):
    """--max-steps 7 on 5 batches an epoch: validated after step 5 (the epoch's end) and at step
    7, so the last weights compete for the best epoch (Lightning alone validates at epoch ends)."""
    out = tmp_path / "cut"
    cfg, mcfg = resolve_config("supervised", None, {"data": str(nih_cache), "out": str(out), "max_steps": 7,
                                                    "batch_size": 8, "workers": 0, "probe": False})
    pretrain(cfg, mcfg, progress=False)
    val = pd.read_csv(out / "metrics.csv")[["step", "val_auroc"]].dropna()
    assert len(val) == 2 and val["step"].tolist()[-1] == 6, val  # the CSV's step: the last step's 0-based index
