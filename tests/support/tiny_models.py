"""A researcher's own models, as cage-eval sees them: tiny, randomly initialised, nothing downloaded.

Tests import it directly, or copy it into a temporary folder and name it in an experiment's
``python_path`` (as a user would with their own code). Everything is seeded, so the same arguments
give the same weights.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import torch
from torch import nn

from cage.generators.device import Compute
from cage.generators.output import OutputLayout
from cage.generators.torch_module import TorchModuleGenerator


class TinySynthesis(nn.Module):
    """``z (n, latent_dim) -> images (n, channels, size, size)`` in ``[-1, 1]`` (tanh)."""

    def __init__(self, latent_dim: int = 8, size: int = 16, channels: int = 3) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.base = size // 4
        self.fc = nn.Linear(latent_dim, 8 * self.base * self.base)
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(8, channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.fc(z).view(-1, 8, self.base, self.base)))


def make_synthesis(latent_dim: int = 8, size: int = 16, channels: int = 3,
                   seed: int = 0) -> TinySynthesis:
    """A seeded random :class:`TinySynthesis`."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TinySynthesis(latent_dim, size, channels).eval()


def make_generator(latent_dim: int = 8, size: int = 16, channels: int = 3, seed: int = 0,
                   device: str = "cpu") -> TorchModuleGenerator:
    """A factory returning the protocol object (``[generator] factory = "tiny_models:..."``)."""
    return TorchModuleGenerator(make_synthesis(latent_dim, size, channels, seed),
                                latent_dim=latent_dim,
                                layout=OutputLayout(value_range=(-1.0, 1.0)),
                                compute=Compute(device=torch.device(device)))


def make_fragile_generator(latent_dim: int = 8, size: int = 16, channels: int = 3,
                           seed: int = 0, batch_size: int = 64) -> TorchModuleGenerator:
    """:func:`make_generator` decoding ``batch_size`` rows a call, except on the rank named by ``CAGE_TEST_FAULT_RANK`` of a torchrun
    job, where ``CAGE_TEST_FAULT = "kill"`` makes it SIGKILL itself (``"raise"``: raise a
    RuntimeError) at its first decode under deterministic algorithms. Outside torchrun both
    variables are unset, so the fault hits the one process. Pair making runs under them
    (``cage.compute.runtime.deterministic_torch``) and eq. 9 scoring does not, so the fault hits the
    rank's first pair job, after every score unit is checkpointed."""
    gen = TorchModuleGenerator(make_synthesis(latent_dim, size, channels, seed),
                               latent_dim=latent_dim, layout=OutputLayout(value_range=(-1.0, 1.0)),
                               compute=Compute(batch_size=batch_size))
    fault = os.environ.get("CAGE_TEST_FAULT", "")
    if not fault or os.environ.get("RANK") != os.environ.get("CAGE_TEST_FAULT_RANK"):
        return gen
    decode = gen.decode

    def faulty(z: torch.Tensor) -> torch.Tensor:
        if fault == "kill" and torch.are_deterministic_algorithms_enabled():
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "raise" and torch.are_deterministic_algorithms_enabled():
            raise RuntimeError("planted failure while making pairs")
        return decode(z)

    gen.decode = faulty  # type: ignore[method-assign]
    return gen


def make_spoiling_generator(spoil: str = "nan", share: float = 0.3, latent_dim: int = 8,
                            size: int = 16, channels: int = 3, seed: int = 0,
                            batch_size: int = 64) -> TorchModuleGenerator:
    """:func:`make_generator` whose decode, under deterministic algorithms only (pair making; the
    start-up checks and eq. 9 do not run under them), spoils about ``share`` of the images: a
    3x3 corner of NaN (``spoil = "nan"``) or of 1.5 (``"high"``). Which images are spoiled
    depends on their latent alone."""
    gen = TorchModuleGenerator(make_synthesis(latent_dim, size, channels, seed),
                               latent_dim=latent_dim, layout=OutputLayout(value_range=(-1.0, 1.0)),
                               compute=Compute(batch_size=batch_size))
    decode = gen.decode

    def spoiled(z: torch.Tensor) -> torch.Tensor:
        x = decode(z)
        if not torch.are_deterministic_algorithms_enabled():
            return x
        hit = torch.frac(z[:, 0].abs() * 1000.0) < share
        x = x.clone()
        x[hit, :, :3, :3] = float("nan") if spoil == "nan" else 1.5
        return x

    gen.decode = spoiled  # type: ignore[method-assign]
    return gen


class ImageStats:
    """An observation classifier: ``bright`` (mean intensity above ``bright_at``) and, for colour
    images, ``red`` (red minus blue above ``red_at``), as sharp sigmoids."""

    def __init__(self, bright_at: float = 0.5, red_at: float = 0.0, sharpness: float = 40.0):
        self.bright_at, self.red_at, self.sharpness = bright_at, red_at, sharpness
        self.attributes = ["bright", "red"]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        lum = images.mean(dim=(1, 2, 3))
        out = {"bright": torch.sigmoid(self.sharpness * (lum - self.bright_at))}
        if images.shape[1] == 3:
            red = images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2))
            out["red"] = torch.sigmoid(self.sharpness * (red - self.red_at))
        return out


def stats_array(images: torch.Tensor) -> np.ndarray:
    """The same two statistics as an ``(n, 2)`` array of probabilities (columns bright, red)."""
    probs = ImageStats(0.5, 0.0)(images)
    return torch.stack([probs["bright"], probs["red"]], dim=1).numpy()


class Incomplete:
    """Has a latent size and a prior but no ``decode``."""

    latent_dim = 8

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return torch.zeros(n, 8)


def make_incomplete() -> Incomplete:
    return Incomplete()


class _Raw:
    def __init__(self, fn):
        self.latent_dim = 8
        self.fn = fn

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


def make_unscaled(seed: int = 0) -> _Raw:
    """Decodes to ``[-1, 1]`` without saying so (no ``output_range``)."""
    net = make_synthesis(seed=seed)
    return _Raw(net)


def make_flat(seed: int = 0) -> _Raw:
    """Decodes to ``(n, 16, 16)``: no channel axis."""
    net = make_synthesis(channels=1, seed=seed)
    return _Raw(lambda z: (net(z)[:, 0] + 1) / 2)
