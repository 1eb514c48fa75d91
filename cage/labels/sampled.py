"""Labels of decoded prior samples: the observation classifier names the attributes of ``G(z)``.

This is InterFaceGAN's recipe (docs/method.md §6) and the one that needs nothing but the
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

from cage.compute import distributed
from cage.compute.distributed import Workers
from cage.engine.seeds import stage_seed
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
    return stage_seed(seed, "labels", str(block))


@dataclass(frozen=True)
class LabelUnit:
    """Block ``block`` of the labelled samples: its first ``rows`` latents, decoded ``batch`` at a
    time and classified. The unit of labelling work a rank computes (and checkpoints under
    ``key``, empty: never) when several share it (:mod:`cage.compute.distributed`)."""

    key: str
    seed: int
    block: int
    rows: int
    batch: int

    @property
    def decodes(self) -> int:
        """Latents this unit decodes."""
        return self.rows


class BlockLabeller:
    """Computes :class:`LabelUnit` s: ``{"z": latents (rows, d), "p:<attribute>": P (rows,)}``.

    Parameters
    ----------
    generator : object
        ``latent_dim``, ``sample(n, seed)``, ``decode(z)``.
    psi : callable
        Images ``(m, C, H, W)`` -> ``{attribute: P(attribute = 1)}``.
    """

    def __init__(self, generator: Any, psi: Callable[[torch.Tensor], dict[str, Any]]) -> None:
        self.generator = generator
        self.psi = psi

    def __call__(self, unit: LabelUnit) -> dict[str, np.ndarray]:
        probs = []
        with torch.no_grad():
            z = torch.as_tensor(self.generator.sample(BLOCK, block_seed(unit.seed, unit.block)))
            z = z.to("cpu", torch.float32)[:unit.rows]
            for s in range(0, unit.rows, unit.batch):
                x = self.generator.decode(z[s:s + unit.batch])
                bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
                if bad:
                    raise ConfigError(
                        f"labelling prior samples: the generator's decode returned NaN or "
                        f"infinite values for {bad} of {x.shape[0]} latents of block "
                        f"{unit.block}; their labels would mean nothing: fix the decode")
                probs.append(self.psi(x))
        return {"z": z.numpy(), **{f"p:{a}": np.concatenate([np.asarray(part[a]) for part in probs])
                                   for a in probs[0]}}


def _serving(generator: Any, psi: Any) -> Workers | None:
    """The run's workers when they label with this generator and classifier, else None."""
    workers = distributed.current()
    handler = workers.handlers.get("label") if workers is not None else None
    if isinstance(handler, BlockLabeller) and handler.generator is generator \
            and handler.psi is psi:
        return workers
    return None


def label_prior_samples(generator: Any, psi: Callable[[torch.Tensor], dict[str, np.ndarray]],
                        n: int, seed: int, *, threshold: float = 0.5,
                        batch: int = 64) -> SampledLabels:
    """Draw ``n`` prior latents, decode them ``batch`` at a time and label them with ``psi``.

    Block by block (:class:`LabelUnit`); the blocks are dealt over the ranks of a torchrun job
    when they serve this generator and classifier (docs/distributed.md), with the same result.

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
    workers = _serving(generator, psi)
    units = []
    for b in range(-(-n // BLOCK)):
        key = "" if workers is None or not workers.run_key else hashlib.sha256(
            f"{workers.run_key}:label:{seed}:{b}:{n}:{batch}".encode()).hexdigest()[:32]
        units.append(LabelUnit(key, seed, b, min(BLOCK, n - b * BLOCK), batch))
    if workers is not None:
        parts = workers.map("label", units)
    else:
        parts = [BlockLabeller(generator, psi)(u) for u in units]
    names = [k[2:] for k in parts[0] if k.startswith("p:")]
    p = {a: np.concatenate([part[f"p:{a}"] for part in parts]).astype(np.float64) for a in names}
    latents = [part["z"] for part in parts]
    for a in names:
        if p[a].shape != (n,):
            raise ConfigError(f"the observation classifier returned {p[a].shape[0]} values of "
                              f"{a!r} for {n} images")
    return SampledLabels(latents=np.concatenate(latents),
                         attributes={a: (p[a] > threshold).astype(np.int64) for a in names},
                         probabilities=p)
