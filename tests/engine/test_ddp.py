"""DDP done right, through the same Lightning code path on 2 CPU processes (gloo): validation
and post-fit scoring see every image exactly once, and custom samplers give each process a
disjoint shard that changes every epoch.

The workers are started as an external launcher would (torchrun's environment variables), so
Lightning's own DDP strategy sets up the process group, wraps the samplers and syncs the logs.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.engine import data as engine_data
from ptxssl.engine.data import EvalShards, eval_loader, train_loader
from ptxssl.engine.trainer import quiet_lightning
from ptxssl.transfer.config import resolve_config
from ptxssl.transfer.model import build_unet
from ptxssl.transfer.module import SegmentationModule, predict_loader
from tests.engine.test_data import Rows
from tests.helpers import synthetic_cache

VAL_IMAGES = 5  # odd: two processes cannot split it evenly, so a padding sampler repeats one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(devices: int, **kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **kw)


def _module(cache: Path) -> SegmentationModule:
    """A UNet whose output is ~1 everywhere (head bias +20): each image's Dice at 0.5 is then
    2|M| / (|M| + S^2), a function of its mask alone, so the score is the same in any process,
    thread count or batch, while images with different masks score differently."""
    torch.manual_seed(0)
    unet, _ = build_unet("random", 1, "resnet18")
    torch.nn.init.constant_(unet.segmentation_head[0].bias, 20.0)
    cfg = resolve_config(None, {"data": str(cache), "image_size": 32, "batch_size": 2, "workers": 0})
    return SegmentationModule(unet, cfg, 32).eval()


class _Recorder(pl.LightningModule):
    """Records the dataset rows each training step of each epoch saw."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())  # Rows: item i says i
        return self.w(batch["image"][:, :, 0, 0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _worker(rank: int, port: int, cache: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    with quiet_lightning():
        module = _module(Path(cache))
        val = CacheDataset(cache, with_masks=True, rows=np.arange(VAL_IMAGES))
        score = _trainer(2).validate(module, eval_loader(val, 2, 0), verbose=False)[0]["val_score"]
        probs, masks = predict_loader(module, eval_loader(val, 2, 0))
        recorder = _Recorder()
        _trainer(2, max_epochs=2).fit(recorder, train_loader(Rows(8), 2, 0, seed=0, drop_last=True))
    result = {"val_score": score, "probs": probs.tolist(), "masks": masks.tolist(), "seen": recorder.seen}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, list[dict]]:
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("ddp")
    cache = synthetic_cache(root / "data", "siim", count=12, seed=5, source_size=64, positive_fraction=0.6)
    mp.spawn(_worker, args=(_free_port(), str(cache), str(root)), nprocs=2, join=True)
    return cache, [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_validation_under_ddp_scores_each_image_once(two_processes):
    cache, ranks = two_processes
    module = _module(cache)
    val = CacheDataset(cache, with_masks=True, rows=np.arange(VAL_IMAGES))
    with quiet_lightning():
        single = _trainer(1).validate(module, eval_loader(val, 2, 0), verbose=False)[0]["val_score"]
    masks = np.array(ranks[0]["masks"])
    dice = 2 * masks.sum((1, 2)) / (masks.sum((1, 2)) + masks[0].size)  # all-positive prediction, per image
    assert single == pytest.approx(dice.mean(), abs=1e-6)
    padded = np.append(dice, dice[0]).mean()  # what a DistributedSampler's repeated image gives
    assert abs(padded - dice.mean()) > 1e-3  # the masks differ: the check below can tell the two apart
    # float32 sums of 5 values in [0, 1] in another order: far below the gap above
    assert ranks[0]["val_score"] == ranks[1]["val_score"] == pytest.approx(single, abs=1e-6)


def test_post_fit_scoring_is_sharded_and_gathered_in_dataset_order(two_processes):
    cache, ranks = two_processes
    val = CacheDataset(cache, with_masks=True, rows=np.arange(VAL_IMAGES))
    probs, masks = predict_loader(_module(cache), eval_loader(val, 2, 0))
    # rank 0 holds all 5 images, in order, none twice; rank 1 only its own shard (rows 1 and 3)
    for r, rows in zip(ranks, (slice(None), slice(1, None, 2))):
        assert np.array_equal(np.array(r["masks"]), masks[rows])
        # float32 sigmoid of a head at +20 plus conv sums computed with other batch and thread counts
        np.testing.assert_allclose(np.array(r["probs"]), probs[rows], atol=1e-5)


def test_training_shards_are_disjoint_and_reshuffled_every_epoch(two_processes):
    _, ranks = two_processes
    epochs = [{r: ranks[r]["seen"][str(e)] for r in (0, 1)} for e in (0, 1)]
    for seen in epochs:
        assert not set(seen[0]) & set(seen[1])  # no row trained twice in an epoch
        assert sorted(seen[0] + seen[1]) == list(range(8))  # and none left out
    assert epochs[0][0] != epochs[1][0] or epochs[0][1] != epochs[1][1]  # epoch 1 is not epoch 0 again


def test_eval_shards_split_any_length_without_repeats(monkeypatch):
    for n, size in ((5, 2), (7, 3), (2, 4)):
        shards = []
        for rank in range(size):
            monkeypatch.setattr(engine_data, "world", lambda rank=rank: (size, rank))
            shard = list(EvalShards(n))
            assert len(shard) == len(EvalShards(n))
            shards.append(shard)
        assert sorted(sum(shards, [])) == list(range(n))
        gathered = np.empty(n, int)
        for rank, shard in enumerate(shards):
            gathered[rank::size] = shard  # gather_shards' reassembly puts each row back in place
        assert gathered.tolist() == list(range(n))


def test_a_two_process_transfer_scores_every_test_image_once(two_processes, tmp_path):
    """The whole `ptxssl transfer` under 2-process DDP: trained, tuned and scored sharded,
    gathered on rank 0, written once; the test CSV has each test image exactly once."""
    import subprocess
    import sys

    import pandas as pd

    cache, _ = two_processes
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "ptxssl.cli", "transfer", "--encoder", "random", "--data", str(cache), "--out",
           str(out), "--epochs", "1", "--batch-size", "2", "--image-size", "32", "--workers", "0",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--arch", "resnet18"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    test_ids = CacheDataset(cache, split="test").ids
    scored = pd.read_csv(out / "test_dice.csv", dtype={"image_id": str})["image_id"]
    assert metrics["test_images"] == len(test_ids) == len(scored) and sorted(scored) == sorted(test_ids)
    assert json.loads((out / "runtime.json").read_text())["world_size"] == 2
