"""Labels of decoded prior samples: the observation classifier names the attributes of ``G(z)``.

This is InterFaceGAN's recipe (cage_core.md section 2) and the one that needs nothing but the
generator and a classifier: draw ``n`` latents from the generator's prior, decode them, and label
each attribute ``1[psi_a(G(z)) > threshold]``. The latents and labels are the annotated data CAGE
fits its latent classifiers on. Latents are drawn in blocks of :data:`BLOCK` with one seed per
block (derived from the stage seed and the block index) and decoded in batches, so memory holds
the latents plus one batch of images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cage_eval.errors import ConfigError

#: Latents drawn per seed.
BLOCK = 4096


@dataclass
class SampledLabels:
    """Prior latents with the classifier's labels.

    Attributes
    ----------
    latents : np.ndarray, shape (n, d), float32
    attributes : dict[str, np.ndarray]
        ``1[P > threshold]``, shape ``(n,)``, int64.
    probabilities : dict[str, np.ndarray]
        The classifier's ``P(attribute = 1)``, shape ``(n,)``.
    """

    latents: np.ndarray
    attributes: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]


def block_seed(seed: int, block: int) -> int:
    """The seed of block ``block`` of the labelled samples (31 bits)."""
    digest = hashlib.sha256(f"{seed}:labels:{block}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def label_prior_samples(generator: Any, psi: Callable[[torch.Tensor], dict[str, np.ndarray]],
                        n: int, seed: int, *, threshold: float = 0.5,
                        batch: int = 64) -> SampledLabels:
    """Draw ``n`` prior latents, decode them ``batch`` at a time and label them with ``psi``.

    Parameters
    ----------
    generator : object
        ``latent_dim``, ``sample(n, seed)``, ``decode(z)``.
    psi : callable
        Images ``(m, C, H, W)`` -> ``{attribute: P(attribute = 1)}``.
    n : int
    seed : int
    threshold : float
        Label 1 above it.
    batch : int
        Latents decoded and classified together.
    """
    latents, probs = [], []
    for b in range(-(-n // BLOCK)):
        m = min(BLOCK, n - b * BLOCK)
        with torch.no_grad():
            z = torch.as_tensor(generator.sample(BLOCK, block_seed(seed, b))).to("cpu",
                                                                                 torch.float32)[:m]
            for s in range(0, m, batch):
                probs.append(psi(generator.decode(z[s:s + batch])))
        latents.append(z.numpy())
    names = list(probs[0])
    p = {a: np.concatenate([part[a] for part in probs]).astype(np.float64) for a in names}
    for a in names:
        if p[a].shape != (n,):
            raise ConfigError(f"the observation classifier returned {p[a].shape[0]} values of "
                              f"{a!r} for {n} images")
    return SampledLabels(latents=np.concatenate(latents),
                         attributes={a: (p[a] > threshold).astype(np.int64) for a in names},
                         probabilities=p)
