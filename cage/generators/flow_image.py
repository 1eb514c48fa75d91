"""A full-dimensional multiscale Glow for 28x28 grey images (normflows), as a CAGE generator.

The paper's MorphoMNIST generator is an invertible flow (MintNet) whose latent has the image's
784 dimensions. This one is Glow (Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1
Convolutions", NeurIPS 2018) with RealNVP's multiscale layout (Dinh, Sohl-Dickstein, Bengio,
"Density estimation using Real NVP", ICLR 2017), built from ``normflows`` (Stimper et al., JOSS
2023) modules: ``GlowBlock`` (affine coupling with a small conv net, invertible 1x1 convolution,
ActNorm), ``Squeeze``, ``Merge``, a ``Logit`` preprocessing transform, and
``MultiscaleFlow``.

Layout (generative direction, ``levels = 2``)::

    z0 (8, 7, 7) -> blocks x 8 channels -> unsqueeze -> (2, 14, 14) ++ z1 (2, 14, 14)
      -> blocks x 4 channels -> unsqueeze -> (1, 28, 28) -> sigmoid (Logit inverse) -> y

The latent CAGE edits is ``z0`` and ``z1`` flattened and concatenated (784 numbers, coarse scale
first), with prior ``N(0, I)``.

Pixels and dequantisation: an 8-bit pixel ``v`` (0..255) is trained on as
``y = (v + u) / 256`` with ``u ~ U(0, 1)`` (uniform dequantisation), so the model is a density on
``[0, 1]^784`` and ``-log2 p(y) / 784 + 8`` bounds the bits per dimension of the 8-bit data.
``encode`` maps an image ``x = v / 255`` to the *centre* of its dequantisation bin,
``y = (v + 1/2) / 256``, and ``decode`` maps back with ``x = (256 y - 1/2) / 255`` (clipped to
[0, 1]), so ``decode(encode(x)) == x`` up to float error and ``encode(decode(z)) == z`` wherever
the decoded value is inside [0, 1].
"""

from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from cage.compute.runtime import deterministic_torch, torch_threads
from cage.generators.base import gaussian_sample

IMAGE_SHAPE = (1, 28, 28)
LATENT_DIM = 784


@dataclass(frozen=True)
class GlowConfig:
    """Architecture and training of the image flow (section ``[flow]``; defaults: shipped weights).

    Attributes
    ----------
    levels : int
        Multiscale levels (1 or 2 for 28x28).
    blocks : int
        Glow blocks per level.
    hidden : int
        Channels of each coupling network's hidden layers.
    logit_alpha : float
        RealNVP's logit preprocessing ``logit(alpha + (1 - 2 alpha) y)``.
    steps : int
        Adam steps (batches of ``batch_size``), learning rate ``lr`` with linear warm-up over
        ``warmup`` steps and cosine decay to 0.
    grad_clip : float
        Gradient-norm clipping.
    test_fraction : float
        Held-out share of the images for bits/dim.
    seed : int
        Initialisation, split, shuffling and dequantisation noise.
    """

    levels: int = 2
    blocks: int = 8
    hidden: int = 64
    logit_alpha: float = 0.05
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 50.0
    test_fraction: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_glow(config: GlowConfig) -> torch.nn.Module:
    """An untrained ``normflows.MultiscaleFlow`` with ``config``'s architecture (module docstring)."""
    import normflows as nf

    if config.levels not in (1, 2):
        raise ValueError(f"levels must be 1 or 2 for 28x28 images, got {config.levels}")
    with warnings.catch_warnings():  # normflows' LU 1x1 convolution calls the deprecated torch.lu
        warnings.filterwarnings("ignore", message="torch.lu is deprecated", category=UserWarning)
        q0, merges, flows = _levels(config, nf)
    return nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(config.logit_alpha),
                             class_cond=False)


