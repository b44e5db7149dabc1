"""Protocol presets (`compare --protocol gloria`): the split, balanced subsets, frozen encoder,
fixed threshold, and the departures recorded when options change on top."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.encoders import build_encoder, save_encoder
from ptxssl.transfer.protocol import (balanced_subset, check_protocol_keys, departures, load_protocol,
                                      protocol_names, split_rows)
from ptxssl.transfer.run import TransferConfig, resolve_config, transfer

from .test_run import siim_cache  # noqa: F401  (the module-scoped tiny SIIM cache: 48 images)


def test_resplit_is_disjoint_covers_the_images_and_is_seeded(siim_cache):  # noqa: F811
    parts = split_rows(siim_cache, "0.7,0.15,0.15", seed=4)
    rows = np.concatenate(list(parts.values()))
    assert sorted(rows) == list(range(48))  # every image exactly once
    assert [len(p) for p in parts.values()] == [34, 7, 7]
    again = split_rows(siim_cache, "0.7,0.15,0.15", seed=4)
    other = split_rows(siim_cache, "0.7,0.15,0.15", seed=5)
    assert all(np.array_equal(parts[s], again[s]) for s in parts)
    assert not np.array_equal(parts["test"], other["test"])
    own = split_rows(siim_cache)  # the cache's patient-level split
    assert [len(p) for p in own.values()] != [34, 7, 7]
    with pytest.raises(UserError, match="--resplit"):
        split_rows(siim_cache, "0.7,0.3")


def test_balanced_subset_keeps_every_positive_and_as_many_negatives():
    positive = np.array([1, 0, 0, 0, 1, 0, 0, 1, 0, 0], bool)
    picked = balanced_subset(positive, seed=0)
    assert set(np.flatnonzero(positive)) <= set(picked) and len(picked) == 6
    assert positive[picked].sum() == 3
    assert not np.array_equal(picked, balanced_subset(positive, seed=1))
    few = np.array([1, 1, 1, 0], bool)  # fewer negatives than positives: all of them
    assert list(balanced_subset(few)) == [0, 1, 2, 3]


def test_gloria_preset_freezes_the_encoder_uses_fixed_threshold_and_balanced_split(siim_cache, tmp_path):  # noqa: F811
    preset = load_protocol("gloria")
    check_protocol_keys(preset, TransferConfig)
    torch.manual_seed(3)
    encoder = build_encoder(1)
    save_encoder(encoder, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    cfg = resolve_config(None, {"data": str(siim_cache), "out": str(tmp_path / "run"), "encoder": str(tmp_path / "enc"),
                                "image_size": 32, "batch_size": 4, "workers": 0, "epochs": 2, "patience": 0,
                                "arch": "resnet34"},  # the file's arch; the preset's is resnet50
                         preset["transfer"])
    assert cfg.freeze_epochs == -1 and cfg.balance and cfg.postprocess == "fixed"
    metrics = transfer(cfg, progress=False)
    run = tmp_path / "run"
    unet = smp.from_pretrained(str(run / "model"))
    for k, v in encoder.state_dict().items():  # the weights, two epochs later
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(unet.encoder.state_dict()[k], v), k
    # the frozen protocol says what it did with BatchNorm: re-estimated on the labelled images first
    assert metrics["frozen_bn"] == {"protocol": "precise", "images": len(pd.read_csv(run / "labelled.csv")) // 4 * 4}
    assert not torch.equal(unet.encoder.bn1.running_mean, encoder.bn1.running_mean)
    assert metrics["val_tuned"]["threshold"] == 0.5 and metrics["val_tuned"]["min_area_fraction"] == 0.0
    split = pd.read_csv(run / "split.csv")
    assert split["split"].value_counts().to_dict() == {"train": 34, "val": 7, "test": 7}
    labelled = pd.read_csv(run / "labelled.csv")
    assert set(labelled["image_id"]) <= set(split.loc[split["split"] == "train", "image_id"])
    counts = labelled["pneumothorax"].value_counts()
    assert counts[0] == counts[1]  # every positive of the train split, and as many negatives
    assert metrics["test_images"] == 7


def test_departures_list_what_differs_from_the_protocol():
    preset = load_protocol("gloria")
    same = resolve_config(None, {}, preset["transfer"])
    fixed = [d for d in departures(preset, same, preset["fractions"], preset["seeds"]) if ":" in d.split()[0]]
    assert departures(preset, same, preset["fractions"], preset["seeds"]) == fixed  # only what ptxssl cannot match
    moved = departures(preset, resolve_config(None, {"image_size": 64}, preset["transfer"]), [0.5], preset["seeds"])
    assert "image_size 64 (protocol: 224)" in moved and any(d.startswith("fractions [0.5]") for d in moved)
    assert "gloria" in protocol_names()


def test_compare_cli_with_protocol_records_it_and_its_departures(siim_cache, tmp_path):  # noqa: F811
    grid = tmp_path / "grid"
    args = ["compare", "--protocol", "gloria", "--encoder", "random", "--fractions", "1.0", "--seeds", "0",
            "--data", str(siim_cache), "--out", str(grid), "--image-size", "32", "--batch-size", "4",
            "--epochs", "1", "--workers", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = (grid / "table.md").read_text()
    assert table.startswith("Protocol `gloria`") and "image_size 32 (protocol: 224)" in table
    config = json.loads(json.dumps(pd.read_csv(grid / "results.csv").iloc[0].to_dict()))
    assert config["threshold"] == 0.5 and config["min_area_fraction"] == 0.0
    unknown = CliRunner().invoke(cli, ["compare", "--protocol", "nope", "--encoder", "random", "--out", str(grid)])
    assert unknown.exit_code == 2 and "gloria" in unknown.output


def test_folds_are_disjoint_cover_the_data_keep_patients_whole_and_stratify(siim_cache):  # noqa: F811
    import h5py

    from ptxssl.transfer.protocol import fold_rows

    with h5py.File(siim_cache, "r") as h5:
        patients = h5["patient_ids"].asstr()[:]
        positive = h5["masks"][:].reshape(len(patients), -1).any(axis=1)
    tests = [fold_rows(siim_cache, 4, k, seed=1) for k in range(4)]
    covered = np.concatenate([t["test"] for t in tests])
    assert sorted(covered) == list(range(len(patients)))  # each image tested exactly once
    for k, parts in enumerate(tests):
        rows = [set(parts[s]) for s in ("train", "val", "test")]
        assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
        assert set().union(*rows) == set(range(len(patients)))
        assert parts["val"].tolist() == tests[(k + 1) % 4]["test"].tolist()
        for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
            assert not set(patients[parts[a]]) & set(patients[parts[b]])  # patients stay whole
        assert positive[parts["test"]].any() and (~positive[parts["test"]]).any()
    with pytest.raises(UserError, match="--folds"):
        fold_rows(siim_cache, 2, 0)


def test_compare_with_folds_tests_every_image_once(siim_cache, tmp_path):  # noqa: F811
    grid = tmp_path / "grid"
    args = ["compare", "--encoder", "random", "--fractions", "1.0", "--folds", "3", "--data", str(siim_cache),
            "--out", str(grid), "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    results = pd.read_csv(grid / "results.csv")
    assert results["fold"].tolist() == [0, 1, 2]
    tested = [pd.read_csv(grid / "runs" / "random" / f"f1-k{k}" / "test_dice.csv")["image_id"] for k in range(3)]
    ids = pd.concat(tested)
    assert ids.is_unique and len(ids) == 48  # the folds' test sets partition the cache
    assert "over 3 folds" in (grid / "table.md").read_text()
