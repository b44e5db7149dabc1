"""`compare`: a 2 x 1 x 1 grid end to end, rerun skips finished cells, the paired interval."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.encoders import build_encoder, parse_encoders, save_encoder
from ptxssl.transfer.run import resolve_config
from ptxssl.transfer.compare import ALL_EMPTY, grid_rows, perfect_detector, positives_in_test

from .test_run import siim_cache  # noqa: F401  (the module-scoped tiny SIIM cache)


def test_tiny_grid_writes_results_table_and_plot_and_skips_finished_cells(siim_cache, tmp_path):  # noqa: F811
    save_encoder(build_encoder(1), tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    args = ["compare", "--encoder", "random", "--encoder", f"mine={tmp_path / 'enc'}", "--fractions", "0.5",
            "--seeds", "0", "--data", str(siim_cache), "--out", str(tmp_path / "grid"), "--image-size", "32",
            "--batch-size", "4", "--epochs", "1", "--workers", "0"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    grid = tmp_path / "grid"
    results = pd.read_csv(grid / "results.csv")
    assert list(results["encoder"]) == ["random", "mine"] and set(results["fraction"]) == {0.5}
    assert results["siim_dice"].between(0, 1).all()
    table = (grid / "table.md").read_text()
    # the mine row: Δ SIIM, Δ positive Dice and Δ AUROC vs random, each with its interval; the
    # point estimates are the differences of the runs' own scores (AUROC from test_dice.csv's max_prob)
    row = next(line for line in table.splitlines() if line.startswith("| mine | 0.5 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mine, ref = results.set_index("encoder").loc["mine"], results.set_index("encoder").loc["random"]
    assert "Δ SIIM vs random" in table and all("[" in c for c in cells[-3:])
    assert cells[-3].startswith(f"{mine.siim_dice - ref.siim_dice:+.4f} [")
    assert cells[-2].startswith(f"{mine.positive_dice - ref.positive_dice:+.4f} [")
    assert cells[-1].startswith(f"{mine.image_auroc - ref.image_auroc:+.4f} [")
    # honest baselines: predicting nothing scores the share of empty test masks; the
    # perfect-detector bound is never below the encoder's own score
    positive = positives_in_test(resolve_config(None, {"data": str(siim_cache)}))
    assert 0 < positive.sum() < len(positive)
    assert f"| {ALL_EMPTY} | 0.5 | 0 | {1 - positive.mean():.4f} |" in table
    assert (results["perfect_detector"] >= results["siim_dice"] - 1e-12).all()
    assert (grid / "dice_vs_fraction.png").stat().st_size > 10_000
    # finished cells keep their model but not their ~0.3 GB training checkpoints
    for cell in (grid / "runs" / "random" / "f0.5-s0", grid / "runs" / "mine" / "f0.5-s0"):
        assert (cell / "model" / "model.safetensors").is_file() and not (cell / "checkpoints").exists()
    # a rerun finds every cell finished and reproduces the same results
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and second.output.count("(done before)") == 2
    pd.testing.assert_frame_equal(pd.read_csv(grid / "results.csv"), results)


def test_perfect_detector_scores_negatives_as_empty(tmp_path):
    pd.DataFrame({"image_id": ["a", "b", "c", "d"], "dice": [0.5, 0.0, 1.0, 0.0]}).to_csv(tmp_path / "d.csv", index=False)
    positive = pd.Series([True, False, False, True], index=["a", "b", "c", "d"])
    # a: own 0.5; b, c: negatives -> 1; d: a missed positive stays 0
    assert perfect_detector(tmp_path / "d.csv", positive) == pytest.approx((0.5 + 1 + 1 + 0) / 4)


def test_encoder_names():
    assert parse_encoders(["random", "imagenet:/w/r34.pth", "vae=runs/vae", "runs/simclr/encoder.safetensors"]) == {
        "random": "random", "imagenet": "imagenet:/w/r34.pth", "vae": "runs/vae",
        "simclr": "runs/simclr/encoder.safetensors"}
    with pytest.raises(UserError, match="used twice"):
        parse_encoders(["random", "random"])


def test_a_frozen_random_encoder_gets_a_bn_at_init_row_beside_the_recalibrated_one(siim_cache, tmp_path):  # noqa: F811
    """Under --freeze-epochs with --frozen-bn precise, `random` also runs with its BatchNorm as
    it came (the identity), labelled, with its paired Δ against the recalibrated row."""
    args = ["compare", "--encoder", "random", "--fractions", "0.5", "--seeds", "0", "--data", str(siim_cache),
            "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--freeze-epochs", "-1"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "frozen")])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "frozen" / "results.csv")
    assert list(results["encoder"]) == ["random", "random-bn-at-init"] and set(results["init"]) == {"random"}
    runs = tmp_path / "frozen" / "runs"
    protocols = {name: json.loads((runs / name / "f0.5-s0" / "metrics.json").read_text())["frozen_bn"]["protocol"]
                 for name in results["encoder"]}
    assert protocols == {"random": "precise", "random-bn-at-init": "as-is"}
    # the same seed gives the same random weights; only the BatchNorm statistics differ
    own = {name: load_file(runs / name / "f0.5-s0" / "model" / "model.safetensors") for name in protocols}
    key = "encoder.bn1.running_mean"
    assert torch.count_nonzero(own["random-bn-at-init"][key]) == 0 and torch.count_nonzero(own["random"][key]) > 0
    assert torch.equal(own["random"]["encoder.conv1.weight"], own["random-bn-at-init"]["encoder.conv1.weight"])
    table = (tmp_path / "frozen" / "table.md").read_text()
    assert "`random-bn-at-init`: the same random weights" in table
    assert next(line for line in table.splitlines() if line.startswith("| random-bn-at-init | 0.5 |")).count("[") == 3
    # fine-tuned (no --freeze-epochs), or frozen as-is already: no extra row
    assert list(grid_rows(resolve_config(None, {"data": str(siim_cache)}), {"random": "random"})) == ["random"]
    asis = resolve_config(None, {"data": str(siim_cache), "freeze_epochs": -1, "frozen_bn": "as-is"})
    assert list(grid_rows(asis, {"random": "random"})) == ["random"]
    with pytest.raises(UserError, match="random-bn-at-init"):
        grid_rows(resolve_config(None, {"data": str(siim_cache), "freeze_epochs": -1}),
                  {"random": "random", "random-bn-at-init": "imagenet"})
