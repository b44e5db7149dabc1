"""`ptxssl plant`: a folder copy with known QC anomalies, each film rewritten the same way."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ptxssl.cli import cli
from ptxssl.datasets.cache import prepare
from ptxssl.datasets.plant import plant_anomalies
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError


def _films(root: Path, n: int = 12) -> dict[str, np.ndarray]:
    """n 8-bit grey films (40 x 48, not square: a rotation shows in the shape) under root/a and root/b."""
    rng = np.random.default_rng(0)
    films = {}
    for i in range(n):
        image_id = f"{'ab'[i % 2]}/f{i}"
        films[image_id] = rng.integers(0, 256, (40, 48), dtype=np.uint8)
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(films[image_id]).save(root / f"{image_id}.png")
    return films


def test_planted_films_are_the_named_change_of_the_source_and_the_rest_unchanged(tmp_path):
    films = _films(tmp_path / "src")
    summary = plant_anomalies(tmp_path / "src", tmp_path / "out", fraction=0.5, seed=3, workers=1)
    assert summary == {"flipped": 2, "rotated": 2, "inverted": 2, "images": 12}
    key = pd.read_csv(tmp_path / "out" / "qc_anomalies.csv", keep_default_na=False)
    assert sorted(key.image_id) == sorted(films) and (key.anomaly != "").sum() == 6
    for image_id, anomaly in zip(key.image_id, key.anomaly):
        got = np.asarray(Image.open(tmp_path / "out" / f"{image_id}.png"))
        film = films[image_id]
        if anomaly == "flipped":
            np.testing.assert_array_equal(got, film[:, ::-1])
        elif anomaly == "inverted":
            np.testing.assert_array_equal(got, 255 - film)
        elif anomaly == "rotated":
            assert got.shape == (48, 40) and any(np.array_equal(got, np.rot90(film, k)) for k in (1, 3))
        else:
            np.testing.assert_array_equal(got, film)  # 8-bit in, 8-bit out: exactly the source
    again = plant_anomalies(tmp_path / "src", tmp_path / "again", fraction=0.5, seed=3, workers=1)
    assert again == summary and (tmp_path / "again" / "qc_anomalies.csv").read_text() == \
        (tmp_path / "out" / "qc_anomalies.csv").read_text()  # seeded


def test_prepare_reads_the_answer_key_into_the_cache(tmp_path):
    _films(tmp_path / "src")
    plant_anomalies(tmp_path / "src", tmp_path / "out", fraction=0.25, seed=0, workers=1)
    prepare(tmp_path / "out", "folder", tmp_path / "c.h5", size=32, workers=1, progress=False)
    key = pd.read_csv(tmp_path / "out" / "qc_anomalies.csv", keep_default_na=False)
    data = CacheDataset(tmp_path / "c.h5")
    assert dict(zip(data.ids, data.anomaly)) == dict(zip(key.image_id, key.anomaly))


def test_plant_command_and_its_errors(tmp_path):
    _films(tmp_path / "src", n=4)
    ok = CliRunner().invoke(cli, ["plant", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--kinds",
                                  "inverted", "--fraction", "0.5", "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    assert "2 inverted" in ok.output
    bad = CliRunner().invoke(cli, ["plant", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--kinds", "mirrored"])
    assert bad.exit_code == 2 and "--kinds" in bad.output and "flipped" in bad.output
    with pytest.raises(UserError, match="outside"):
        plant_anomalies(tmp_path / "src", tmp_path / "src" / "copy")


def test_planting_the_shared_real_radiographs(shared_data, tmp_path):
    summary = plant_anomalies(shared_data / "mhh-covid" / "png", tmp_path / "mhh", fraction=0.15, seed=0, workers=1)
    assert summary == {"flipped": 12, "rotated": 12, "inverted": 12, "images": 243}
