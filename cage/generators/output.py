"""From what a network outputs to what CAGE expects: images ``(n, C, H, W)`` in ``[0, 1]``.

Generators differ in range (``[-1, 1]`` for most GANs), layout (channels last) and shape (a flow
over flattened pixels outputs ``(n, C*H*W)``). :class:`OutputLayout` states those three facts and
converts both ways (``to_protocol`` for decoded outputs, ``from_protocol`` for images given to an
encoder); :class:`LayoutGenerator` applies it around any generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from cage.generators.base import batch_size_of


@dataclass(frozen=True)
class OutputLayout:
    """How a network's raw output relates to protocol images.

    Attributes
    ----------
    value_range : (float, float)
        The raw values that mean black and white (``(-1, 1)`` for most GANs).
    channels_last : bool
        Raw images are ``(n, H, W, C)``.
    shape : tuple of int, optional
        ``(C, H, W)``: raw outputs are flat ``(n, C*H*W)`` (or ``(n, H*W*C)`` with
        ``channels_last``) and are reshaped.
    clamp : bool
        Clip to ``[0, 1]`` after mapping the range (GAN outputs overshoot ``[-1, 1]`` a little).
    size : (int, int), optional
        ``(H, W)``: resize decoded images to this size (bilinear, antialiased), e.g. to work on
        256 x 256 faces from a 1024 x 1024 generator.
    """

    value_range: tuple[float, float] = (0.0, 1.0)
    channels_last: bool = False
    shape: tuple[int, int, int] | None = None
    clamp: bool = False
    size: tuple[int, int] | None = None

    def to_protocol(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw network output -> ``(n, C, H, W)`` float32 in ``[0, 1]`` (unless not clamped)."""
        x = raw.to(torch.float32)
        if self.shape is not None:
            c, h, w = self.shape
            x = x.reshape(x.shape[0], h, w, c) if self.channels_last else x.reshape(x.shape[0], c, h, w)
        if self.channels_last and x.ndim == 4:
            x = x.permute(0, 3, 1, 2)
        lo, hi = self.value_range
        if (lo, hi) != (0.0, 1.0):
            x = (x - lo) / (hi - lo)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                              antialias=True)
        if self.clamp:
            x = x.clamp(0.0, 1.0)
        return x.contiguous()

    def from_protocol(self, images: torch.Tensor) -> torch.Tensor:
        """Protocol images ``(n, C, H, W)`` in ``[0, 1]`` -> the network's raw layout and range."""
        x = images.to(torch.float32)
        lo, hi = self.value_range
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        if self.shape is not None:
            x = x.reshape(x.shape[0], -1)
        return x.contiguous()

    def describe(self) -> dict[str, Any]:
        return {"output_range": list(self.value_range), "channels_last": self.channels_last,
                "image_shape": list(self.shape) if self.shape else None, "clamp": self.clamp,
                "output_size": list(self.size) if self.size else None}


class LayoutGenerator:
    """A generator whose ``decode`` output passes through an :class:`OutputLayout` (and whose
    ``encode``, if any, receives images converted back to the raw layout).

    Parameters
    ----------
    inner : object
        Any generator with ``latent_dim``, ``sample`` and ``decode`` (and optionally ``encode``).
    layout : OutputLayout
    """

    def __init__(self, inner: Any, layout: OutputLayout) -> None:
        self.inner = inner
        self.layout = layout
        self.latent_dim = inner.latent_dim
        self.batch_size = batch_size_of(inner)
        if hasattr(inner, "encode"):
            self.encode = self._encode

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return self.inner.sample(n, seed)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.layout.to_protocol(self.inner.decode(z))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(self.layout.from_protocol(x))

    def describe(self) -> dict[str, Any]:
        inner = getattr(self.inner, "describe", None)
        return {**(inner() if callable(inner) else {}), **self.layout.describe()}
