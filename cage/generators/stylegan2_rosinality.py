"""rosinality/stylegan2-pytorch checkpoints, built with the ``Generator`` of the user's clone.

A checkpoint (``train.py`` output or ``convert_weight.py`` output) holds the state dict ``g_ema``
and, when converted from NVIDIA's TensorFlow weights, ``latent_avg``; training checkpoints also
hold ``args`` (``size``, ``latent``, ``n_mlp``, ``channel_multiplier``), which supply the
architecture's defaults here. cage-eval does not ship rosinality's code: ``repo_path`` names the
user's clone, whose ``model.py`` is imported while it is on ``sys.path``
(:mod:`cage.generators.clone`).

**CUDA at import.** ``model.py`` imports the clone's ``op`` package, and ``op/fused_act.py`` and
``op/upfirdn2d.py`` compile their CUDA kernels with ``torch.utils.cpp_extension.load`` *when they
are imported*. Loading therefore needs a CUDA GPU, the CUDA toolkit (``nvcc``) and a C++
compiler, even to decode on the CPU. Without them, use a fork whose ``op`` has a pure-PyTorch
fallback, or convert the weights to an NVIDIA pickle (``adapter = "stylegan2_nvidia"``, whose ops
fall back to PyTorch on the CPU). A failing import is reported with this explanation.

Spaces are as for NVIDIA networks: ``z`` (``style_dim``, mapped by ``g.style``), ``w``
(``style_dim``, broadcast to ``g.n_latent`` layers), ``w+`` (``n_latent * style_dim``); the prior
is untruncated, truncation ``latent_avg + ψ (w - latent_avg)`` on the first ``truncation_cutoff``
layers is applied in ``decode``, and decoding uses the checkpoint's fixed noise buffers
(``randomize_noise=False``). ``latent_avg`` comes from the checkpoint or, when absent, is the mean
of ``g.style(z)`` over ``truncation_mean`` seeded draws.

Section keys (``adapter = "stylegan2_rosinality"``)::

    checkpoint = "550000.pt"          # required
    repo_path = "stylegan2-pytorch"   # required: your clone (holds model.py and op/)
    size = 256                        # default: the checkpoint's args.size
    style_dim = 512                   # default: args.latent, else 512
    n_mlp = 8                         # default: args.n_mlp, else 8
    channel_multiplier = 2            # default: args.channel_multiplier, else 2
    space = "w"                       # "z", "w" or "w+"
    truncation_psi = 1.0
    truncation_cutoff = 8
    truncation_mean = 4096
    renormalize_z = false

plus ``device``, ``batch_size``, ``autocast``, ``threads`` (:mod:`cage.generators.device`).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import torch

from cage.config.sections import Section
from cage.generators.base import gaussian_sample
from cage.generators.clone import modules_from_clone
from cage.generators.device import Compute, batched, freeze
from cage.generators.stylegan2_base import SPACES, StyleGAN2Base
from cage_eval.errors import ConfigError, InputFileError

CLONE_PACKAGES = ("model", "op", "distributed", "dataset", "non_leaking")
CUDA_OP_NOTE = (
    "rosinality's op/ package compiles its CUDA kernels (fused_bias_act, upfirdn2d) with "
    "torch.utils.cpp_extension when model.py imports it, so loading needs a CUDA GPU, the CUDA "
    "toolkit (nvcc) and a C++ compiler even for CPU decoding; without them use a fork whose op/ "
    "falls back to PyTorch, or convert the weights to an NVIDIA pickle (adapter = "
    "\"stylegan2_nvidia\")")


class RosinalityGenerator(StyleGAN2Base):
    """:class:`cage.generators.base.LatentGenerator` over a rosinality ``Generator``; spaces, prior
    and truncation from :class:`StyleGAN2Base`.

    Parameters
    ----------
    g : torch.nn.Module
        ``style`` (z -> w), ``n_latent``, ``style_dim``, ``forward(styles, input_is_latent=True,
        randomize_noise=False) -> (images, _)``.
    latent_avg : torch.Tensor, shape (style_dim,)
        Truncation centre.
    space, truncation_psi, truncation_cutoff, renormalize_z, compute
        As for :class:`cage.generators.stylegan2_nvidia.NVlabsGenerator`.
    """

    def __init__(self, g: Any, latent_avg: torch.Tensor, *, space: str = "w",
                 truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                 renormalize_z: bool = False, compute: Compute | None = None) -> None:
        compute = compute or Compute()
        super().__init__(z_dim=int(g.style_dim), w_dim=int(g.style_dim), n_layers=int(g.n_latent),
                         w_avg=latent_avg, space=space, truncation_psi=truncation_psi,
                         truncation_cutoff=truncation_cutoff, renormalize_z=renormalize_z,
                         compute=compute)
        self.g = g.to(self.compute.device)
        freeze(self.g)
        self.style_dim, self.n_latent = self.w_dim, self.n_layers
        self.latent_avg = self.w_avg

    def _mapping(self, z: torch.Tensor) -> torch.Tensor:
        """``z -> ws``: ``g.style(z)`` broadcast to every layer."""
        return self.g.style(z)[:, None, :].expand(-1, self.n_latent, -1)

    def _synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        img, _ = self.g([ws.contiguous()], input_is_latent=True, randomize_noise=False)
        return img

    def describe(self) -> dict[str, Any]:
        return {"space": self.space, "style_dim": self.style_dim, "n_latent": self.n_latent,
                "truncation_psi": self.psi, "truncation_cutoff": self.cutoff,
                "renormalize_z": self.renormalize_z, "noise": "checkpoint buffers"}


def import_model_module(repo: Path, where: str) -> Any:
    """The clone's ``model`` module (imported with the clone on ``sys.path``)."""
    if not (repo / "model.py").is_file():
        raise ConfigError(f"{where} = {str(repo)!r}: no model.py in it; point repo_path at the "
                          "root of your clone of rosinality/stylegan2-pytorch")
    try:
        with modules_from_clone(repo, CLONE_PACKAGES):
            return importlib.import_module("model")
    except Exception as exc:  # cpp_extension raises RuntimeError, OSError, CalledProcessError...
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"{where} = {str(repo)!r}: importing its model.py failed "
                          f"({type(exc).__name__}: {first}); {CUDA_OP_NOTE}") from None


