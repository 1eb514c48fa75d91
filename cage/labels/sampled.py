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
from cage.pairs.images import to_uint8
from cage_eval import progress
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
    images: np.ndarray | None = None


def block_seed(seed: int, block: int) -> int:
    """The seed of block ``block`` of the labelled samples (31 bits)."""
    return stage_seed(seed, "labels", str(block))


@dataclass(frozen=True)
class LabelUnit:
    """Block ``block`` of the labelled samples: its first ``rows`` latents, decoded ``batch`` at a
    time and classified (and its images kept, uint8, with ``keep``). The unit of labelling work a
    rank computes (and checkpoints under ``key``, empty: never) when several share it
    (:mod:`cage.compute.distributed`)."""

    key: str
    seed: int
    block: int
    rows: int
    batch: int
    keep: bool = False

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

    def __init__(self, generator: Any, psi: Callable[[torch.Tensor], dict[str, Any]], *,
                 keep_images: bool = False) -> None:
        self.generator = generator
        self.psi = psi
        self.keep_images = keep_images

    def __call__(self, unit: LabelUnit) -> dict[str, np.ndarray]:
        probs = []
        kept = []
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
                if self.keep_images or unit.keep:
                    xs = x.detach().to("cpu", torch.float32).numpy()
                    kept.append(to_uint8(xs[:, 0] if xs.shape[1] == 1
                                         else xs.transpose(0, 2, 3, 1)))
                progress.advance(int(min(unit.batch, unit.rows - s)))
        out = {"z": z.numpy(), **{f"p:{a}": np.concatenate([np.asarray(part[a]) for part in probs])
                                  for a in probs[0]}}
        if kept:
            out["x"] = np.concatenate(kept)
        return out


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
                        batch: int = 64, keep_images: bool = False) -> SampledLabels:
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
    keep_images : bool
        Also return the decoded images (uint8), so that the pairs' source images need no second
        decode (on one process; under torchrun they are decoded again when needed).
    """
    workers = _serving(generator, psi)
    units = []
    for b in range(-(-n // BLOCK)):
        key = "" if workers is None or not workers.run_key else hashlib.sha256(
            f"{workers.run_key}:label:{seed}:{b}:{n}:{batch}:{keep_images}".encode()).hexdigest()[:32]
        units.append(LabelUnit(key, seed, b, min(BLOCK, n - b * BLOCK), batch, keep_images))
    if workers is not None:
        parts = workers.map("label", units)
    else:
        labeller = BlockLabeller(generator, psi, keep_images=keep_images)
        with progress.counting(n, "labelling decoded prior samples", "image"):
            parts = [labeller(u) for u in units]
    names = [k[2:] for k in parts[0] if k.startswith("p:")]
    p = {a: np.concatenate([part[f"p:{a}"] for part in parts]).astype(np.float64) for a in names}
    latents = [part["z"] for part in parts]
    for a in names:
        if p[a].shape != (n,):
            raise ConfigError(f"the observation classifier returned {p[a].shape[0]} values of "
                              f"{a!r} for {n} images")
    images = np.concatenate([part["x"] for part in parts]) \
        if keep_images and all("x" in part for part in parts) else None
    return SampledLabels(latents=np.concatenate(latents),
                         attributes={a: (p[a] > threshold).astype(np.int64) for a in names},
                         probabilities=p, images=images)
