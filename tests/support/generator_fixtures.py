"""Stand-ins for the files a researcher brings: clones laid out like NVIDIA's and rosinality's
repositories, their network files, and a labelled image folder.

The NVIDIA stand-in has ``dnnlib/``, ``torch_utils/`` with a persistence mechanism of its own
(classes decorated as persistent pickle a reference to ``torch_utils.persistence`` plus their
module's source; unpickling re-executes that source, which imports ``torch_utils`` and ``dnnlib``)
and ``training/networks.py`` with a tiny generator that has NVIDIA's interface (``mapping(z, c,
truncation_psi, truncation_cutoff)`` with ``w_avg``, ``synthesis(ws, noise_mode, force_fp32)``,
``z_dim``, ``w_dim``, ``num_ws``). Its pickle is written by a separate Python process that has
the clone on its path, as a pickle made elsewhere would be, so loading it here needs the clone
on ``sys.path`` exactly as a real one does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

DNNLIB = '''
class EasyDict(dict):
    """A dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value
'''

PERSISTENCE = '''
"""Persistent classes: pickles carry the defining module's source and rebuild from it."""
import inspect
import sys
import types
import uuid

import dnnlib

_source_of_module = {}
_module_of_source = {}


def _source(module):
    if module.__name__ in _source_of_module:
        return _source_of_module[module.__name__]
    return inspect.getsource(module)


def _module_from_source(source):
    module = _module_of_source.get(source)
    if module is None:
        name = "_persisted_" + uuid.uuid4().hex
        module = types.ModuleType(name)
        sys.modules[name] = module
        _source_of_module[name] = source
        _module_of_source[source] = module
        exec(compile(source, name, "exec"), module.__dict__)
    return module


def persistent_class(cls):
    if getattr(cls, "_persistent", False):
        return cls
    source = _source(sys.modules[cls.__module__])

    class Persistent(cls):
        _persistent = True

        def __reduce__(self):
            meta = dnnlib.EasyDict(source=source, name=cls.__name__, state=self.__getstate__())
            return (_rebuild, (dict(meta),))

    Persistent.__name__ = Persistent.__qualname__ = cls.__name__
    return Persistent


def _rebuild(meta):
    meta = dnnlib.EasyDict(meta)
    cls = _module_from_source(meta.source).__dict__[meta.name]
    obj = cls.__new__(cls)
    obj.__setstate__(meta.state)
    return obj
'''

NETWORKS = '''
"""A tiny generator with NVIDIA's interface (stand-in for training/networks.py)."""
import torch
from torch import nn

import dnnlib
from torch_utils import persistence


@persistence.persistent_class
class MappingNetwork(nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.fc0 = nn.Linear(z_dim + c_dim, w_dim)
        self.fc1 = nn.Linear(w_dim, w_dim)
        self.register_buffer("w_avg", torch.randn(w_dim) * 0.5)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        if self.c_dim:
            x = torch.cat([x, c], dim=1)
        x = self.fc1(torch.nn.functional.leaky_relu(self.fc0(x), 0.2))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


@persistence.persistent_class
class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, num_ws):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_ws
        self.const = nn.Parameter(torch.randn(8, 4, 4))
        self.affine = nn.ModuleList([nn.Linear(w_dim, 8) for _ in range(num_ws)])
        self.conv = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(num_ws - 1)])
        self.to_rgb = nn.Conv2d(8, img_channels, 1)
        for i in range(num_ws - 1):
            self.register_buffer(f"noise_const_{i}", torch.randn(1, 1, 4 * 2 ** (i + 1),
                                                                 4 * 2 ** (i + 1)))

    def forward(self, ws, noise_mode="random", force_fp32=False, **kwargs):
        assert ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
        x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1) * self.affine[0](ws[:, 0])[:, :, None, None]
        for i, conv in enumerate(self.conv):
            x = torch.nn.functional.interpolate(x, scale_factor=2)
            x = conv(x) * (1 + self.affine[i + 1](ws[:, i + 1])[:, :, None, None])
            if noise_mode == "const":
                x = x + 0.1 * getattr(self, f"noise_const_{i}")
            elif noise_mode == "random":
                x = x + 0.1 * torch.randn_like(x[:, :1])
            x = torch.nn.functional.leaky_relu(x, 0.2)
        x = 1.2 * torch.tanh(self.to_rgb(x))
        size = self.img_resolution
        return torch.nn.functional.interpolate(x, size=(size, size)) if x.shape[-1] != size else x


