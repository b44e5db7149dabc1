"""`embed_cache`: every cache image through an encoder; AE runs add the latent and recon error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptxssl.analysis.embed import embed_cache, load_embedder
from ptxssl.analysis.store import read_embeddings
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.encoders import build_encoder, pooled, save_encoder
from ptxssl.pretrain.module import MethodModule
from ptxssl.pretrain.probe import probe_features
from ptxssl.pretrain.run import load_method, pretrain, resolve_config
from tests.helpers import assert_features_close, synthetic_cache


@pytest.fixture(scope="module")
def ae_run(nih_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae") / "run"
    cfg, mcfg = resolve_config("ae", None, {"data": str(nih_cache), "out": str(out), "max_steps": 2,
                                           "batch_size": 8, "workers": 0, "probe": False})
    return pretrain(cfg, mcfg, progress=False)


def test_encoder_file_embeddings_carry_ids_splits_labels_and_match_the_encoder(nih_cache, tmp_path):
    torch.manual_seed(3)
    encoder = build_encoder(1).eval()
    save_encoder(encoder, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    emb = embed_cache(str(tmp_path / "enc"), nih_cache, tmp_path / "emb.h5", batch_size=16, progress=False,
                      bn="as-is")  # the encoder's own statistics: row 5 must be that image through it
    back = read_embeddings(tmp_path / "emb.h5")
    cache = CacheDataset(nih_cache)
    assert back.features.shape == (len(cache), 512) and back.latent is None and back.recon_error is None
    assert list(back.ids) == list(cache.ids) and list(back.split) == list(cache.split)
    np.testing.assert_array_equal(back.labels, cache.labels)
    assert back.label_names == cache.label_names and list(back.anomaly) == list(cache.anomaly)
    # row 5 is exactly that image through that encoder
    with torch.no_grad():
        expected = pooled(encoder, cache[5]["image"][None])[0].numpy()
    assert_features_close(back.features[5], expected)  # batch 16 vs batch 1: float32 summation order
    assert emb.attrs["encoder"] == str(tmp_path / "enc") and back.attrs["fingerprint"]


def test_ae_run_adds_latent_and_reconstruction_error(ae_run, nih_cache, tmp_path):
    back_emb = embed_cache(str(ae_run), nih_cache, tmp_path / "ae.h5", progress=False, bn="as-is")
    back = read_embeddings(tmp_path / "ae.h5", features="latent")
    method = load_method(ae_run)
    x = CacheDataset(nih_cache)[0]["image"][None]
    with torch.no_grad():
        assert_features_close(back.features[0], method.latent(x)[0].numpy())  # batch 64 vs 1
        err = (method.reconstruct(x) - x).pow(2).mean().item()
    assert back.recon_error[0] == pytest.approx(err, rel=1e-3)  # a mean of squares of such outputs
    assert back_emb.attrs["method"] == "ae" and (back.recon_error > 0).all()


def test_embed_cli_and_a_bad_encoder(ae_run, nih_cache, tmp_path):
    from click.testing import CliRunner

    from ptxssl.cli import cli

    ok = CliRunner().invoke(cli, ["embed", "--encoder", "random", "--data", str(nih_cache),
                                  "--out", str(tmp_path / "r.h5")])
    assert ok.exit_code == 0, ok.output
    assert "512-d" in ok.output and read_embeddings(tmp_path / "r.h5").features.shape[1] == 512
    bad = CliRunner().invoke(cli, ["embed", "--encoder", str(tmp_path / "nope"), "--data", str(nih_cache),
                                   "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "nope" in bad.output and not (tmp_path / "x.h5").exists()
    with pytest.raises(UserError, match="cache"):
        embed_cache("random", tmp_path / "missing.h5", tmp_path / "y.h5", progress=False)


def test_embed_and_the_probe_see_the_same_features_when_the_cache_is_larger_than_the_model(tmp_path):
    """A run trained at 32 px, a cache at 64 px: `embed` and the trainer's probe both downscale
    through the one input path (antialiased), so an image gets the same features in both.
    `embed` once resized without antialiasing: features ~1e-2 of their scale apart."""
    cache = synthetic_cache(tmp_path / "data", "chestxray14", count=16, seed=8, size=64)
    cfg, mcfg = resolve_config("ae", None, {"data": str(cache), "out": str(tmp_path / "run"), "max_steps": 1,
                                           "batch_size": 8, "workers": 0, "probe": False, "image_size": 32})
    run = pretrain(cfg, mcfg, progress=False)
    emb = embed_cache(str(run), cache, tmp_path / "emb.h5", batch_size=16, progress=False)  # BN precise on train
    assert emb.attrs["image_size"] == 32 and CacheDataset(cache).size == 64
    assert emb.attrs["bn"] == "precise" and emb.attrs["bn_images"] == (emb.split == "train").sum()
    module = MethodModule(load_method(run), {"seed": 0}, tmp_path / "probe").eval()  # what ProbeCallback embeds with
    # the probe re-estimates BatchNorm on the same train images in the same batches, then embeds
    train_x, _, val_x, _, _ = probe_features(module.embed, str(cache), max_images=10_000, batch_size=16, model=module)
    assert_features_close(emb.features[emb.split == "train"], train_x)
    assert_features_close(emb.features[emb.split == "val"], val_x)


def test_embed_reads_every_encoder_with_recalibrated_batchnorm_and_records_it(nih_cache, tmp_path):
    """The default BatchNorm protocol re-estimates statistics on the train split, so a random
    encoder is not read through identity BatchNorm; `--bn as-is` keeps the encoder's own."""
    torch.manual_seed(0)
    precise = embed_cache("random", nih_cache, tmp_path / "p.h5", batch_size=16, progress=False)
    torch.manual_seed(0)
    as_is = embed_cache("random", nih_cache, tmp_path / "a.h5", batch_size=16, progress=False, bn="as-is")
    train = int((CacheDataset(nih_cache).split == "train").sum())
    assert read_embeddings(tmp_path / "p.h5").attrs["bn"] == "precise" and precise.attrs["bn_images"] == train
    assert as_is.attrs["bn"] == "as-is" and "bn_images" not in as_is.attrs
    assert np.abs(precise.features - as_is.features).max() > 1e-2
    with pytest.raises(UserError, match="--bn must be precise or as-is"):
        embed_cache("random", nih_cache, tmp_path / "x.h5", progress=False, bn="fresh")


