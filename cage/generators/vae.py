"""A small convolutional VAE for 28x28 digits, trained by the project, with a posterior-mean encoder.

Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014). The decoder's output is the mean of
a continuous Bernoulli-style likelihood (binary cross-entropy on intensities in [0, 1]), which keeps
the grey levels that carry the ``bright`` attribute. CAGE edits the latent ``z`` of the prior
``N(0, I)``; the encoder used for real images is the posterior mean (docs/method.md §1).

Training is deterministic for a given seed: one torch thread, ``torch.use_deterministic_algorithms``,
and a seeded ``torch.Generator`` for initialisation, shuffling and the reparameterisation noise.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cage.compute.runtime import deterministic_torch, torch_threads
from cage.generators.base import gaussian_sample
from cage_eval import progress


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and training hyperparameters (defaults: the shipped weights)."""

    latent_dim: int = 16
    channels: tuple[int, int] = (32, 64)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    beta: float = 1.0
    seed: int = 0
    max_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class ConvVAE(nn.Module):
    """Encoder: two stride-2 convolutions and a linear map to (mu, log var); decoder: the mirror."""

    def __init__(self, latent_dim: int = 16, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.latent_dim = latent_dim
        self.channels = (c1, c2)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(c2 * 7 * 7, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, c2 * 7 * 7)
        self.decoder = nn.Sequential(
            nn.LeakyReLU(0.1),
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1),
        )

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each ``(n, latent_dim)``."""
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits, ``(n, 1, 28, 28)``."""
        return self.decoder(self.from_latent(z))


@dataclass
class TrainingReport:
    """Per-epoch mean loss (negative ELBO per image, nats) and the final reconstruction error."""

    losses: list[float] = field(default_factory=list)
    recon_mse: float = float("nan")
    steps: int = 0


def train_vae(images: np.ndarray, config: VAEConfig) -> tuple[ConvVAE, TrainingReport]:
    """Fit a :class:`ConvVAE` by maximising the ELBO.

    Parameters
    ----------
    images : np.ndarray, shape (n, 1, 28, 28), float32 in [0, 1]
    config : VAEConfig

    Returns
    -------
    model : ConvVAE  (in eval mode)
    report : TrainingReport
    """
    x_all = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    report = TrainingReport()
    with deterministic_torch(), contextlib.ExitStack() as stack:
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        model = ConvVAE(config.latent_dim, config.channels)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        n = x_all.shape[0]
        total_steps = config.epochs * max(1, -(-n // config.batch_size))
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps)
        model.train()
        bar = stack.enter_context(progress.bar(total_steps, "training the VAE", "step"))
        while report.steps < total_steps:
            order = torch.randperm(n, generator=gen)
            epoch_loss, seen = 0.0, 0
            for start in range(0, n, config.batch_size):
                if report.steps >= total_steps:
                    break
                x = x_all[order[start:start + config.batch_size]]
                mu, logvar = model.stats(x)
                eps = torch.randn(mu.shape, generator=gen)
                z = mu + eps * torch.exp(0.5 * logvar)
                recon = F.binary_cross_entropy_with_logits(model.logits(z), x, reduction="sum")
                kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                loss = (recon + config.beta * kl) / x.shape[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                report.steps += 1
                bar.update(1)
                epoch_loss += float(loss.detach()) * x.shape[0]
                seen += x.shape[0]
            report.losses.append(epoch_loss / max(seen, 1))
        model.eval()
        with torch.no_grad():
            mu, _ = model.stats(x_all)
            recon = torch.sigmoid(model.logits(mu))
            report.recon_mse = float(F.mse_loss(recon, x_all))
    return model, report


class VAEGenerator:
    """:class:`cage.generators.base.EncodingGenerator` over a trained :class:`ConvVAE`.

    ``decode`` returns decoder means in [0, 1], shape ``(n, 1, 28, 28)``; ``encode`` the posterior
    mean. Both run without gradients in batches of ``batch_size``, on ``threads`` torch threads
    (default 1): the outputs then do not depend on the machine's core count, so every number
    computed from decoded images is reproducible across machines, and on a busy 2-core machine one
    thread is also the faster choice (measured 6,700 vs 3,000 images/s).
    """

    obs_shape = (1, 28, 28)

    def __init__(self, model: ConvVAE, batch_size: int = 512, threads: int | None = 1) -> None:
        self.model = model.eval()
        self.latent_dim = model.latent_dim
        self.batch_size = batch_size
        self.threads = threads

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded prior draws ``z ~ N(0, I)``, shape (n, latent_dim), float32."""
        return gaussian_sample(n, self.latent_dim, seed)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        with torch_threads(self.threads):
            parts = [torch.sigmoid(self.model.logits(z[s:s + self.batch_size]))
                     for s in range(0, z.shape[0], self.batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, *self.obs_shape)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        with torch_threads(self.threads):
            parts = [self.model.stats(x[s:s + self.batch_size])[0]
                     for s in range(0, x.shape[0], self.batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.latent_dim)


def state_to_bytes(model: nn.Module) -> bytes:
    """Serialise a state dict (``torch.save`` writes no timestamps: same weights, same bytes)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def vae_from_bytes(data: bytes, config: VAEConfig) -> ConvVAE:
    """Rebuild a :class:`ConvVAE` from :func:`state_to_bytes` output."""
    model = ConvVAE(config.latent_dim, config.channels)
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return model.eval()
