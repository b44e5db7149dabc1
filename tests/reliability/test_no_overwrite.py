"""A run folder or cache is never overwritten silently: without --resume/--overwrite the
command stops with exit 2 and the folder is byte-for-byte unchanged; --overwrite starts a new
run; and a failed or crashed --overwrite never leaves the old run's results beside the new
run's config as if they belonged together."""
from __future__ import annotations

import shutil

import h5py
import pytest
import torch
import yaml
from safetensors.torch import load_file

from ptxssl.pretrain.methods import ae as ae_module

from .conftest import (FAST_PRETRAIN, FAST_TRANSFER, assert_ok, assert_user_error, invoke, tree_digest)


def _pretrain(cache, out, *extra):
    return invoke("pretrain", "--method", "ae", "--data", cache, "--out", out, "--max-steps", 1, "--epochs", 1,
                  *FAST_PRETRAIN, *extra)


def _transfer(cache, out, *extra):
    return invoke("transfer", "--data", cache, "--out", out, "--epochs", 1, *FAST_TRANSFER, *extra)


@pytest.fixture
def cut_cache(siim_cache, tmp_path):
    path = tmp_path / "cut.h5"
    path.write_bytes(siim_cache.read_bytes()[:siim_cache.stat().st_size // 2])
    return path


def test_pretrain_into_an_existing_run_is_refused_and_changes_nothing(pretrain_run, siim_cache, tmp_path):
    before = tree_digest(pretrain_run)
    assert_user_error(_pretrain(siim_cache, pretrain_run), pretrain_run, "--resume", "--overwrite")
    assert_user_error(_pretrain(siim_cache, pretrain_run, "--seed", 3, "--method", "vae"), pretrain_run)
    assert tree_digest(pretrain_run) == before
    # any non-empty folder counts: a user's own files are not mixed into a run either
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me\n")
    assert_user_error(_pretrain(siim_cache, mine), mine)
    assert sorted(p.name for p in mine.iterdir()) == ["todo.txt"]


def test_failed_pretrain_overwrite_keeps_the_old_run(pretrain_run, cut_cache, tmp_path):
    run = shutil.copytree(pretrain_run, tmp_path / "run")
    before = tree_digest(run)
    assert_user_error(_pretrain(cut_cache, run, "--overwrite"), cut_cache)
    assert tree_digest(run) == before


def test_pretrain_overwrite_starts_a_new_run_and_a_crash_leaves_no_stale_encoder(
        pretrain_run, siim_cache, tmp_path, monkeypatch):
    run = shutil.copytree(pretrain_run, tmp_path / "run")
    old = load_file(str(run / "encoder.safetensors"))

    def crash(*args, **kw):
        raise RuntimeError("simulated crash in the first step")

    with monkeypatch.context() as m:
        m.setattr(ae_module, "reconstruction_loss", crash)
        crashed = _pretrain(siim_cache, run, "--overwrite", "--seed", 5)
    assert isinstance(crashed.exception, RuntimeError)
    # the new config is in place, so the old run's exports must not be there to be taken as its own
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 5
    for name in ("encoder.safetensors", "encoder.json", "method.safetensors"):
        assert not (run / name).exists(), f"stale {name} from the overwritten run"
    assert_user_error(invoke("embed", "--encoder", run, "--data", siim_cache, "--out", tmp_path / "e.h5"), run)

    assert_ok(_pretrain(siim_cache, run, "--overwrite", "--seed", 5, "--keep-checkpoints"))
    new = load_file(str(run / "encoder.safetensors"))
    assert new.keys() == old.keys() and any(not torch.equal(new[k], old[k]) for k in old)
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 5
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["seed"] == 5 and ckpt["global_step"] == 1


def test_transfer_into_an_existing_run_is_refused_and_changes_nothing(transfer_run, siim_cache, cut_cache, tmp_path):
    before = tree_digest(transfer_run)
    assert_user_error(_transfer(siim_cache, transfer_run), transfer_run, "--resume", "--overwrite")
    assert_user_error(_transfer(siim_cache, transfer_run, "--label-fraction", 0.5), transfer_run)
    assert tree_digest(transfer_run) == before


def test_transfer_overwrite_starts_a_new_run_and_a_failure_keeps_the_old_one(
        transfer_run, siim_cache, cut_cache, tmp_path):
    run = shutil.copytree(transfer_run, tmp_path / "run")
    before = tree_digest(run)
    assert_user_error(_transfer(cut_cache, run, "--overwrite"), cut_cache)
    assert_user_error(_transfer(siim_cache, run, "--overwrite", "--encoder", tmp_path / "nope.safetensors"),
                      "nope.safetensors")
    assert tree_digest(run) == before
    old_model = load_file(str(run / "model" / "model.safetensors"))
    assert_ok(_transfer(siim_cache, run, "--overwrite", "--seed", 4))
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 4
    new_model = load_file(str(run / "model" / "model.safetensors"))
    assert any(not torch.equal(new_model[k], old_model[k]) for k in old_model)


def test_prepare_onto_an_existing_cache_needs_overwrite(raw, siim_cache, tmp_path):
    out = tmp_path / "cache.h5"
    shutil.copy(siim_cache, out)
    before = tree_digest(out)
    assert_user_error(invoke("prepare", raw / "siim", "--dataset", "siim", "--out", out, "--size", 64,
                             "--workers", 1), out, "--overwrite")
    assert tree_digest(out) == before
    assert_ok(invoke("prepare", raw / "siim", "--dataset", "siim", "--out", out, "--size", 64, "--workers", 1,
                     "--overwrite"))
    with h5py.File(out, "r") as h5:
        assert h5["images"].shape[1:] == (64, 64) and h5.attrs["size"] == 64
