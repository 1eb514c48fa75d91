"""What every StyleGAN2-family adapter shares: the ``z`` / ``w`` / ``w+`` spaces, the untruncated
prior, truncation towards the average ``w`` in ``decode``, and batched deterministic decoding.

An adapter supplies two pieces, ``_mapping`` (``z -> ws``, shape ``(n, n_layers, w_dim)``,
untruncated) and ``_synthesis`` (``ws -> images`` in the network's own ``[-1, 1]`` layout); this base
turns them into a :class:`cage.generators.base.LatentGenerator`. The spaces:

``z``   ``z_dim`` values, prior ``N(0, I)`` (optionally renormalised to norm ``sqrt(z_dim)``);
``w``   ``w_dim`` values, prior ``mapping(z)``; decode broadcasts ``w`` to every layer;
``w+``  ``n_layers * w_dim`` values (the per-layer ``w`` flattened), prior ``mapping(z)``.

Truncation ``w_avg + ψ (ws - w_avg)`` on the first ``truncation_cutoff`` layers (all when unset)
is applied in ``decode`` only: the prior CAGE fits its classifiers on stays untruncated.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

from cage.generators.base import gaussian_sample
from cage.generators.device import Compute, batched
from cage.generators.output import OutputLayout

__all__ = ["GAN_LAYOUT", "SPACES", "StyleGAN2Base"]

SPACES = ("z", "w", "w+")
#: StyleGAN2 synthesis networks write images in ``[-1, 1]``; decode maps them to ``[0, 1]``, clipped.
GAN_LAYOUT = OutputLayout(value_range=(-1.0, 1.0), clamp=True)


class StyleGAN2Base(abc.ABC):
    """The spaces, prior, truncation and decoding of a StyleGAN2-family generator.

    Parameters
    ----------
    z_dim, w_dim, n_layers : int
        Sizes of ``z``, of one layer's ``w``, and the number of ``w`` layers.
    w_avg : torch.Tensor, shape (w_dim,)
        The truncation centre.
    space : {"z", "w", "w+"}
    truncation_psi : float
    truncation_cutoff : int, optional
    renormalize_z : bool
    compute : Compute
    """

    def __init__(self, *, z_dim: int, w_dim: int, n_layers: int, w_avg: torch.Tensor,
                 space: str, truncation_psi: float, truncation_cutoff: int | None,
                 renormalize_z: bool, compute: Compute) -> None:
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        self.compute = compute
        self.space = space
        self.z_dim, self.w_dim, self.n_layers = int(z_dim), int(w_dim), int(n_layers)
        self.w_avg = w_avg.reshape(-1).to(self.compute.device, torch.float32)
        self.psi = float(truncation_psi)
        self.cutoff = truncation_cutoff
        self.renormalize_z = renormalize_z
        self.latent_dim = {"z": self.z_dim, "w": self.w_dim, "w+": self.n_layers * self.w_dim}[space]
        self.batch_size = self.compute.batch_size
        self.device = str(self.compute.device)

    # ------------------------------------------------------------------ the adapter's pieces

    @abc.abstractmethod
    def _mapping(self, z: torch.Tensor) -> torch.Tensor:
        """``z -> ws`` (n, n_layers, w_dim), untruncated."""

    @abc.abstractmethod
    def _synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """``ws`` (n, n_layers, w_dim) -> images (n, C, H, W) in ``[-1, 1]``."""

    # ------------------------------------------------------------------ shared

    def _renorm(self, z: torch.Tensor) -> torch.Tensor:
        return z * (math.sqrt(self.z_dim) / z.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def to_ws(self, latent: torch.Tensor) -> torch.Tensor:
        """Per-layer ``ws`` (n, n_layers, w_dim) of latents in this adapter's space, untruncated."""
        if self.space == "z":
            return self._mapping(self._renorm(latent) if self.renormalize_z else latent)
        if self.space == "w":
            return latent[:, None, :].expand(-1, self.n_layers, -1)
        return latent.reshape(latent.shape[0], self.n_layers, self.w_dim)

    def truncate(self, ws: torch.Tensor) -> torch.Tensor:
        """``w_avg + ψ (ws - w_avg)`` on the first ``truncation_cutoff`` layers (all if None)."""
        if self.psi == 1.0:
            return ws
        cut = self.n_layers if self.cutoff is None else min(self.cutoff, self.n_layers)
        head = self.w_avg + self.psi * (ws[:, :cut] - self.w_avg)
        return torch.cat([head, ws[:, cut:]], dim=1) if cut < self.n_layers else head

    def _forward(self, latent: torch.Tensor) -> torch.Tensor:
        return GAN_LAYOUT.to_protocol(self._synthesis(self.truncate(self.to_ws(latent))))

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded prior draws in this adapter's space (untruncated), CPU float32."""
        z = gaussian_sample(n, self.z_dim, seed)
        if self.renormalize_z:
            z = self._renorm(z)
        if self.space == "z":
            return z
        with torch.no_grad():
            ws = batched(self._mapping, z, self.compute)
        return ws[:, 0].contiguous() if self.space == "w" else ws.reshape(n, -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in ``[0, 1]``, CPU float32."""
        return batched(self._forward, torch.as_tensor(z), self.compute, autocast=True)

    def describe(self) -> dict[str, Any]:
        return {"space": self.space, "z_dim": self.z_dim, "w_dim": self.w_dim,
                "n_layers": self.n_layers, "truncation_psi": self.psi,
                "truncation_cutoff": self.cutoff, "renormalize_z": self.renormalize_z}
