"""Re-scoring a finished run under another post-processing / TTA equals training it with them."""
from __future__ import annotations

import pandas as pd
import pytest

from ptxssl.errors import UserError
from ptxssl.transfer.rescore import rescore
from tests.helpers import synthetic_cache
from tests.transfer.test_run import _run, siim_cache  # noqa: F401 - the shared 48-image cache fixture


def test_rescore_equals_a_run_trained_with_those_options(siim_cache, tmp_path):  # noqa: F811
    plain = _run(siim_cache, tmp_path / "plain", label_count=12)
    recipe = _run(siim_cache, tmp_path / "recipe", label_count=12, postprocess="triplet", tta="hflip")
    # its own options give back its own metrics.json and test_dice.csv ...
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