@persistence.persistent_class
class Generator(nn.Module):
    def __init__(self, z_dim=6, c_dim=0, w_dim=5, img_resolution=16, img_channels=3, num_ws=3):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels, self.num_ws = img_resolution, img_channels, num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws)
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, num_ws)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
'''

LEGACY = '''
import pickle


def load_network_pkl(f):
    data = pickle.load(f)
    data["converted_by"] = "legacy"
    return data
'''

MAKE_PICKLE = '''
import copy, pickle, sys
import torch
sys.path.insert(0, sys.argv[1])
from training.networks import Generator
torch.manual_seed(int(sys.argv[3]))
G = Generator(c_dim=int(sys.argv[4])).eval().requires_grad_(False)
with open(sys.argv[2], "wb") as f:
    pickle.dump({"G": G, "G_ema": copy.deepcopy(G), "D": None}, f)
'''


def write_nvlabs_clone(root: Path) -> Path:
    """A folder laid out like NVlabs/stylegan2-ada-pytorch: dnnlib/, torch_utils/, training/."""
    files = {"dnnlib/__init__.py": DNNLIB, "torch_utils/__init__.py": "",
             "torch_utils/persistence.py": PERSISTENCE, "training/__init__.py": "",
             "training/networks.py": NETWORKS, "legacy.py": LEGACY}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


def pickle_nvlabs_generator(clone: Path, out: Path, *, seed: int = 0, c_dim: int = 0) -> Path:
    """Write ``out``, a network pickle of the stand-in generator, from a separate process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", MAKE_PICKLE, str(clone), str(out), str(seed),
                    str(c_dim)], check=True, env=env, cwd=str(out.parent))
    return out


ROS_OP = '''
import torch
from torch.nn import functional as F


def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
    return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), negative_slope) * scale
'''

ROS_OP_BROKEN = '''
raise RuntimeError("Error building extension 'fused': nvcc not found")
'''

ROS_MODEL = '''
"""A tiny Generator with rosinality's interface (stand-in for stylegan2-pytorch/model.py)."""
import math

import torch
from torch import nn

from op import fused_leaky_relu


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class Generator(nn.Module):
    def __init__(self, size, style_dim, n_mlp, channel_multiplier=2, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.size, self.style_dim = size, style_dim
        layers = [PixelNorm()]
        for _ in range(n_mlp):
            layers.append(nn.Linear(style_dim, style_dim))
        self.style = nn.Sequential(*layers)
        self.log_size = int(math.log(size, 2))
        self.n_latent = self.log_size * 2 - 2
        width = 4 * channel_multiplier
        self.input = nn.Parameter(torch.randn(1, width, 4, 4))
        self.mods = nn.ModuleList([nn.Linear(style_dim, width) for _ in range(self.n_latent)])
        self.bias = nn.Parameter(torch.zeros(width))
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1)
                                    for _ in range(self.log_size - 2)])
        self.to_rgb = nn.Conv2d(width, 3, 1)
        self.noises = nn.Module()
        for i in range(self.log_size - 2):
            res = 4 * 2 ** (i + 1)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))

    def mean_latent(self, n_latent):
        return self.style(torch.randn(n_latent, self.style_dim)).mean(0, keepdim=True)

    def get_latent(self, input):
        return self.style(input)

    def forward(self, styles, return_latents=False, inject_index=None, truncation=1,
                truncation_latent=None, input_is_latent=False, noise=None,
                randomize_noise=True):
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        latent = styles[0] if styles[0].ndim == 3 else \\
            styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        x = self.input.repeat(latent.shape[0], 1, 1, 1) * self.mods[0](latent[:, 0])[:, :, None, None]
        for i, conv in enumerate(self.convs):
            x = torch.nn.functional.interpolate(x, scale_factor=2)
            x = conv(x) * (1 + self.mods[i + 1](latent[:, i + 1])[:, :, None, None])
            n = getattr(self.noises, f"noise_{i}") if not randomize_noise else torch.randn_like(x[:, :1])
            x = fused_leaky_relu(x + 0.1 * n, self.bias)
        image = torch.tanh(self.to_rgb(x))
        return (image, latent) if return_latents else (image, None)
