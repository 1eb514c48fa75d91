"""The generator interface CAGE needs, and adapters.

A generator maps latents ``z`` (shape ``(n, latent_dim)``, float32) to observations. CAGE samples
latents from the prior, decodes them, and (for the counterfactual pairs) encodes real observations:
the exact inverse for a flow, the posterior mean for a VAE (cage_method.md section 1).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class LatentGenerator(Protocol):
    """What CAGE requires of a pretrained latent-variable generator.

    Attributes
    ----------
    latent_dim : int
        Size of the latent space CAGE edits.
    """

    latent_dim: int

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` prior draws, shape ``(n, latent_dim)``, float32 (``z ~ N(0, I)``)."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Observations for latents ``z``: shape ``(n, *obs_shape)``; images are ``(n, C, H, W)`` in
        ``[0, 1]``."""
        ...


@runtime_checkable
class EncodingGenerator(LatentGenerator, Protocol):
    """A generator that can also encode observations back to latents."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents for observations ``x``: exact inverse (flow) or posterior mean (VAE)."""
        ...
