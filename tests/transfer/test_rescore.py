"""Re-scoring a finished run under another post-processing / TTA equals training it with them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.transfer.rescore import rescore
from tests.helpers import synthetic_cache
from tests.transfer.test_run import _run, siim_cache  # noqa: F401 - the shared 48-image cache fixture


def test_rescore_equals_a_run_trained_with_those_options(siim_cache, tmp_path):  # noqa: F811
    plain = _run(siim_cache, tmp_path / "plain", label_count=12)
    recipe = _run(siim_cache, tmp_path / "recipe", label_count=12, postprocess="triplet", tta="hflip")
    # its own options give back its own metrics.json and test_dice.csv: the same weights, the same
    # batches (rescore takes the run's batch size), so the same float32 sums on any machine; the
    # 1e-5 on max_prob is test_dice.csv's 6-decimal rounding
    own = rescore(tmp_path / "plain", siim_cache)
    assert own["test"] == pytest.approx(plain["test"], abs=1e-6, nan_ok=True)
    per_image = pd.read_csv(tmp_path / "plain" / "test_dice.csv")
    assert own["dice"] == pytest.approx(per_image["dice"].to_numpy(), abs=1e-5)
    assert own["max_prob"] == pytest.approx(per_image["max_prob"].to_numpy(), abs=1e-5)
    # ... and the recipe's options on the plain run's weights give the recipe run's scores:
    # training never saw --postprocess or --tta, so the two runs hold the same weights
    other = rescore(tmp_path / "plain", siim_cache, postprocess="triplet", tta="hflip")
    assert other["val_tuned"] == pytest.approx(recipe["val_tuned"], nan_ok=True)
    assert other["test"] == pytest.approx(recipe["test"], abs=1e-6, nan_ok=True)


def test_rescore_command_prints_the_run_beside_its_rescore_and_their_difference(siim_cache, tmp_path):  # noqa: F811
    trained = _run(siim_cache, tmp_path / "run", label_count=12)
    # its own options: the same numbers twice and a difference of exactly zero
    result = CliRunner().invoke(cli, ["rescore", str(tmp_path / "run"), "--out", str(tmp_path / "same.json")])
    assert result.exit_code == 0, result.output
    assert f"SIIM Dice {trained['test']['siim_dice']:.3f}" in result.output.splitlines()[2]
    assert "Δ SIIM Dice +0.000 [+0.000, +0.000]" in result.output
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["test"] == pytest.approx(same["trained"]["test"], abs=1e-6, nan_ok=True)
    # another recipe: the JSON holds rescore's own numbers and the per-image mean difference
    result = CliRunner().invoke(cli, ["rescore", str(tmp_path / "run"), "--postprocess", "triplet", "--tta", "hflip",
                                      "--out", str(tmp_path / "other.json")])
    assert result.exit_code == 0, result.output
    other = json.loads((tmp_path / "other.json").read_text())
    expected = rescore(tmp_path / "run", siim_cache, postprocess="triplet", tta="hflip")
    assert other["test"] == pytest.approx(expected["test"], nan_ok=True)
    own = pd.read_csv(tmp_path / "run" / "test_dice.csv")["dice"].to_numpy()
    assert other["siim_difference"][0] == pytest.approx((expected["dice"] - own).mean())


def test_rescore_command_names_a_missing_run_or_cache(siim_cache, tmp_path):  # noqa: F811
    result = CliRunner().invoke(cli, ["rescore", str(tmp_path)])
    assert result.exit_code == 2 and f"{tmp_path}: no metrics.json" in result.output
    cache = Path(shutil.copy(siim_cache, tmp_path / "cache.h5"))
    _run(cache, tmp_path / "run", label_count=12, epochs=1)
    moved = cache.rename(tmp_path / "moved.h5")
    result = CliRunner().invoke(cli, ["rescore", str(tmp_path / "run")])
    assert result.exit_code == 2 and f"the cache it was trained on ({cache}) is not there; pass --data" in result.output
    assert CliRunner().invoke(cli, ["rescore", str(tmp_path / "run"), "--data", str(moved)]).exit_code == 0


def test_rescore_names_bad_options_and_folders(siim_cache, tmp_path):  # noqa: F811
    with pytest.raises(UserError, match="postprocess must be one of"):
        rescore(tmp_path, siim_cache, postprocess="best")
    with pytest.raises(UserError, match="tta must be one of"):
        rescore(tmp_path, siim_cache, tta="vflip")
    with pytest.raises(UserError, match=f"{tmp_path}: not a transfer run folder"):
        rescore(tmp_path, siim_cache)


def test_rescore_feeds_a_three_channel_run_its_own_planes(tmp_path):
    cache = synthetic_cache(tmp_path / "data", "siim", count=32, seed=4, source_size=64, positive_fraction=0.5,
                            fractions=(0.5, 0.25, 0.25), channels="raw,clahe,he")
    metrics = _run(cache, tmp_path / "rgb", in_channels=3, epochs=1)
    own = rescore(tmp_path / "rgb", cache)
    per_image = pd.read_csv(tmp_path / "rgb" / "test_dice.csv")
    # the same per-image maxima as training's own scoring, which read the clahe and he planes;
    # the raw plane copied three times would give other probabilities
    assert own["max_prob"] == pytest.approx(per_image["max_prob"].to_numpy(), abs=1e-5)
    assert own["test"] == pytest.approx(metrics["test"], abs=1e-6, nan_ok=True)