def test_grid_features_are_written_on_request_and_read_by_the_analysis(tmp_path):
    cache = synthetic_cache(tmp_path / "data", "chestxray14", count=12, seed=9, size=64)
    emb = embed_cache("random", cache, tmp_path / "g.h5", progress=False, with_grid=True)
    assert emb.grid.shape == (12, 4 * 512)
    # 64 px: a 2 x 2 deepest map, so the cells of each channel average to its pooled feature
    assert_features_close(emb.grid.reshape(12, 512, 4).mean(-1), emb.features)
    back = read_embeddings(tmp_path / "g.h5", features="grid")
    np.testing.assert_array_equal(back.features, emb.grid)
    embed_cache("random", cache, tmp_path / "p.h5", progress=False)
    with pytest.raises(UserError, match="embed --grid"):
        read_embeddings(tmp_path / "p.h5", features="grid")


def test_a_random_encoder_is_the_same_weights_in_every_run_of_the_same_seed(nih_cache, tmp_path):
    """`embed --encoder random` seeds its init (default 0): two runs in one process agree however
    much random state was used between them, another seed gives another network, the file says
    which; and the seed's network is the one `ptxssl probe --seed` reads."""
    first = embed_cache("random", nih_cache, tmp_path / "a.h5", bn="as-is", progress=False)
    torch.rand(1000)  # random state used in between
    again = embed_cache("random", nih_cache, tmp_path / "b.h5", bn="as-is", progress=False)
    other = embed_cache("random", nih_cache, tmp_path / "c.h5", bn="as-is", progress=False, seed=1)
    assert np.array_equal(first.features, again.features) and not np.allclose(first.features, other.features)
    assert (read_embeddings(tmp_path / "a.h5").attrs["seed"], other.attrs["seed"]) == (0, 1)
    torch.manual_seed(0)  # what probe_encoders does before building a random init
    model, _ = load_embedder("random")
    with torch.no_grad():
        x = CacheDataset(nih_cache)[0]["image"][None]
        assert_features_close(model.eval().embed(x).numpy(), first.features[:1])
