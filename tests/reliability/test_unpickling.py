"""Checkpoints, encoders and models are loaded without unpickling arbitrary objects: a pickle
whose unpickling would create a marker file is refused with a one-line error, and the marker
never appears."""
from __future__ import annotations

import shutil

import pytest

from .conftest import FAST_PRETRAIN, FAST_TRANSFER, assert_user_error, invoke
from .corpus import check_pickle_works, malicious_pickle

FORMATS = {"torch-zip": True, "bare-pickle": False}


@pytest.fixture(params=list(FORMATS))
def evil(request, tmp_path):
    """make(path) writes a live malicious pickle at `path`; `marker` is what it would create."""
    marker = tmp_path / "PWNED"

    def make(path):
        return malicious_pickle(path, marker, torch_format=FORMATS[request.param])

    probe = make(tmp_path / "probe.bin")
    check_pickle_works(probe, marker)  # the payload is live: an unsafe load would run it
    make.marker = marker
    return make


def _fake_run(real_run, folder, *names):
    """A run folder with the real run's small text files (config.yaml, ...) only."""
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(real_run / name, folder / name)
    return folder


def test_pretrain_resume_refuses_a_pickled_checkpoint(evil, pretrain_run, siim_cache, tmp_path):
    run = _fake_run(pretrain_run, tmp_path / "run", "config.yaml")
    ckpt = evil(run / "checkpoints" / "last.ckpt")
    result = invoke("pretrain", "--resume", "--out", run, "--data", siim_cache, "--epochs", 2, *FAST_PRETRAIN)
    assert not evil.marker.exists()
    assert_user_error(result, ckpt)
    assert not (run / "encoder.safetensors").exists()


def test_transfer_resume_refuses_a_pickled_checkpoint(evil, transfer_run, siim_cache, tmp_path):
    run = _fake_run(transfer_run, tmp_path / "run", "config.yaml")
    ckpt = evil(run / "checkpoints" / "last.ckpt")
    result = invoke("transfer", "--resume", "--out", run, "--data", siim_cache, "--epochs", 2, *FAST_TRANSFER)
    assert not evil.marker.exists()
    assert_user_error(result, ckpt)
    assert not (run / "metrics.json").exists()


def test_pickle_named_encoder_safetensors_is_refused(evil, siim_cache, tmp_path):
    weights = evil(tmp_path / "enc" / "encoder.safetensors")
    for result in (invoke("transfer", "--encoder", weights, "--data", siim_cache, "--out", tmp_path / "t",
                          *FAST_TRANSFER),
                   invoke("transfer", "--encoder", tmp_path / "enc", "--data", siim_cache, "--out", tmp_path / "t",
                          *FAST_TRANSFER),
                   invoke("embed", "--encoder", weights, "--data", siim_cache, "--out", tmp_path / "e.h5")):
        assert not evil.marker.exists()
        assert_user_error(result, weights)
    assert not (tmp_path / "t").exists() and not (tmp_path / "e.h5").exists()


def test_pickled_imagenet_file_is_refused(evil, siim_cache, tmp_path):
    weights = evil(tmp_path / "resnet34.pth")
    result = invoke("transfer", "--encoder", f"imagenet:{weights}", "--data", siim_cache, "--out", tmp_path / "t",
                    *FAST_TRANSFER)
    assert not evil.marker.exists()
    assert_user_error(result, weights)


def test_pretrain_run_with_pickled_weights_is_refused_by_embed(evil, pretrain_run, siim_cache, tmp_path):
    run = _fake_run(pretrain_run, tmp_path / "run", "config.yaml", "encoder.json")
    method = evil(run / "method.safetensors")
    evil(run / "encoder.safetensors")
    result = invoke("embed", "--encoder", run, "--data", siim_cache, "--out", tmp_path / "e.h5")
    assert not evil.marker.exists()
    assert_user_error(result, method)
    assert not (tmp_path / "e.h5").exists()


def test_transfer_run_with_a_pickled_model_is_refused_by_predict(evil, transfer_run, raw, tmp_path):
    run = _fake_run(transfer_run, tmp_path / "run", "ptxssl.json")
    (run / "model").mkdir()
    shutil.copy(transfer_run / "model" / "config.json", run / "model" / "config.json")
    evil(run / "model" / "model.safetensors")
    result = invoke("predict", raw / "siim", "--model", run, "--out", tmp_path / "s.csv")
    assert not evil.marker.exists()
    assert_user_error(result, run / "model")
    assert not (tmp_path / "s.csv").exists()
