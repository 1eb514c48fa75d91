"""A zuko normalizing flow as a CAGE generator, and maximum-likelihood training of a MAF.

zuko's flows map data to noise in one pass: ``z = flow().transform(x)`` is the encoder (exact
inverse of the generator) and ``x = flow().transform.inv(z)`` the decoder (docs/generators.md).
The base distribution is ``N(0, I)``, so the prior of CAGE's latents is the flow's base.

``order`` feeds the observation's variables to the flow permuted (the paper's reversed-variable-order
experiment); ``decode`` undoes the permutation, so observations always come out in data order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cage.generators.base import gaussian_sample
from cage_eval import progress


class FlowGenerator:
    """:class:`cage.generators.base.EncodingGenerator` over a zuko flow.

    Parameters
    ----------
    flow : zuko.flows.Flow
        An unconditional flow (``flow()`` builds the distribution).
    order : sequence of int, optional
        Variable order presented to the flow (default: data order).
    """

    def __init__(self, flow: torch.nn.Module, order: Sequence[int] | None = None) -> None:
        self.flow = flow.eval()
        with torch.no_grad():
            self._dist = flow()
        self.latent_dim = int(self._dist.base.event_shape[0])
        order = list(range(self.latent_dim)) if order is None else list(order)
        if sorted(order) != list(range(self.latent_dim)):
            raise ValueError(f"order {order} is not a permutation of range({self.latent_dim})")
        self.order = torch.as_tensor(order)
        self.inverse_order = torch.argsort(self.order)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded draws from the base ``N(0, I)``, shape (n, latent_dim), float32."""
        return gaussian_sample(n, self.latent_dim, seed)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Observations ``G(z)``, shape (n, latent_dim), in data variable order."""
        x = self._dist.transform.inv(z.to(torch.float32))
        return x[:, self.inverse_order]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``G^{-1}(x)`` (exact inverse), shape (n, latent_dim)."""
        return self._dist.transform(torch.as_tensor(x, dtype=torch.float32)[:, self.order])

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Model log-density of observations ``x``, shape (n,)."""
        return self._dist.log_prob(torch.as_tensor(x, dtype=torch.float32)[:, self.order])


@dataclass(frozen=True)
class MAFSpec:
    """Architecture and optimisation of a MAF trained by maximum likelihood.

    ``steps`` full-batch Adam steps at learning rate ``lr`` (cosine-decayed to 0).
    """

    features: int
    transforms: int = 5
    hidden: tuple[int, ...] = (64, 64)
    steps: int = 1500
    lr: float = 3e-3


def build_maf(spec: MAFSpec) -> torch.nn.Module:
    """An untrained ``zuko.flows.MAF`` with ``spec``'s architecture."""
    import zuko

    return zuko.flows.MAF(features=spec.features, transforms=spec.transforms,
                          hidden_features=tuple(spec.hidden))


def train_maf(x: np.ndarray, spec: MAFSpec, *, seed: int) -> tuple[torch.nn.Module, list[float]]:
    """Fit a MAF to ``x`` (n, features) by maximum likelihood.

    Returns
    -------
    flow : zuko.flows.MAF
    losses : list of float
        Mean negative log-likelihood (nats) every 100 steps and at the end.
    """
    with torch.random.fork_rng():  # seeded without disturbing the caller's global RNG
        torch.manual_seed(seed)
        flow = build_maf(spec)
        data = torch.as_tensor(x, dtype=torch.float32)
        opt = torch.optim.Adam(flow.parameters(), lr=spec.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(spec.steps, 1))
        losses: list[float] = []
        with progress.bar(spec.steps, "training the MAF", "step") as bar:
            for step in range(spec.steps):
                _maf_step(flow, data, opt, sched, step, spec.steps, losses)
                bar.update(1)
    return flow.eval(), losses


def _maf_step(flow: torch.nn.Module, data: torch.Tensor, opt: torch.optim.Optimizer,
              sched: Any, step: int, steps: int, losses: list[float]) -> None:
    """One full-batch maximum-likelihood step; the loss is kept every 100 steps and at the end."""
    loss = -flow().log_prob(data).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 100 == 0 or step == steps - 1:
        losses.append(loss.item())
