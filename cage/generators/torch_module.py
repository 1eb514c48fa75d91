"""Any ``torch.nn.Module`` or callable as a CAGE generator: optional mapping, then synthesis.

``synthesis(latent) -> raw images``; with a ``mapping`` network (``z -> w``), CAGE edits either the
mapping's input (``space = "z"``: decode is ``synthesis(mapping(z))``) or its output
(``space = "w"``: the prior is ``mapping(z)`` for ``z ~ N(0, I)``, sampled untruncated, and decode
is ``synthesis(w)``). Raw outputs are converted by an :class:`~cage.generators.output.OutputLayout`
(range ``[-1, 1]``, channels last, flat outputs reshaped).

Section keys (``adapter = "torch_module"``)::

    synthesis = "pkg.mod:obj"     # an nn.Module instance or function; a class is instantiated,
                                  # any callable is called as a factory when synthesis_options
    synthesis = "decoder.pt"      # ... or a TorchScript file (torch.jit.save)
    synthesis_options = {}        # keyword arguments of the factory / class
    weights = "decoder_state.pt"  # optional state dict loaded into the synthesis module
    weights_key = "g_ema"         # optional: the state dict is this entry of the file
    mapping = "pkg.mod:obj"       # optional, same forms; mapping_options, mapping_weights
    space = "z"                   # "z" or "w" (with a mapping)
    latent_dim = 128              # size of z (default: the module's z_dim / latent_dim)
    output_range = [-1, 1]        # raw value of black and white (default [0, 1])
    channels_last = false
    image_shape = [3, 64, 64]     # raw outputs are flat (n, C*H*W)
    clamp = false                 # clip to [0, 1] after the range map
    output_size = [256, 256]      # resize decoded images (bilinear, antialiased)

plus ``device``, ``batch_size``, ``autocast``, ``threads`` (:mod:`cage.generators.device`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cage.config.sections import Section, build_object, import_object
from cage.generators.base import gaussian_sample
from cage.generators.device import Compute, batched, freeze
from cage.generators.output import OutputLayout
from cage_eval.errors import ConfigError, InputFileError

SPACES = ("z", "w")
_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")


class TorchModuleGenerator:
    """:class:`cage.generators.base.LatentGenerator` over torch networks or plain callables.

    Parameters
    ----------
    synthesis : callable
        ``latent (n, d_syn) -> raw images``; an ``nn.Module`` is moved to ``compute.device``.
    latent_dim : int
        Size of ``z`` (the input of ``mapping``, or of ``synthesis`` without one).
    mapping : callable, optional
        ``z (n, latent_dim) -> w (n, d_w)``.
    space : {"z", "w"}
        The space CAGE edits (``"w"`` needs ``mapping``).
    layout : OutputLayout
    compute : Compute
    """

    def __init__(self, synthesis: Callable[[torch.Tensor], torch.Tensor], *, latent_dim: int,
                 mapping: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 space: str = "z", layout: OutputLayout | None = None,
                 compute: Compute | None = None) -> None:
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if space == "w" and mapping is None:
            raise ValueError("space 'w' needs a mapping network")
        self.compute = compute or Compute()
        self.synthesis = _on(synthesis, self.compute.device)
        self.mapping = _on(mapping, self.compute.device) if mapping is not None else None
        freeze(self.synthesis, self.mapping)
        self.space = space
        self.layout = layout or OutputLayout()
        self.z_dim = int(latent_dim)
        self.batch_size = self.compute.batch_size
        self.device = str(self.compute.device)
        if space == "w":
            with torch.no_grad():
                probe = self._map(gaussian_sample(2, self.z_dim, 0))
            self.w_shape = tuple(probe.shape[1:])
            self.latent_dim = int(probe.reshape(2, -1).shape[1])
        else:
            self.w_shape = (self.z_dim,)
            self.latent_dim = self.z_dim

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        assert self.mapping is not None
        return batched(self.mapping, z, self.compute)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded prior draws: ``z ~ N(0, I)``, or ``mapping(z)`` in ``w`` space."""
        z = gaussian_sample(n, self.z_dim, seed)
        if self.space == "z":
            return z
        with torch.no_grad():
            return self._map(z).reshape(n, -1)

    def _forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.space == "w":  # latents are flattened mapping outputs (w+ included)
            w = latent.reshape(latent.shape[0], *self.w_shape)
        else:
            w = self.mapping(latent) if self.mapping is not None else latent
        return self.layout.to_protocol(self.synthesis(w))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in ``[0, 1]`` (after the layout), CPU float32."""
        return batched(self._forward, torch.as_tensor(z), self.compute, autocast=True)

    def describe(self) -> dict[str, Any]:
        return {"space": self.space, "z_dim": self.z_dim,
                "mapping": self.mapping is not None, **self.layout.describe()}


def _on(fn: Any, device: torch.device) -> Any:
    return fn.to(device) if isinstance(fn, torch.nn.Module) else fn


def load_network(section: Section, key: str, device: torch.device) -> Any:
    """The network a key names: ``"module:obj"`` (used, instantiated or built by a factory) or a
    TorchScript file, then ``<key>_weights`` (``weights`` for the synthesis) loaded into it."""
    spec = section.text(key)
    options = section.table(f"{key}_options")
    where = section.where(key)
    if ":" not in spec and spec.endswith(_FILE_SUFFIXES):
        path = section.path(key, what="give a TorchScript file or \"module:attribute\"")
        try:
            net: Any = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError) as exc:
            raise InputFileError(f"{where} = {spec!r}: not a TorchScript file ({exc}); save it "
                                 "with torch.jit.save(torch.jit.script(model), path), or name the "
                                 "module as \"package.module:attribute\"") from None
    else:
        net = build_object(import_object(spec, where), options, where)
    if not callable(net):
        raise ConfigError(f"{where} = {spec!r}: is a {type(net).__name__}, not a network or a "
                          "function")
    weights_key = "weights" if key == "synthesis" else f"{key}_weights"
    weights = section.path(weights_key, None, what="give the state dict saved with torch.save("
                           "module.state_dict(), path)")
    if weights is not None:
        load_state(net, weights, section.text(f"{weights_key}_key", None),
                   section.where(weights_key))
    return net


def load_state(net: Any, path: Path, entry: str | None, where: str) -> None:
    """Load a state dict file (``torch.load(..., weights_only=True)``) into ``net``."""
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"{where}: weights need an nn.Module, not a {type(net).__name__}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputFileError(f"{where}: {path} is not a loadable state dict ({exc}); save it with "
                             "torch.save(module.state_dict(), path)") from None
    if entry is not None:
        if not isinstance(state, dict) or entry not in state:
            keys = sorted(state) if isinstance(state, dict) else []
            raise InputFileError(f"{where}: {path} has no entry {entry!r} (entries: "
                                 f"{', '.join(map(str, keys)) or 'none'})")
        state = state[entry]
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputFileError(f"{where}: {path} does not fit the network ({first})") from None


def layout_from(section: Section, *, resize: bool = True) -> OutputLayout:
    """``output_range``, ``channels_last``, ``image_shape``, ``clamp`` and (with ``resize``)
    ``output_size`` of a section (an encoder's inputs cannot be resized back: not for flows)."""
    lo, hi = section.numbers("output_range", (0.0, 1.0), length=2)
    if not hi > lo:
        raise ConfigError(f"{section.where('output_range')} = [{lo:g}, {hi:g}]: the second value "
                          "(white) must be larger than the first (black)")
    shape = section.numbers("image_shape", None, length=3, integers=True)
    if shape is not None and (shape[0] not in (1, 3) or min(shape) < 1):
        raise ConfigError(f"{section.where('image_shape')} = {list(shape)}: expected [C, H, W] "
                          "with C = 1 or 3")
    size = section.numbers("output_size", None, length=2, integers=True) if resize else None
    if size is not None and min(size) < 1:
        raise ConfigError(f"{section.where('output_size')} = {list(size)}: expected [H, W], two "
                          "positive integers")
    return OutputLayout(value_range=(lo, hi), channels_last=section.flag("channels_last", False),
                        shape=shape, clamp=section.flag("clamp", False), size=size)


def from_section(section: Section, compute: Compute) -> TorchModuleGenerator:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    synthesis = load_network(section, "synthesis", compute.device)
    mapping = load_network(section, "mapping", compute.device) if section.has("mapping") else None
    section.accept(["mapping_options", "mapping_weights", "mapping_weights_key"])
    space = section.text("space", "z", choices=SPACES)
    if space == "w" and mapping is None:
        raise ConfigError(f"{section.where('space')} = 'w': needs a mapping network; add "
                          "mapping = \"module:attribute\" or use space = \"z\"")
    source = mapping if mapping is not None else synthesis
    default_dim = next((getattr(source, a) for a in ("z_dim", "latent_dim")
                        if isinstance(getattr(source, a, None), int)), None)
    latent_dim = section.integer("latent_dim", default_dim, minimum=1)
    if latent_dim is None:
        raise ConfigError(f"{section.where('latent_dim')}: missing; give the size of the latent "
                          "the " + ("mapping" if mapping is not None else "synthesis") +
                          " network takes (it has no z_dim or latent_dim attribute)")
    return TorchModuleGenerator(synthesis, latent_dim=latent_dim, mapping=mapping, space=space,
                                layout=layout_from(section), compute=compute)
