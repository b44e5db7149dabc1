"""The anomaly section says what its `random` baseline is from the embeddings' recorded arch."""
from __future__ import annotations

import numpy as np

from ptxssl.analysis.store import Embeddings, write_embeddings
from ptxssl.report import write_report

from .fakes import write_json


def _embeddings(path, arch: str, **attrs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_embeddings(path, Embeddings(features=np.zeros((2, 4), np.float32), ids=np.array(["a", "b"]),
                                      split=np.array(["train", "val"]),
                                      attrs={"arch": arch, "method": "random", **attrs}))


def test_random_is_the_arch_its_embeddings_recorded(demo):
    _embeddings(demo / "embed" / "random.h5", "resnet18")
    _embeddings(demo / "embed" / "vae.h5", "resnet18")
    md = write_report(demo)[0].read_text()
    assert "(`random` = the same ResNet-18 with untrained random weights" in md
    assert "`random` embeddings (the same ResNet-18 with untrained random weights" in md
    assert "ResNet-34" not in md


def test_the_embeddings_file_named_in_metrics_json_is_read_first(demo, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "rand.h5"
    _embeddings(elsewhere, "densenet121")
    metrics = demo / "anomaly" / "random" / "metrics.json"
    write_json(metrics, {"config": {"method": "gmm", "embeddings": str(elsewhere)}})
    _embeddings(demo / "embed" / "vae.h5", "resnet18")
    md = write_report(demo)[0].read_text()
    assert "a DenseNet-121 with untrained random weights" in md  # not "the same": vae is a ResNet-18


def test_without_a_recorded_arch_random_is_the_same_encoder(demo):
    md = write_report(demo)[0].read_text()
    assert "(`random` = the same encoder with untrained random weights" in md
    assert "ResNet" not in md


def test_the_random_note_says_which_batchnorm_protocol_its_embeddings_were_read_with(demo):
    _embeddings(demo / "embed" / "random.h5", "resnet18", bn="precise")
    md = write_report(demo)[0].read_text()
    assert "untrained random weights (its BatchNorm statistics re-estimated on the train images" in md
    _embeddings(demo / "embed" / "random.h5", "resnet18", bn="as-is")
    md = write_report(demo)[0].read_text()
    assert "untrained random weights (read with its BatchNorm at init, the identity" in md