def load_checkpoint(path: Path, where: str) -> dict[str, Any]:
    """``torch.load`` of a rosinality checkpoint, tensors and argparse options only."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputFileError(f"{where} = {str(path)!r}: not a readable checkpoint "
                             f"({type(exc).__name__}: {str(exc)[:200]}); give a .pt file written "
                             "by rosinality's train.py or convert_weight.py") from None
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        keys = ", ".join(sorted(map(str, ckpt))) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputFileError(f"{where} = {str(path)!r}: has no 'g_ema' entry (found: {keys})")
    return ckpt


def from_section(section: Section, compute: Compute) -> RosinalityGenerator:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    path = section.path("checkpoint", what="put your rosinality/stylegan2-pytorch checkpoint "
                        "(with g_ema) there, or point checkpoint at it")
    repo = section.path("repo_path", kind="dir", what="clone rosinality/stylegan2-pytorch there, "
                        "or point repo_path at your clone")
    ckpt = load_checkpoint(path, section.where("checkpoint"))
    args = ckpt.get("args")
    default = (lambda name, fallback: getattr(args, name, fallback)) if args is not None \
        else (lambda name, fallback: fallback)
    size = section.integer("size", default("size", None), minimum=4)
    if size is None:
        raise ConfigError(f"{section.where('size')}: missing; give the image size the network "
                          "was trained at (the checkpoint has no args)")
    style_dim = section.integer("style_dim", default("latent", 512), minimum=1)
    n_mlp = section.integer("n_mlp", default("n_mlp", 8), minimum=1)
    multiplier = section.integer("channel_multiplier", default("channel_multiplier", 2), minimum=1)
    space = section.text("space", "w", choices=SPACES)
    psi = section.number("truncation_psi", 1.0, minimum=0.0)
    cutoff = section.integer("truncation_cutoff", None, minimum=1)
    n_mean = section.integer("truncation_mean", 4096, minimum=1)
    renorm = section.flag("renormalize_z", False)
    module = import_model_module(repo, section.where("repo_path"))
    g = module.Generator(size, style_dim, n_mlp, channel_multiplier=multiplier)
    try:
        g.load_state_dict(ckpt["g_ema"])
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputFileError(f"{section.where('checkpoint')} = {str(path)!r}: g_ema does not fit "
                             f"Generator({size}, {style_dim}, {n_mlp}, channel_multiplier="
                             f"{multiplier}) ({first}); set size, style_dim, n_mlp and "
                             "channel_multiplier to the training values") from None
    avg = ckpt.get("latent_avg")
    if avg is None:
        freeze(g)
        with torch.no_grad():
            avg = batched(g.style, gaussian_sample(n_mean, style_dim, 0),
                          Compute(batch_size=compute.batch_size)).mean(0)
    return RosinalityGenerator(g, torch.as_tensor(avg), space=space, truncation_psi=psi,
                               truncation_cutoff=cutoff, renormalize_z=renorm, compute=compute)
