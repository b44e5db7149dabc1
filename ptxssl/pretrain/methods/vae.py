"""β-VAE: encoder (--arch, ResNet-34 by default) -> (μ, log σ²) -> sampled latent z -> convolutional decoder.

Loss (the negative ELBO with a weighted KL term, Higgins et al. 2017, "β-VAE: Learning Basic
Visual Concepts with a Constrained Variational Framework"; Kingma & Welling 2014,
"Auto-Encoding Variational Bayes")::

    loss = recon + β · KL(q(z|x) || N(0, I))

Reduction: both terms are *summed* over their elements (recon over pixels and channels,
KL over latent dimensions) and *averaged* over the batch. That is the per-image ELBO, so
β = 1 is the plain VAE and β keeps its meaning at any image size or latent size (a per-pixel
mean beside a summed KL would silently scale β by 1/pixels). recon is BCE on the logits
(a Bernoulli decoder, the default) or the squared error of sigmoid(logits) (a Gaussian decoder
with fixed variance, up to a constant).

KL warm-up: β rises linearly from 0 to `beta` over `kl_warmup` training steps. The count is
a buffer, so it is checkpointed and a resumed run continues the schedule; it counts calls of
`step` in training mode, i.e. batches (with --accumulate k, k per optimizer step).
The decoder sees only the deepest encoder features, never skip connections (no identity shortcut).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ptxssl.errors import UserError
from ptxssl.engine.config import opt
from ptxssl.encoders import DEFAULT_ARCH, deepest
from ptxssl.pretrain.methods.ae import AEConfig, reconstruction_loss
from ptxssl.pretrain.methods.base import Method
from ptxssl.pretrain.methods.decoder import Bottleneck, ConvDecoder

LOGVAR_RANGE = (-10.0, 10.0)  # clamp log σ² so exp() can neither vanish nor overflow
SAMPLES_SEED = 0  # samples.png always shows the same z, so figures of two runs compare


@dataclass
class VAEConfig(AEConfig):
    beta: float = opt(1.0, "Weight β of the KL term (β-VAE; 1 = plain VAE).")
    kl_warmup: int = opt(0, "Steps over which β rises linearly from 0 (0: off).")


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, I)) per item, summed over latents: ½ Σ (μ² + σ² − 1 − log σ²).

    Shape: mu, logvar (N, D) -> (N,).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


class VAE(Method):
    name = "vae"
    title = "β-VAE"
    config_class = VAEConfig

    def __init__(self, cfg: VAEConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        if cfg.beta < 0:
            raise UserError(f"--beta must be >= 0 (got {cfg.beta})")
        if cfg.kl_warmup < 0:
            raise UserError(f"--kl-warmup must be >= 0 steps (got {cfg.kl_warmup}); 0 turns warm-up off")
        if cfg.recon_loss not in ("bce", "mse"):
            raise UserError(f"--recon-loss must be bce or mse (got {cfg.recon_loss!r})")
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.to_stats = Bottleneck(self.encoder, image_size, 2 * cfg.latent_dim)
        self.decoder = ConvDecoder(cfg.latent_dim, image_size, in_channels)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) in [0, 1] -> μ, log σ², each (N, latent_dim)."""
        mu, logvar = self.to_stats(deepest(self.encoder, x)).chunk(2, dim=1)  # (N, latent_dim) x 2
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> (N, latent_dim) posterior means μ, for the analysis stage."""
        return self.encode(x)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> (N, C, S, S) in [0, 1]: the decoded posterior mean."""
        return torch.sigmoid(self.decoder(self.latent(x)))

    def reparameterise(self, mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
        """z = μ + σ·ε with ε ~ N(0, I) from `generator` (CPU) in training; z = μ in eval mode."""
        if not self.training:
            return mu
        if generator is None:
            raise ValueError("training needs batch['generator'] (a seeded torch.Generator) for ε")
        eps = torch.randn(mu.shape, generator=generator).to(mu)  # (N, latent_dim)
        return mu + (0.5 * logvar).exp() * eps

    def current_beta(self) -> torch.Tensor:
        """β at the current step: cfg.beta · min(1, steps / kl_warmup), a 0-d tensor."""
        if self.cfg.kl_warmup == 0:
            return torch.tensor(float(self.cfg.beta), device=self.steps.device)
        ramp = (self.steps.float() / self.cfg.kl_warmup).clamp(max=1.0)
        return self.cfg.beta * ramp

    def losses(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The loss terms for images `x`, without advancing the warm-up counter."""
        mu, logvar = self.encode(x)  # (N, latent_dim) x 2
        logits = self.decoder(self.reparameterise(mu, logvar, generator))  # (N, C, S, S)
        n = x.shape[0]
        recon = reconstruction_loss(logits, x, self.cfg.recon_loss, reduction="sum") / n
        kl = kl_to_standard_normal(mu.float(), logvar.float()).mean()
        beta = self.current_beta()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "beta": beta}

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.losses(batch["image"], batch.get("generator"))
        if self.training:
            self.steps += 1
        return out

    @torch.no_grad()
    def write_figures(self, batch: dict, out_dir: Path) -> list[Path]:
        """reconstructions.png (inputs vs decoded μ) and samples.png (16 decoded z ~ N(0, I))."""
        from ptxssl.pretrain.figures import image_grid

        x = batch["image"][:8]
        recon = self.reconstruct(x)  # (n, C, S, S)
        g = torch.Generator().manual_seed(SAMPLES_SEED)
        z = torch.randn(16, self.cfg.latent_dim, generator=g).to(x)  # (16, latent_dim)
        samples = torch.sigmoid(self.decoder(z))  # (16, C, S, S)
        out_dir = Path(out_dir)
        return [image_grid([x, recon], out_dir / "reconstructions.png",
                           title="β-VAE: input (top) and reconstruction from μ (bottom)"),
                image_grid([samples[:8], samples[8:]], out_dir / "samples.png",
                           title=f"β-VAE: decoded samples z ~ N(0, I) (seed {SAMPLES_SEED})")]
