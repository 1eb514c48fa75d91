"""Generators exported to a file format (OpenVINO IR, ONNX): an optional mapping, then synthesis.

The two adapters ``openvino`` (:mod:`cage.generators.openvino_ir`) and ``onnx``
(:mod:`cage.generators.onnx_model`) read a network file each through their runtime and share
everything else here: the spaces, truncation, the output layout and the checks. What a researcher
exports:

* ``synthesis``: one input of shape ``(n, d)`` (the latent it decodes: w, or z without a mapping),
  one output of images ``(n, C, H, W)`` (or channels last, or flat with ``image_shape``);
* ``mapping`` (optional): one input ``(n, d_z)`` -> one output ``(n, d_w)`` (StyleGAN's z -> w).

A fixed batch of 1 is accepted (rows are then run one at a time); a dynamic or reshapeable batch
dimension runs ``batch_size`` rows per call.

Spaces and truncation (the keys are those of the other StyleGAN adapters):

``space = "z"``
    CAGE edits z ~ N(0, I); decode is ``synthesis(trunc(mapping(z)))`` (or ``synthesis(z)``).
``space = "w"``
    CAGE edits w; the prior is ``mapping(z)`` for z ~ N(0, I), untruncated; decode is
    ``synthesis(trunc(w))``.
``truncation_psi``
    ``trunc(w) = w_avg + psi (w - w_avg)`` when decoding only (1: off). ``w_avg`` is the mean of
    ``truncation_mean`` mapping outputs of seeded draws (the files carry no average).

``output_size = [H, W]`` downscales every decoded image (bilinear, antialiased) so that CAGE,
the observation classifier and the HIT pages see images of that size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from cage.config.sections import Section
from cage.generators.base import gaussian_sample
from cage.generators.device import Compute
from cage.generators.output import OutputLayout
from cage.generators.torch_module import layout_from
from cage_eval.errors import ConfigError

SPACES = ("z", "w")
#: Mapping draws whose mean is ``w_avg`` when ``truncation_psi`` is not 1.
DEFAULT_TRUNCATION_MEAN = 4096
#: Seed of the draws that estimate ``w_avg`` (fixed: the same file gives the same average).
TRUNCATION_SEED = 20221


class Network(Protocol):
    """One exported network, opened by its runtime.

    Attributes
    ----------
    input_dim : int
        ``d`` of the ``(n, d)`` input.
    batch : int or None
        The fixed batch size (1), or None when any batch runs.
    output_shape : tuple
        The output's shape after the batch dimension, where the file states it (entries may be
        None for dynamic sizes).
    where : str
        The config key that named the file, for messages.
    """

    input_dim: int
    batch: int | None
    output_shape: tuple[Any, ...]
    where: str

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for ``x`` (m, input_dim) float32, ``m`` at most the network's batch."""
        ...


def forward(net: Network, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``net`` over the rows of ``x`` in calls of at most ``batch_size`` rows (one row at a time
    for a network of fixed batch 1); non-finite outputs are an error naming the file."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != net.input_dim:
        raise ValueError(f"expected ({x.shape[0]}, {net.input_dim}) inputs, got {x.shape}")
    step = 1 if net.batch == 1 else batch_size
    parts = [np.asarray(net.run(x[s:s + step])) for s in range(0, x.shape[0], step)]
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if out.shape[0] != x.shape[0]:
        raise ConfigError(f"{net.where}: the network returned {out.shape[0]} rows for "
                          f"{x.shape[0]} inputs; its first dimension must be the batch")
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out.reshape(out.shape[0], -1))).any(axis=1).sum())
        raise ConfigError(f"{net.where}: the network returned NaN or infinite values for {bad} "
                          f"of {x.shape[0]} inputs; check the exported file (and its inputs' "
                          "scale)")
    return out