def _levels(config: GlowConfig, nf: Any) -> tuple[list, list, list]:
    """Base distributions, merges and per-level flow lists of :func:`build_glow`."""
    c, h, w = IMAGE_SHAPE
    n_levels = config.levels
    q0, merges, flows = [], [], []
    for i in range(n_levels):
        channels = c * 2 ** (n_levels + 1 - i)
        level = [nf.flows.GlowBlock(channels, config.hidden, split_mode="channel", scale=True)
                 for _ in range(config.blocks)]
        flows.append([*level, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            shape = (c * 2 ** (n_levels - i), h // 2 ** (n_levels - i), w // 2 ** (n_levels - i))
        else:
            shape = (c * 2 ** (n_levels + 1), h // 2 ** n_levels, w // 2 ** n_levels)
        q0.append(nf.distributions.DiagGaussian(shape, trainable=False))
    return q0, merges, flows


def latent_shapes(flow: torch.nn.Module) -> list[tuple[int, ...]]:
    """The shape of each level's latent, coarse first (``(8, 7, 7), (2, 14, 14)`` for 2 levels)."""
    return [tuple(q.shape) for q in flow.q0]


def to_flow_space(x: torch.Tensor) -> torch.Tensor:
    """Image ``x = v / 255`` in [0, 1] -> the centre of its dequantisation bin ``(v + 1/2) / 256``."""
    return (x * 255.0 + 0.5) / 256.0


def from_flow_space(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_flow_space`, clipped to [0, 1]."""
    return ((y * 256.0 - 0.5) / 255.0).clamp(0.0, 1.0)


class GlowGenerator:
    """:class:`cage.generators.base.EncodingGenerator` over a trained multiscale Glow.

    Parameters
    ----------
    flow : normflows.MultiscaleFlow
    temperature : float
        Standard deviation of :meth:`sample`'s prior draws (1: the model's prior).
    threads : int or None
        Torch threads for encode / decode (1: results independent of the machine's cores).
    batch_size : int
        Rows per decode call the pipeline makes.
    """

    def __init__(self, flow: torch.nn.Module, *, temperature: float = 1.0,
                 threads: int | None = 1, batch_size: int = 512) -> None:
        self.flow = flow.eval()
        self.shapes = latent_shapes(flow)
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.latent_dim = int(sum(self.sizes))
        self.temperature = float(temperature)
        self.threads = threads
        self.batch_size = batch_size
        self.nonfinite_rows = 0

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded draws from ``N(0, temperature^2 I)``, shape (n, 784), float32."""
        z = gaussian_sample(n, self.latent_dim, seed)
        return z if self.temperature == 1.0 else z * self.temperature

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Flat latents (n, 784) -> the per-level tensors the flow takes."""
        parts = torch.split(z, self.sizes, dim=1)
        return [p.reshape(-1, *s) for p, s in zip(parts, self.shapes, strict=True)]

    def join(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Per-level latents -> flat (n, 784)."""
        return torch.cat([p.reshape(p.shape[0], -1) for p in zs], dim=1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``G(z)``, shape (n, 1, 28, 28), float32 in [0, 1].

        Glow's generative direction divides by each coupling's sigmoid scale; for about 0.2 % of
        prior latents a scale underflows and the image comes out NaN (in float64 too). Such
        pixels are set to 0 (background) and the rows counted in ``nonfinite_rows``.
        """
        y, _ = self.decode_with_log_det(z)
        bad = ~torch.isfinite(y)
        if bad.any():
            self.nonfinite_rows += int(bad.reshape(y.shape[0], -1).any(dim=1).sum())
            y = torch.where(bad, torch.zeros((), dtype=y.dtype), y)
        return from_flow_space(y)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``G^{-1}(x)`` of images in [0, 1] (exact inverse), shape (n, 784)."""
        z, _ = self.encode_with_log_det(x)
        return z

    def decode_with_log_det(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow-space images ``y`` (n, 1, 28, 28) and ``log |det dy/dz|`` (n,)."""
        with torch_threads(self.threads):
            return self.flow.forward_and_log_det(self.split(torch.as_tensor(z, dtype=torch.float32)))

    def encode_with_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (n, 784) of images in [0, 1] and ``log |det dz/dy|`` (n,)."""
        y = to_flow_space(torch.as_tensor(x, dtype=torch.float32))
        with torch_threads(self.threads):
            zs, log_det = self.flow.inverse_and_log_det(y)
        return self.join(zs), log_det


def bits_per_dim(flow: torch.nn.Module, y: torch.Tensor, batch: int = 500) -> float:
    """Mean bits per dimension of 8-bit data dequantised to ``y`` (n, 1, 28, 28) in (0, 1):
    ``-log2 p(y) / D + 8``."""
    total = 0.0
    with torch.no_grad():
        for s in range(0, y.shape[0], batch):
            total += float(flow.log_prob(y[s:s + batch], None).double().sum())
    d = int(np.prod(y.shape[1:]))
    return -total / (y.shape[0] * d * math.log(2.0)) + 8.0


@dataclass
class GlowReport:
    """Training record: mean train bits/dim per logged interval, held-out bits/dim, seconds."""

    losses: list[float] = field(default_factory=list)
    test_bpd: float = float("nan")
    train_bpd: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    n_train: int = 0
    n_test: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"train_bpd_log": [round(v, 4) for v in self.losses],
                "test_bpd": round(self.test_bpd, 4), "train_bpd": round(self.train_bpd, 4),
                "steps": self.steps, "seconds": round(self.seconds, 1), "n_train": self.n_train,
                "n_test": self.n_test}


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / test split of ``range(n)``."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def dequantise(v: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """8-bit values (float tensor, 0..255) -> ``(v + U(0, 1)) / 256``."""
    return (v + torch.rand(v.shape, generator=gen)) / 256.0


def train_glow(images: np.ndarray, config: GlowConfig, *, log_every: int = 100,
               progress: Any = None) -> tuple[torch.nn.Module, GlowReport]:
    """Fit the flow to 8-bit images by maximum likelihood (deterministic: one thread).

    Parameters
    ----------
    images : np.ndarray, shape (n, 28, 28) or (n, 1, 28, 28), uint8
    progress : callable, optional
        Called as ``progress(step, train_bpd)`` every ``log_every`` steps.

    Returns
    -------
    flow : normflows.MultiscaleFlow (eval mode)
    report : GlowReport
    """
    v_all = torch.as_tensor(np.asarray(images, dtype=np.float32).reshape(-1, *IMAGE_SHAPE))
    train, test = split_indices(v_all.shape[0], config.test_fraction, config.seed)
    v_train, v_test = v_all[train], v_all[test]
    report = GlowReport(n_train=len(train), n_test=len(test))
    start = time.perf_counter()
    with deterministic_torch():
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed + 1)
        flow = build_glow(config)
        flow.train()
        opt = torch.optim.Adam(flow.parameters(), lr=config.lr)

        def lr_at(step: int) -> float:
            if step < config.warmup:
                return (step + 1) / config.warmup
            frac = (step - config.warmup) / max(1, config.steps - config.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        running, count = 0.0, 0
        d = float(np.prod(IMAGE_SHAPE))
        while report.steps < config.steps:
            order = torch.randperm(v_train.shape[0], generator=gen)
            for s in range(0, len(order) - config.batch_size + 1, config.batch_size):
                if report.steps >= config.steps:
                    break
                y = dequantise(v_train[order[s:s + config.batch_size]], gen)
                loss = -flow.log_prob(y, None).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), config.grad_clip)
                opt.step()
                sched.step()
                report.steps += 1
                running += loss.item() / (d * math.log(2.0)) + 8.0
                count += 1
                if report.steps % log_every == 0 or report.steps == config.steps:
                    report.losses.append(running / count)
                    if progress is not None:
                        progress(report.steps, running / count)
                    running, count = 0.0, 0
        flow.eval()
        eval_gen = torch.Generator().manual_seed(config.seed + 2)
        report.test_bpd = bits_per_dim(flow, dequantise(v_test, eval_gen))
        n_eval = min(len(train), 1000)
        report.train_bpd = bits_per_dim(flow, dequantise(v_train[:n_eval], eval_gen))
    report.seconds = time.perf_counter() - start
    return flow, report


def state_to_bytes(module: torch.nn.Module) -> bytes:
    """A module's state dict serialised with ``torch.save`` (loadable with ``weights_only=True``)."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def glow_from_bytes(data: bytes, config: GlowConfig) -> torch.nn.Module:
    """A flow of ``config``'s architecture with the weights in ``data`` (``weights_only=True``)."""
    flow = build_glow(config)
    flow.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return flow.eval()
