"""NVIDIA StyleGAN2-ADA / StyleGAN3 network pickles, loaded through the user's clone of NVIDIA's code.

A network pickle (``network-snapshot-*.pkl``) holds ``G``, ``D`` and ``G_ema``; its classes live in
NVIDIA's ``torch_utils``/``dnnlib`` packages and their source is embedded in the pickle, which
imports more of the repository when it is unpickled. cage-eval does not ship that code (NVIDIA's
licence is non-commercial): ``repo_path`` names the user's clone of
``NVlabs/stylegan2-ada-pytorch`` or ``NVlabs/stylegan3`` and is put on ``sys.path`` only while the
pickle is read (:mod:`cage.generators.clone`). Unpickling runs code from the file: load only
pickles you trust.

Latent spaces (``space``)
-------------------------
``z``   ``G.z_dim`` values, prior ``N(0, I)``. NVIDIA's mapping normalises the second moment of
        ``z`` (only its direction matters), so ``z ± αh`` is implicitly renormalised;
        ``renormalize_z = true`` makes that explicit: prior draws and decoded latents are rescaled
        to norm ``sqrt(z_dim)`` (InterFaceGAN's convention; images are unchanged).
``w``   ``G.w_dim`` values, prior ``mapping(z)`` untruncated; decode broadcasts ``w`` to all
        ``G.num_ws`` layers.
``w+``  ``G.num_ws * G.w_dim`` values (the per-layer ``w`` flattened), prior ``mapping(z)``.

Truncation is applied in ``decode`` only, ``w_avg + ψ (w - w_avg)`` on the first
``truncation_cutoff`` layers (all when unset), with ``w_avg = G.mapping.w_avg``; the prior CAGE
fits its classifiers on stays untruncated. ``ψ = 1`` turns it off; ``ψ = 0`` decodes every latent
to the average image. Decoding uses ``noise_mode = "const"`` (or ``"none"``) so it is deterministic,
and ``force_fp32`` (always on the CPU). Images come out of the synthesis network in ``[-1, 1]`` and
are mapped to ``[0, 1]`` and clipped.

Section keys (``adapter = "stylegan2_nvidia"``)::

    pickle = "network-snapshot.pkl"   # required
    repo_path = "stylegan2-ada-pytorch"   # your clone (holds dnnlib/ and torch_utils/)
    network = "G_ema"                 # which entry of the pickle
    legacy = false                    # read through the clone's legacy.load_network_pkl (TF pickles)
    space = "w"                       # "z", "w" or "w+"
    truncation_psi = 1.0
    truncation_cutoff = 8             # optional: number of leading layers truncated
    noise_mode = "const"              # or "none"
    force_fp32 = true                 # false allows NVIDIA's fp16 layers on CUDA
    renormalize_z = false
    class_index = 0                   # for conditional networks (c_dim > 0)

plus ``device``, ``batch_size``, ``autocast``, ``threads`` (:mod:`cage.generators.device`).
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
from pathlib import Path
from typing import Any

import torch

from cage.config.sections import Section
from cage.generators.clone import modules_from_clone
from cage.generators.device import Compute, freeze
from cage.generators.stylegan2_base import SPACES, StyleGAN2Base
from cage_eval.errors import ConfigError, InputFileError

NOISE_MODES = ("const", "none")
CLONE_PACKAGES = ("dnnlib", "torch_utils", "training", "legacy", "metrics")


class NVlabsGenerator(StyleGAN2Base):
    """:class:`cage.generators.base.LatentGenerator` over an NVIDIA ``G`` (``G.mapping`` +
    ``G.synthesis``); spaces, prior and truncation from :class:`StyleGAN2Base`.

    Parameters
    ----------
    G : torch.nn.Module
        An unpickled NVIDIA generator (``z_dim``, ``w_dim``, ``c_dim``, ``num_ws``, ``mapping``
        with ``w_avg``, ``synthesis``).
    space : {"z", "w", "w+"}
    truncation_psi : float
    truncation_cutoff : int, optional
    noise_mode : {"const", "none"}
    force_fp32 : bool
        Forced True on the CPU.
    renormalize_z : bool
    class_index : int, optional
        Class of a conditional generator.
    compute : Compute
    """

    def __init__(self, G: Any, *, space: str = "w", truncation_psi: float = 1.0,
                 truncation_cutoff: int | None = None, noise_mode: str = "const",
                 force_fp32: bool = True, renormalize_z: bool = False,
                 class_index: int | None = None, compute: Compute | None = None) -> None:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES} (deterministic decoding)")
        compute = compute or Compute()
        super().__init__(z_dim=int(G.z_dim), w_dim=int(G.w_dim), n_layers=int(G.num_ws),
                         w_avg=G.mapping.w_avg.detach(), space=space,
                         truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                         renormalize_z=renormalize_z, compute=compute)
        self.G = G.to(self.compute.device)
        freeze(self.G)
        self.num_ws, self.c_dim = self.n_layers, int(getattr(G, "c_dim", 0))
        self.noise_mode = noise_mode
        self.force_fp32 = bool(force_fp32) or self.compute.device.type == "cpu"
        self.class_index = class_index

    def _labels(self, n: int, device: torch.device) -> torch.Tensor:
        c = torch.zeros(n, self.c_dim, device=device)
        if self.c_dim:
            c[:, self.class_index or 0] = 1.0
        return c

    def _mapping(self, z: torch.Tensor) -> torch.Tensor:
        """``z -> ws`` (n, num_ws, w_dim), untruncated."""
        return self.G.mapping(z, self._labels(z.shape[0], z.device), truncation_psi=1)

    def _synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return self.G.synthesis(ws, noise_mode=self.noise_mode, force_fp32=self.force_fp32)

    def describe(self) -> dict[str, Any]:
        return {"space": self.space, "z_dim": self.z_dim, "w_dim": self.w_dim,
                "num_ws": self.num_ws, "c_dim": self.c_dim, "class_index": self.class_index,
                "truncation_psi": self.psi, "truncation_cutoff": self.cutoff,
                "noise_mode": self.noise_mode, "force_fp32": self.force_fp32,
                "renormalize_z": self.renormalize_z}


# --------------------------------------------------------------------------- loading


def check_clone(repo: Path, where: str) -> None:
    """Refuse a folder that is not the root of an NVIDIA StyleGAN clone."""
    missing = [p for p in ("dnnlib", "torch_utils") if not (repo / p).is_dir()]
    if missing:
        raise ConfigError(f"{where} = {str(repo)!r}: no {' or '.join(p + '/' for p in missing)} "
                          "in it; point repo_path at the root of your clone of "
                          "NVlabs/stylegan2-ada-pytorch or NVlabs/stylegan3")


def load_network_pickle(path: Path, repo: Path | None, *, network: str = "G_ema",
                        legacy: bool = False, where: str = "[generator] pickle") -> Any:
    """Unpickle an NVIDIA network pickle with the clone ``repo`` importable; return ``network``.

    Raises
    ------
    ConfigError
        The pickle's code cannot be imported (names the module and the path to add), or the entry
        is missing or not a generator.
    InputFileError
        The file is not a readable pickle.
    """
    packages = CLONE_PACKAGES
    context = modules_from_clone(repo, packages) if repo is not None else contextlib.nullcontext()
    try:
        with context, open(path, "rb") as handle:
            if legacy:
                data = importlib.import_module("legacy").load_network_pkl(handle)
            else:
                data = pickle.load(handle)  # noqa: S301 - the user's own network pickle
    except ModuleNotFoundError as exc:
        module = exc.name or str(exc)
        if repo is None:
            raise ConfigError(
                f"{where} = {str(path)!r}: unpickling needs module {module!r}, NVIDIA's code, "
                "which cage-eval does not ship; set [generator] repo_path to your clone of "
                "NVlabs/stylegan2-ada-pytorch or NVlabs/stylegan3 (the folder that holds dnnlib/ "
                "and torch_utils/): it is put on sys.path while the pickle is read") from None
        raise ConfigError(
            f"{where} = {str(path)!r}: unpickling needs module {module!r}, which is not in "
            f"{repo}; repo_path must be the clone the network was trained with (the folder that "
            f"holds {module.split('.')[0]}/)") from None
    except ImportError as exc:
        raise ConfigError(f"{where} = {str(path)!r}: the pickle's code failed to import ({exc}); "
                          "check that repo_path is a complete clone matching the pickle") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise InputFileError(f"{where} = {str(path)!r}: not a readable network pickle "
                             f"({type(exc).__name__}: {exc}); give network-snapshot-*.pkl as "
                             "written by NVIDIA's training code") from None
    except OSError as exc:
        raise InputFileError(f"{where} = {str(path)!r}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict) or network not in data:
        keys = ", ".join(sorted(map(str, data))) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{where} = {str(path)!r}: has no entry {network!r} (found: {keys}); "
                          "set [generator] network to one of them")
    G = data[network]
    missing = [a for a in ("z_dim", "w_dim", "num_ws", "mapping", "synthesis") if not hasattr(G, a)]
    if missing or not hasattr(getattr(G, "mapping", None), "w_avg"):
        missing = missing or ["mapping.w_avg"]
        raise ConfigError(f"{where} = {str(path)!r}: entry {network!r} has no "
                          f"{', '.join(missing)}; expected an NVIDIA StyleGAN2-ADA / StyleGAN3 "
                          "generator")
    return G


def from_section(section: Section, compute: Compute) -> NVlabsGenerator:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    path = section.path("pickle", what="put your StyleGAN2-ADA / StyleGAN3 network pickle "
                        "(network-snapshot-*.pkl, with G_ema) there, or point pickle at it")
    repo = section.path("repo_path", None, kind="dir", what="clone NVlabs/stylegan2-ada-pytorch "
                        "(or NVlabs/stylegan3) there, or point repo_path at your clone")
    if repo is not None:
        check_clone(repo, section.where("repo_path"))
    network = section.text("network", "G_ema")
    legacy = section.flag("legacy", False)
    if legacy and repo is None:
        raise ConfigError(f"{section.where('legacy')} = true: needs repo_path (legacy.py comes "
                          "from your clone)")
    space = section.text("space", "w", choices=SPACES)
    psi = section.number("truncation_psi", 1.0, minimum=0.0)
    cutoff = section.integer("truncation_cutoff", None, minimum=1)
    noise = section.text("noise_mode", "const", choices=NOISE_MODES)
    fp32 = section.flag("force_fp32", True)
    renorm = section.flag("renormalize_z", False)
    class_index = section.integer("class_index", None, minimum=0)
    G = load_network_pickle(path, repo, network=network, legacy=legacy,
                            where=section.where("pickle"))
    c_dim = int(getattr(G, "c_dim", 0))
    if c_dim and class_index is None:
        raise ConfigError(f"{section.where('class_index')}: missing; the network is conditional "
                          f"(c_dim = {c_dim}), give the class to generate (0 .. {c_dim - 1})")
    if class_index is not None and not c_dim:
        raise ConfigError(f"{section.where('class_index')} = {class_index}: the network is "
                          "unconditional (c_dim = 0); remove class_index")
    if class_index is not None and class_index >= c_dim:
        raise ConfigError(f"{section.where('class_index')} = {class_index}: the network has "
                          f"{c_dim} classes (0 .. {c_dim - 1})")
    return NVlabsGenerator(G, space=space, truncation_psi=psi, truncation_cutoff=cutoff,
                           noise_mode=noise, force_fp32=fp32, renormalize_z=renorm,
                           class_index=class_index, compute=compute)
