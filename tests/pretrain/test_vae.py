"""β-VAE: the KL term, the documented reduction, warm-up, sampling, figures, an engine run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.distributions import Normal, kl_divergence

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.phantom import render, sample_patient
from ptxssl.datasets.synth import synthesize
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.engine.config import TrainConfig, flat
from ptxssl.engine.data import train_loader
from ptxssl.engine.trainer import CHECKPOINT, make_trainer
from ptxssl.pretrain.module import MethodModule
from ptxssl.pretrain.methods.vae import VAE, VAEConfig, kl_to_standard_normal


def _vae(size: int = 32, **cfg) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(**cfg), image_size=size)


def _phantoms(n: int = 8, size: int = 32) -> torch.Tensor:
    rng = np.random.default_rng(0)
    images = [render(sample_patient(rng), frozenset(), size, rng).image for _ in range(n)]
    return torch.from_numpy(np.stack(images))[:, None].float()  # (n, 1, size, size)


def _step(method: VAE, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    return method.step({"image": x, "generator": torch.Generator().manual_seed(seed)})


def test_kl_matches_the_closed_form_and_torch_distributions():
    mu = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # by hand: ½(μ² + σ² − 1 − log σ²) summed over latents
    expected = torch.tensor([0.5 * (2.0 - 1.0 - math.log(2.0)), 0.5 * 1.0 + 0.5 * 1.0])
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected)

    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1).mean()
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar).mean(), reference)


def test_loss_is_summed_per_image_and_averaged_over_the_batch():
    method = _vae().eval()  # z = μ and BatchNorm per item: the loss is a function of each image
    x = _phantoms(4)
    with torch.no_grad():
        single, doubled = _step(method, x, 0), _step(method, torch.cat([x, x]), 0)
        torch.testing.assert_close(doubled["loss"], single["loss"])  # mean over the batch
        mu, logvar = method.encode(x)
        per_pixel = F.binary_cross_entropy_with_logits(method.decoder(mu), x, reduction="none")
    torch.testing.assert_close(single["recon"], per_pixel.sum(dim=(1, 2, 3)).mean())  # sum over pixels
    torch.testing.assert_close(single["kl"], kl_to_standard_normal(mu, logvar).mean())  # sum over latents
    torch.testing.assert_close(single["loss"], single["recon"] + single["beta"] * single["kl"])


@pytest.mark.parametrize("size", [32, 64])
def test_recon_grows_with_the_pixel_count(size):
    """Logits fixed at 0 cost log 2 per pixel, so the summed recon is S² log 2: 4x at 64 px."""
    method = _vae(size).eval()
    torch.nn.init.zeros_(method.decoder.head.weight)
    torch.nn.init.zeros_(method.decoder.head.bias)
    with torch.no_grad():
        recon = _step(method, torch.full((2, 1, size, size), 0.3), 0)["recon"]
    assert recon.item() == pytest.approx(size * size * math.log(2.0), rel=1e-5)


def test_fits_a_fixed_tiny_batch():
    """BCE on grey targets cannot reach 0: its floor is the targets' entropy, so compare the
    loss above that floor (recon − floor + β·KL ≥ 0)."""
    x = _phantoms(8)
    floor = F.binary_cross_entropy(x, x, reduction="sum").item() / len(x)
    method = _vae().train()
    optimizer, _ = method.configure_optimizer()
    history = []
    for step in range(40):
        loss = _step(method, x, step)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, final = history[0] - floor, np.mean(history[-3:]) - floor
    assert final < 0.5 * first, f"loss above the floor {floor:.1f}: {first:.1f} -> {final:.1f}"


def test_kl_warmup_ramps_beta_and_is_checkpointed():
    method = _vae(beta=2.0, kl_warmup=4).train()
    x = _phantoms(2)
    with torch.no_grad():
        betas = [_step(method, x, i)["beta"].item() for i in range(6)]
        assert betas == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
        method.eval()
        _step(method, x, 0)  # evaluation does not advance the schedule
    state = method.state_dict()
    assert state["steps"].item() == 6
    resumed = _vae(beta=2.0, kl_warmup=4)
    resumed.load_state_dict(state)
    assert resumed.current_beta().item() == 2.0
    assert _vae(beta=3.0).current_beta().item() == 3.0  # kl_warmup=0: no ramp


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="--beta"):
        VAE(VAEConfig(beta=-1.0), image_size=32)
    with pytest.raises(UserError, match="--kl-warmup"):
        VAE(VAEConfig(kl_warmup=-5), image_size=32)


def test_reparameterisation_uses_the_given_generator_and_mu_in_eval():
    method = _vae().train()
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(4, 128, generator=g), torch.randn(4, 128, generator=g)

    def z(seed: int) -> torch.Tensor:
        return method.reparameterise(mu, logvar, torch.Generator().manual_seed(seed))

    torch.testing.assert_close(z(7), z(7))
    assert not torch.allclose(z(7), z(8))
    eps = torch.randn(4, 128, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z(7), mu + (0.5 * logvar).exp() * eps)
    method.eval()
    assert torch.equal(z(7), mu)


def test_write_figures_writes_two_pngs(tmp_path):
    method = _vae().eval()
    paths = method.write_figures({"image": _phantoms(4)}, tmp_path / "figures")
    assert [p.name for p in paths] == ["reconstructions.png", "samples.png"]
    for p in paths:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"


def test_engine_trains_checkpoints_and_resumes(tmp_path):
    synthesize(tmp_path, count=24, size=32, formats=("chestxray14",), progress=False)
    prepare(tmp_path / "chestxray14", "chestxray14", tmp_path / "c.h5", size=32, workers=1, progress=False)
    loader = train_loader(CacheDataset(tmp_path / "c.h5", split="train"), 4, 0, 0, drop_last=True)
    run_dir = tmp_path / "run"

    def fit(max_steps: int, ckpt=None) -> VAE:
        cfg = TrainConfig(max_steps=max_steps, epochs=5, batch_size=4, workers=0, accelerator="cpu",
                          checkpoint_every=1)
        method = _vae(kl_warmup=10)
        module = MethodModule(method, flat(cfg, method.cfg), run_dir)
        make_trainer(cfg, run_dir, [], progress=False).fit(module, loader, ckpt_path=ckpt, weights_only=True)
        return method

    before = {k: v.clone() for k, v in _vae().encoder.state_dict().items()}
    trained = fit(2)
    after = trained.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert trained.steps.item() == 2
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)["state_dict"]
    assert saved["method.steps"].item() == 2
    assert fit(3, run_dir / CHECKPOINT).steps.item() == 3  # the warm-up resumes where it stopped
