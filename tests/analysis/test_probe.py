"""`ptxssl probe`: several encoders on the same images, under one BatchNorm protocol, with a
BN-at-init row for random init, Δ vs a reference with intervals, and the features it can read."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import ptxssl.pretrain.probe as probe_module
from ptxssl.analysis.embed import load_embedder
from ptxssl.analysis.probe import feature_fn, probe_encoders, table, thumbnail
from ptxssl.cli import cli
from ptxssl.encoders import build_encoder, parse_encoders, pooled, save_encoder
from ptxssl.errors import UserError


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    torch.manual_seed(5)
    out = tmp_path_factory.mktemp("probe_encoder")
    save_encoder(build_encoder(1), out, {"method": "test", "in_channels": 1, "image_size": 32})
    return out


def test_every_encoder_is_probed_on_the_same_images_under_the_same_protocol(nih_cache, encoder_file, monkeypatch):
    calls = []
    real = probe_module.precise_bn

    def spy(model, batches, forward):
        batches = list(batches)
        calls.append(torch.cat(batches))  # the reference images of this encoder
        return real(model, batches, forward)

    monkeypatch.setattr(probe_module, "precise_bn", spy)
    rows, labels, names = probe_encoders({"random": "random", "file": str(encoder_file)}, nih_cache, max_images=32)
    assert [(r.name, r.bn) for r in rows] == [("random", "precise"), ("random, BN at init", "as-is"),
                                             ("file", "precise")]
    assert len(calls) == 2 and torch.equal(calls[0], calls[1])  # both precise rows: the same reference images
    assert labels.shape == (len(names), rows[0].scores["linear"].shape[1]) and names
    # the BatchNorm state alone changes what a random encoder's probe sees
    assert not np.allclose(rows[0].scores["knn"], rows[1].scores["knn"])
    text, csv_rows = table(rows, labels, names, "random")
    assert "| random | precise |" in text and "| random, BN at init | as-is |" in text and "[" in text
    assert {r[0] for r in csv_rows} == {r.name for r in rows} and {r[3] for r in csv_rows} == {"linear", "knn"}
    with pytest.raises(UserError, match="--reference 'vae'"):
        table(rows, labels, names, "vae")


def test_grid_features_keep_four_cells_whose_mean_is_the_pooled_feature():
    torch.manual_seed(0)
    model, _ = load_embedder("random")
    model.eval()
    x = torch.rand(2, 1, 64, 64)  # deepest map 2 x 2: the grid is the map itself
    grid = feature_fn(model, "grid", 64)(x)  # (2, 4 x 512), channel-major: 4 cells per channel
    assert grid.shape == (2, 4 * 512)
    torch.testing.assert_close(grid.view(2, 512, 4).mean(-1), pooled(model.encoder, x))
    with pytest.raises(UserError, match="--features latent needs an AE or VAE"):
        feature_fn(model, "latent", 64)


def test_encoder_names_are_parsed_and_checked():
    assert parse_encoders(["random", "vae=runs/vae", "runs/simclr"]) == {
        "random": "random", "vae": "runs/vae", "simclr": "runs/simclr"}
    with pytest.raises(UserError, match="used twice"):
        parse_encoders(["a=random", "a=imagenet"])


def test_probe_command_writes_the_table_and_refuses_to_overwrite(nih_cache, encoder_file, tmp_path):
    args = ["probe", "--encoder", "random", "--encoder", f"file={encoder_file}", "--data", str(nih_cache),
            "--out", str(tmp_path / "p"), "--max-images", "32", "--reference", "random"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "| file | precise |" in result.output and (tmp_path / "p" / "table.md").is_file()
    results = pd.read_csv(tmp_path / "p" / "results.csv")
    means = results[results.label == "mean"]
    assert len(means) == 4 * 2 and means.auroc.between(0, 1).all()  # 3 encoder rows + pixels x 2 probes
    assert "| pixels 8 x 8 | — |" in result.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_the_pixels_row_probes_the_image_itself_average_pooled(nih_cache):
    """thumbnail(G) is the block mean of each G x G cell; the pixels row is probed like any other
    row, on the same images, and needs no network."""
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(thumbnail(2)(x)[0], torch.tensor([2.5, 4.5, 10.5, 12.5]))
    rows, labels, _ = probe_encoders({"random": "random"}, nih_cache, max_images=32, pixels=4, bn="as-is")
    assert [(r.name, r.spec) for r in rows] == [("random", "random"), ("pixels 4 x 4", "pixels")]
    assert rows[1].scores["linear"].shape == rows[0].scores["linear"].shape == labels.shape
    assert not np.allclose(rows[0].scores["linear"], rows[1].scores["linear"])
