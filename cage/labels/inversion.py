"""Optimisation-based inversion: latents for real images of a generator that has no encoder (GANs).

For each image ``x`` (``(C, H, W)`` in ``[0, 1]``) the latent minimises

    L(z) = mean_pixels (G(z) - x)^2  +  prior_weight * mean_j ((z_j - mu_j) / sigma_j)^2

with Adam (learning rate ``lr``) for exactly ``steps`` steps, starting at ``mu``. ``mu`` and
``sigma`` are the per-coordinate mean and standard deviation of ``prior_samples`` draws of the
generator's own prior (``sample``): for ``z ~ N(0, I)`` the prior term is ``|z|^2 / d``; in
StyleGAN's ``w`` space it keeps the latent near the mapping's output distribution, where the
latent classifiers were fitted (the start ``mu`` is about ``w_avg``). The loss of a batch is the
*sum* of the per-image losses and Adam works coordinate by coordinate, so an image's latent does
not depend on which other images share its batch.

Budget: ``steps`` forward and backward passes of the generator per image (in batches of
``batch_size``). The final per-image reconstruction MSE is reported (mean, median, 90th percentile,
max) in the manifest: a large error means the latents do not represent the images and the latent
classifiers are fitted on something else.

``decode`` must let gradients reach ``z`` (no ``torch.no_grad``, no detour through NumPy); the
reference adapters do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cage_eval.errors import ConfigError


@dataclass(frozen=True)
class InversionConfig:
    """Loss weight, optimiser and budget of the inversion (module docstring)."""

    steps: int = 200
    lr: float = 0.05
    prior_weight: float = 1e-3
    batch_size: int = 16
    prior_samples: int = 4096


class Inverter:
    """Inverts batches of images through ``generator.decode`` by gradient descent on the latents.

    Parameters
    ----------
    generator : object
        ``latent_dim``, ``sample(n, seed)``, differentiable ``decode(z)``.
    config : InversionConfig
    seed : int
        Seed of the prior draws that give ``mu`` and ``sigma``.
    where : str
        The config section, for messages.
    """

    def __init__(self, generator: Any, config: InversionConfig, *, seed: int = 0,
                 where: str = "[labels] encoder = 'inversion'") -> None:
        self.generator = generator
        self.config = config
        self.where = where
        with torch.no_grad():
            prior = torch.as_tensor(generator.sample(config.prior_samples, seed), dtype=torch.float32)
        self.mu = prior.mean(0)
        self.sigma = prior.std(0).clamp_min(1e-6) if prior.shape[0] > 1 else torch.ones_like(self.mu)

    def _losses(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.generator.decode(z)
        if not recon.requires_grad:
            raise ConfigError(f"{self.where}: the generator's decode(z) lets no gradient reach z "
                              "(it runs under torch.no_grad(), detaches, or leaves torch), so it "
                              "cannot be inverted by optimisation; use encoder = \"generator\", "
                              "a user encoder \"module:callable\", or precomputed latents")
        mse = (recon - x).pow(2).flatten(1).mean(1)
        prior = ((z - self.mu) / self.sigma).pow(2).mean(1)
        return mse, prior

    def invert(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(m, latent_dim)`` and final reconstruction MSE ``(m,)`` of ``images``
        ``(m, C, H, W)`` in ``[0, 1]``; processed in batches of ``config.batch_size``."""
        cfg = self.config
        latents, errors = [], []
        for start in range(0, images.shape[0], cfg.batch_size):
            x = images[start:start + cfg.batch_size].to(torch.float32)
            z = self.mu.repeat(x.shape[0], 1).clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=cfg.lr)
            with torch.enable_grad():
                for _ in range(cfg.steps):
                    mse, prior = self._losses(z, x)
                    loss = (mse + cfg.prior_weight * prior).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                final = (self.generator.decode(z.detach()) - x).pow(2).flatten(1).mean(1)
            latents.append(z.detach().clone())
            errors.append(final.to(torch.float32))
        return torch.cat(latents), torch.cat(errors)


def error_summary(mse: np.ndarray, config: InversionConfig) -> dict[str, Any]:
    """The manifest's account of an inversion: settings and the final per-image MSE."""
    mse = np.asarray(mse, dtype=np.float64)
    return {"loss": "mean pixel MSE + prior_weight * mean(((z - mu) / sigma)^2)",
            **asdict(config), "images": int(mse.size),
            "final_mse": {"mean": float(mse.mean()), "median": float(np.median(mse)),
                          "p90": float(np.quantile(mse, 0.9)), "max": float(mse.max())}}