class ExportedGenerator:
    """:class:`cage.generators.base.LatentGenerator` over exported networks (module docstring).

    Parameters
    ----------
    synthesis : Network
    mapping : Network, optional
    space : {"z", "w"}
    truncation_psi : float
    truncation_mean : int
        Mapping draws averaged for ``w_avg``.
    layout : OutputLayout
    compute : Compute
        ``batch_size`` rows per network call.
    """

    def __init__(self, synthesis: Network, *, mapping: Network | None = None, space: str = "z",
                 truncation_psi: float = 1.0, truncation_mean: int = DEFAULT_TRUNCATION_MEAN,
                 layout: OutputLayout | None = None, compute: Compute | None = None) -> None:
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}")
        if space == "w" and mapping is None:
            raise ValueError("space 'w' needs a mapping network")
        self.synthesis = synthesis
        self.mapping = mapping
        self.space = space
        self.layout = layout or OutputLayout()
        self.compute = compute or Compute()
        self.batch_size = self.compute.batch_size
        self.device = str(self.compute.device)
        self.z_dim = mapping.input_dim if mapping is not None else synthesis.input_dim
        self.latent_dim = synthesis.input_dim if space == "w" else self.z_dim
        self.truncation_psi = float(truncation_psi)
        self.truncation_mean = int(truncation_mean)
        self.w_avg: np.ndarray | None = None
        if self.truncation_psi != 1.0:
            if mapping is None:
                raise ValueError("truncation needs a mapping network")
            z = gaussian_sample(self.truncation_mean, self.z_dim, TRUNCATION_SEED).numpy()
            self.w_avg = self._map(z).mean(axis=0).astype(np.float32)

    def _map(self, z: np.ndarray) -> np.ndarray:
        assert self.mapping is not None
        return forward(self.mapping, z, self.batch_size)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded prior draws: z ~ N(0, I), or ``mapping(z)`` in ``w`` space."""
        z = gaussian_sample(n, self.z_dim, seed)
        if self.space == "z":
            return z
        return torch.from_numpy(np.ascontiguousarray(self._map(z.numpy()), dtype=np.float32))

    def _truncate(self, w: np.ndarray) -> np.ndarray:
        if self.w_avg is None:
            return w
        return (self.w_avg + self.truncation_psi * (w - self.w_avg)).astype(np.float32)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in ``[0, 1]`` (after the layout), CPU float32."""
        latent = torch.as_tensor(z).detach().to("cpu", torch.float32).numpy()
        w = latent if self.space == "w" or self.mapping is None else self._map(latent)
        parts = []
        for s in range(0, w.shape[0], self.batch_size):  # map the range per batch: less memory
            raw = forward(self.synthesis, self._truncate(w[s:s + self.batch_size]),
                          self.batch_size)
            parts.append(self.layout.to_protocol(torch.from_numpy(raw)))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def describe(self) -> dict[str, Any]:
        return {"space": self.space, "z_dim": self.z_dim, "mapping": self.mapping is not None,
                "truncation_psi": self.truncation_psi,
                "truncation_mean": self.truncation_mean if self.w_avg is not None else None,
                "network_batch": self.synthesis.batch or self.batch_size,
                **self.layout.describe()}


def from_section(section: Section, compute: Compute,
                 open_network: Callable[[Section, str], Network]) -> ExportedGenerator:
    """The shared keys of the exported-network adapters; ``open_network(section, key)`` reads the
    file a key names (``synthesis``, ``mapping``)."""
    synthesis = open_network(section, "synthesis")
    mapping = open_network(section, "mapping") if section.has("mapping") else None
    space = section.text("space", "w" if mapping is not None else "z", choices=SPACES)
    if space == "w" and mapping is None:
        raise ConfigError(f"{section.where('space')} = 'w': needs a mapping network (mapping = "
                          "FILE, z -> w); add one or use space = \"z\"")
    psi = section.number("truncation_psi", 1.0, minimum=0.0)
    n_mean = section.integer("truncation_mean", DEFAULT_TRUNCATION_MEAN, minimum=16)
    if psi != 1.0 and mapping is None:
        raise ConfigError(f"{section.where('truncation_psi')} = {psi:g}: truncation needs the "
                          "average w of a mapping network; add mapping = FILE or set 1")
    if mapping is not None and synthesis.input_dim != _last(mapping.output_shape,
                                                            synthesis.input_dim):
        raise ConfigError(f"{section.where('mapping')}: outputs {_shape(mapping.output_shape)} "
                          f"but the synthesis network takes (n, {synthesis.input_dim}); export "
                          "a mapping whose output is the synthesis network's input")
    _check_output(section, synthesis)
    return ExportedGenerator(synthesis, mapping=mapping, space=space, truncation_psi=psi,
                             truncation_mean=n_mean, layout=layout_from(section), compute=compute)


def _last(shape: tuple[Any, ...], default: int) -> Any:
    return shape[-1] if shape and isinstance(shape[-1], int) else default


def _shape(shape: tuple[Any, ...]) -> str:
    return "(n, " + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def _check_output(section: Section, synthesis: Network) -> None:
    """A synthesis output of a rank no layout can turn into images is refused at load."""
    rank = len(synthesis.output_shape) + 1
    flat = section.has("image_shape")
    if (flat and rank != 2) or (not flat and rank != 4):
        expected = "(n, C*H*W) (with image_shape)" if flat else \
            "(n, C, H, W), or (n, H, W, C) with channels_last, or flat with image_shape"
        raise ConfigError(f"{synthesis.where}: the network's output is "
                          f"{_shape(synthesis.output_shape)}; expected {expected}")


def input_dim_of(shape: list[Any], where: str, path: str) -> tuple[int, int | None]:
    """``(d, batch)`` of an input shape ``[n, d]`` (``n`` an int or a dynamic entry).

    Raises
    ------
    ConfigError
        The input is not two-dimensional or ``d`` is not fixed.
    """
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
        shown = "(" + ", ".join("?" if not isinstance(s, int) or s < 0 else str(s)
                                for s in shape) + ")"
        raise ConfigError(f"{where} = {path!r}: the network's input is {shown}; expected (n, d), "
                          "a batch of latent vectors (export the network with a 2-D input)")
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return int(shape[1]), batch