'''

SAVE_ROS = '''
import argparse, sys
import torch
sys.path.insert(0, sys.argv[1])
from model import Generator
torch.manual_seed(0)
g = Generator(16, 6, 2, channel_multiplier=2)
ckpt = {"g_ema": g.state_dict(), "args": argparse.Namespace(size=16, latent=6, n_mlp=2,
                                                              channel_multiplier=2)}
if sys.argv[3] == "avg":
    ckpt["latent_avg"] = torch.full((6,), 0.25)
torch.save(ckpt, sys.argv[2])
'''


def write_rosinality_clone(root: Path, *, broken_op: bool = False) -> Path:
    """A folder laid out like rosinality/stylegan2-pytorch: model.py and op/ (whose import fails
    like a CUDA build does, with ``broken_op``)."""
    (root / "op").mkdir(parents=True, exist_ok=True)
    (root / "op" / "__init__.py").write_text(
        "from .fused_act import fused_leaky_relu  # noqa: F401\n")
    (root / "op" / "fused_act.py").write_text(textwrap.dedent(
        ROS_OP_BROKEN if broken_op else ROS_OP).lstrip())
    (root / "model.py").write_text(textwrap.dedent(ROS_MODEL).lstrip())
    return root


def save_rosinality_checkpoint(clone: Path, out: Path, *, latent_avg: bool = False) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", SAVE_ROS, str(clone), str(out),
                    "avg" if latent_avg else "none"], check=True, env=env, cwd=str(out.parent))
    return out


def write_image_folder(folder: Path, generator, *, n: int = 60, seed: int = 1,
                       ext: str = ".png") -> tuple[Path, np.ndarray]:
    """Decode ``n`` seeded latents of ``generator`` into PNG files ``img_000.png`` ...; return the
    folder and the latents. The images are quantised to 8 bits as any image file is."""
    folder.mkdir(parents=True, exist_ok=True)
    z = generator.sample(n, seed)
    with torch.no_grad():
        x = generator.decode(z).numpy()
    for i, img in enumerate(x):
        arr = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
        Image.fromarray(arr).save(folder / f"img_{i:03d}{ext}")
    return folder, z.numpy()


def label_folder(folder: Path, classify, *, names: list[str] | None = None,
                 celeba: bool = False) -> Path:
    """Label every image of ``folder`` with ``classify`` thresholded at the median of each
    attribute (balanced labels); write ``attributes.csv`` (0/1) or CelebA's ``±1`` format."""
    files = sorted(p.name for p in folder.iterdir() if p.suffix == ".png")
    arr = np.stack([np.asarray(Image.open(folder / f), dtype=np.float32) / 255.0 for f in files])
    x = torch.as_tensor(arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2))
    probs = {k: np.asarray(v, dtype=np.float64) for k, v in classify(x).items()}
    attrs = names or sorted(probs)
    labels = {a: (probs[a] > np.median(probs[a])).astype(int) for a in attrs}
    if celeba:
        path = folder.parent / "list_attr.txt"
        lines = [str(len(files)), " ".join(attrs)]
        lines += [f"{f} " + " ".join("1" if labels[a][i] else "-1" for a in attrs)
                  for i, f in enumerate(files)]
    else:
        path = folder.parent / "attributes.csv"
        lines = ["filename," + ",".join(attrs)]
        lines += [f + "," + ",".join(str(labels[a][i]) for a in attrs) for i, f in enumerate(files)]
    path.write_text("\n".join(lines) + "\n")
    return path


