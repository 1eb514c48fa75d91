"""The project's convolutional VAE (:mod:`cage.generators.vae`) as a configurable generator.

Useful to run the ``generator`` experiment kind on a VAE trained by ``cage-eval train`` (or the
shipped digits weights) with other labels, and as the reference for an encoding generator: images
``(n, 1, 28, 28)`` in ``[0, 1]``, ``encode`` the posterior mean.

Section keys (``adapter = "cage_vae"``)::

    weights = "digits_vae.pt"   # a ConvVAE state dict; default: the shipped digits weights
    latent_dim = 16             # must match the weights
    channels = [32, 64]

plus ``device``, ``batch_size``, ``autocast``, ``threads`` (:mod:`cage.generators.device`).
"""

from __future__ import annotations

from typing import Any

import torch

from cage.config.sections import Section
from cage.generators.base import gaussian_sample
from cage.generators.device import Compute, batched, freeze
from cage.generators.torch_module import load_state
from cage.generators.vae import ConvVAE

SHIPPED_WEIGHTS = "digits_vae.pt"


class ConvVAEGenerator:
    """:class:`cage.generators.base.EncodingGenerator` over a :class:`ConvVAE` on any device.

    ``decode``: decoder means ``sigmoid(logits)``, ``(n, 1, 28, 28)``; ``encode``: posterior mean.
    """

    def __init__(self, model: ConvVAE, compute: Compute | None = None) -> None:
        self.compute = compute or Compute()
        self.model = model.to(self.compute.device)
        freeze(self.model)
        self.latent_dim = int(model.latent_dim)
        self.batch_size = self.compute.batch_size
        self.device = str(self.compute.device)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return gaussian_sample(n, self.latent_dim, seed)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return batched(lambda zb: torch.sigmoid(self.model.logits(zb)), torch.as_tensor(z),
                       self.compute, autocast=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return batched(lambda xb: self.model.stats(xb)[0], torch.as_tensor(x), self.compute)

    def describe(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "channels": list(self.model.channels)}


def from_section(section: Section, compute: Compute) -> ConvVAEGenerator:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    from cage.experiments.digits.models import shipped_dir

    weights = section.path("weights", None, what="give a ConvVAE state dict (cage-eval train "
                           "writes digits_vae.pt)")
    latent_dim = section.integer("latent_dim", 16, minimum=2)
    channels = section.numbers("channels", (32, 64), length=2, integers=True)
    model = ConvVAE(latent_dim, (channels[0], channels[1]))
    path = weights if weights is not None else shipped_dir() / SHIPPED_WEIGHTS
    load_state(model, path, None, section.where("weights"))
    return ConvVAEGenerator(model.eval(), compute)
