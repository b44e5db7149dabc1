"""SimCLR, MoCo v2 and BYOL: losses against reference values, fitting a fixed tiny batch, the
momentum (target) networks, MoCo's queue, and the global batch under 2-process DDP (gloo)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from ptxssl.datasets.phantom import render, sample_patient
from ptxssl.errors import UserError
from ptxssl.pretrain.methods.base import MethodConfig
from ptxssl.pretrain.methods.byol import BYOL, BYOLConfig
from ptxssl.pretrain.methods.moco import MoCo, MoCoConfig
from ptxssl.pretrain.methods.simclr import SimCLR, SimCLRConfig

CONTRASTIVE = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL}


@pytest.fixture(scope="module")
def films() -> torch.Tensor:
    """32 synthetic chest films at 32 px: (32, 1, 32, 32) in [0, 1]."""
    rng = np.random.default_rng(0)
    images = [render(sample_patient(rng), frozenset(), 32, rng).image for _ in range(32)]
    return torch.from_numpy(np.stack(images))[:, None]


def make(name: str, **cfg) -> torch.nn.Module:
    cls = CONTRASTIVE[name]
    torch.manual_seed(0)
    return cls(cls.config_class(**cfg), in_channels=1, image_size=32)


def step(method, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    return method.step({"image": x, "generator": torch.Generator().manual_seed(seed)})


@pytest.mark.parametrize("name", list(CONTRASTIVE))
def test_step_outputs_and_embed(name, films):
    method = make(name, queue_size=64) if name == "moco" else make(name)
    out = step(method, films[:8], 0)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    if name == "simclr":
        assert out["negatives"].item() == 2 * 8 - 2
    if name == "moco":
        assert out["negatives"].item() == 8 - 1  # the queue is empty: the batch's other keys
        assert step(method, films[8:16], 1)["negatives"].item() == 8  # then the 8 real keys queued
    method.eval()
    with torch.no_grad():
        assert method.embed(films[:5]).shape == (5, 512)  # the pooled encoder feature, not the projection


def test_config_fields_have_help_and_shared_fields_agree():
    """A field used by several methods is one CLI option: same name, same help text."""
    from ptxssl.pretrain.methods import METHODS

    classes = {SimCLRConfig, MoCoConfig, BYOLConfig, MethodConfig, *(m.config_class for m in METHODS.values())}
    helps: dict[str, set[str]] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            helps.setdefault(f.name, set()).add(f.metadata["help"])
    assert {k: v for k, v in helps.items() if len(v) > 1} == {}
    assert SimCLRConfig().hflip == MoCoConfig().hflip == BYOLConfig().hflip == 0.0


# --- losses against reference values ---------------------------------------------------------

def test_ntxent_reference_value_and_identical_views_beat_random_views():
    """Orthonormal identical views: each view has cos 1 with its positive and cos 0 with the
    2N - 2 negatives, so loss = -log(e^(1/t) / (e^(1/t) + 2N - 2))."""
    method = make("simclr")
    t, n = method.cfg.temperature, 8
    z = torch.eye(n, 128)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert method.criterion(z, z.clone()).item() == pytest.approx(expected, rel=1e-5)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, 128, generator=g), torch.randn(n, 128, generator=g)
    assert method.criterion(a, a + 0.05 * b).item() < method.criterion(a, b).item() - 1.0


def test_moco_loss_reference_value_uses_only_real_keys_of_the_queue_as_negatives():
    """Orthonormal queries equal to their keys, cos 0 with every negative: loss =
    -log(e^(1/t) / (e^(1/t) + negatives)); negatives = the filled part of the queue, or the
    batch's other keys while it is empty (lightly's bank would count its 32 random vectors)."""
    method = make("moco", queue_size=32)
    t, n = method.cfg.temperature, 8
    q = torch.eye(n, 128)

    def expected(negatives: int) -> float:
        return -math.log(math.exp(1 / t) / (math.exp(1 / t) + negatives))

    assert method.criterion(q, q.clone()).item() == pytest.approx(expected(n - 1), rel=1e-5)
    method.criterion.memory_bank.bank[:8] = torch.eye(8, 128).roll(64, dims=1)  # 8 keys orthogonal to q
    method.criterion.filled.fill_(8)
    assert method.criterion(q, q.clone()).item() == pytest.approx(expected(8), rel=1e-5)
    method.criterion.memory_bank.bank.zero_()
    method.criterion.filled.fill_(32)
    assert method.criterion(q, q.clone()).item() == pytest.approx(expected(32), rel=1e-5)
    assert int(method.criterion.memory_bank.bank_ptr) == 0  # no grad: evaluated, not enqueued


def test_byol_loss_is_negative_cosine():
    method = make("byol")
    x = torch.randn(6, 256)
    assert method.criterion(x, 3 * x).item() == pytest.approx(-1.0, abs=1e-6)
    assert method.criterion(x, -x).item() == pytest.approx(1.0, abs=1e-6)


# --- fitting a fixed tiny batch ------------------------------------------------------------------

def fit(method, batches: list[torch.Tensor], steps: int) -> list[float]:
    """AdamW at the method's lr; batch k % len(batches) with one of 4 fixed view seeds."""
    optimizer, _ = method.configure_optimizer()
    method.train()
    history = []
    for k in range(steps):
        loss = step(method, batches[k % len(batches)], seed=k % 4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(k / steps)
        history.append(loss.item())
    print(" ".join(f"{v:.2f}" for v in history))  # shown with -s: the numbers quoted below
    return history


def test_simclr_fits_a_fixed_tiny_batch(films):
    history = fit(make("simclr"), [films[:8]], 20)  # measured: 2.67 -> 1.48 (chance: log 15 = 2.71)
    assert np.mean(history[-5:]) < history[0] - 0.8, history


def test_byol_fits_a_fixed_tiny_batch(films):
    history = fit(make("byol"), [films[:8]], 15)  # measured: 0.01 -> -0.59 (-1 is the floor)
    assert np.mean(history[-5:]) < history[0] - 0.3, history


def test_moco_fits_a_fixed_small_set(films):
    """32 films in 4 batches of 8 and a queue of 2 batches, so the negatives are never the
    current images' own older keys. The first two steps see random queue entries (an easy,
    low loss); the reference is step 2, the first whose queue holds only real keys."""
    history = fit(make("moco", queue_size=16), list(films[:32].split(8)), 20)  # measured: 2.97 -> 2.23
    assert np.mean(history[-5:]) < history[2] - 0.4, history


# --- momentum (target) networks ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["moco", "byol"])
def test_momentum_update_moves_the_target_toward_the_online_network(name, films):
    method = make(name, queue_size=32) if name == "moco" else make(name)
    online = [method.encoder, method.head if name == "moco" else method.projection]
    target = [method.encoder_momentum, method.head_momentum if name == "moco" else method.projection_momentum]
    online_params = [p for m in online for p in m.parameters()]
    target_params = [p for m in target for p in m.parameters()]
    optimizer, _ = method.configure_optimizer()
    assert not {id(p) for p in target_params} & {id(p) for g in optimizer.param_groups for p in g["params"]}

    method.train()
    assert all(m.training for m in target)  # BN of the target uses the batch statistics
    bn = next(m for m in method.encoder_momentum.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats_before = bn.running_mean.clone()
    loss = step(method, films[:8], 0)["loss"]
    assert not torch.equal(bn.running_mean, stats_before)  # ... and updates its own running stats
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    def gap() -> float:
        return sum((a - b).pow(2).sum().item() for a, b in zip(online_params, target_params))

    before, gap_before = [p.clone() for p in target_params], gap()
    stats = bn.running_mean.clone()
    method.after_step(0.0)
    m = method.cfg.momentum
    assert method.current_momentum == pytest.approx(m)
    for old, new, src in zip(before, target_params, online_params):
        torch.testing.assert_close(new, m * old + (1 - m) * src)
    assert gap() < gap_before
    assert torch.equal(bn.running_mean, stats)  # the EMA touches parameters, not BN statistics
    assert not any(p.requires_grad for p in target_params)

    frozen = [p.clone() for p in target_params]
    method.after_step(1.0)  # the cosine schedule ends at momentum 1: the target stands still
    assert method.current_momentum == 1.0
    assert all(torch.equal(a, b) for a, b in zip(frozen, target_params))


# --- MoCo's queue ------------------------------------------------------------------------------

def test_moco_queue_must_be_a_multiple_of_the_batch(films):
    with pytest.raises(UserError, match="--queue-size 40.*--batch-size 16"):
        step(make("moco", queue_size=40), films[:16], 0)
    with pytest.raises(UserError, match="--queue-size"):
        make("moco", queue_size=0)


def test_moco_queue_fills_and_is_kept_in_checkpoints(films):
    method = make("moco", queue_size=32)
    step(method, films[:16], 0)
    bank = method.criterion.memory_bank
    assert int(bank.bank_ptr) == 16 and int(method.criterion.filled) == 16
    torch.testing.assert_close(bank.bank[:16].norm(dim=1), torch.ones(16))  # normalised keys
    state = method.state_dict()
    assert {"criterion.memory_bank.bank", "criterion.memory_bank.bank_ptr", "criterion.filled"} <= set(state)
    fresh = make("moco", queue_size=32)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.memory_bank.bank, bank.bank)
    assert int(fresh.criterion.memory_bank.bank_ptr) == 16 and int(fresh.criterion.filled) == 16
    for _ in range(2):  # 48 keys through a queue of 32: full, and it stays full
        step(method, films[16:], 1)
    assert int(method.criterion.filled) == 32
    old = {k: v for k, v in state.items() if k != "criterion.filled"}  # a checkpoint from before `filled`
    fresh.load_state_dict(old)
    assert int(fresh.criterion.filled) == 32  # its whole queue counts, as it did when it was written


def test_moco_split_bn_normalises_each_group_on_its_own(films):
    """Training, --bn-splits 2: a query depends on the images of its own half of the batch only;
    with one group, on the whole batch."""
    for splits, independent in ((2, True), (1, False)):
        method = make("moco", queue_size=32, bn_splits=splits).train()
        x = films[:8].clone()
        with torch.no_grad():
            before = method._grouped(method.encoder, method.head, x)
            x[4:] = films[8:12]  # the second half changes
            after = method._grouped(method.encoder, method.head, x)
        assert torch.allclose(before[:4], after[:4], atol=1e-5) is independent


def test_moco_keys_are_shuffled_between_groups_and_put_back_in_order(films, monkeypatch):
    """With one BN group the key network is permutation-equivariant, so the keys of a step must
    equal the key network on the unshuffled views, row for row (a wrong un-shuffle would
    permute them); with two groups they differ (a key's group is not its query's)."""
    for splits, same in ((1, True), (2, False)):
        method = make("moco", queue_size=32, bn_splits=splits).train()
        seen = {}
        monkeypatch.setattr(method.criterion, "forward", lambda q, k: seen.setdefault("key", k) .sum() * 0)
        step(method, films[:8], 3)
        g = torch.Generator().manual_seed(3)
        method.augment(films[:8], g)  # the query's view
        views = method.augment(films[:8], g)
        with torch.no_grad():
            plain = method._grouped(method.encoder_momentum, method.head_momentum, views)
        # float32 BatchNorm sums over the batch in another order: ~1e-6 relative
        assert torch.allclose(seen["key"], plain, atol=1e-4) is same


# --- 2-process DDP (gloo, CPU): the losses see the global batch ------------------------------

def _ddp_worker(rank: int, world: int, init: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(1)
        x = torch.rand(2 * 4, 1, 32, 32, generator=g)[rank * 4:(rank + 1) * 4]  # local batch of 4
        z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)  # global projections
        simclr = make("simclr")
        out = step(simclr, x, 0)
        out["loss"].backward()  # the gathered projections carry gradients across processes
        local = simclr.criterion(z0[rank * 4:(rank + 1) * 4], z1[rank * 4:(rank + 1) * 4]).item()
        moco = make("moco", queue_size=16)
        try:
            moco.check_queue(4 * 3)
            queue_error = ""
        except UserError as e:
            queue_error = str(e)
        step(moco, x, 0)
        result = {"negatives": out["negatives"].item(), "local_loss": local,
                  "bank_ptr": int(moco.criterion.memory_bank.bank_ptr), "filled": int(moco.criterion.filled),
                  "bank": moco.criterion.memory_bank.bank[:8].tolist(), "queue_error": queue_error}
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_contrast_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    from lightly.loss import NTXentLoss

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["negatives"] == r1["negatives"] == 2 * 8 - 2  # 2 x global batch - 2, not 2 x 4 - 2
    g = torch.Generator().manual_seed(1)
    torch.rand(8, 1, 32, 32, generator=g)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    single = NTXentLoss(temperature=SimCLRConfig().temperature)(z0, z1).item()
    assert (r0["local_loss"] + r1["local_loss"]) / 2 == pytest.approx(single, rel=1e-5)
    assert r0["bank_ptr"] == r1["bank_ptr"] == r0["filled"] == 8  # the keys of both processes were enqueued
    assert r0["bank"] == r1["bank"]  # one global queue
    assert "2 process" in r0["queue_error"] and "--queue-size 16" in r0["queue_error"]
