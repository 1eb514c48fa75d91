"""Loading a generator from an experiment's ``[generator]`` section.

Three ways, exactly one per section::

    [generator]
    factory = "my_models.faces:make_generator"   # any callable returning the protocol object
    width = 64                                   # every other key is a keyword option of it
    python_path = ["src"]                        # folders to import my_models from (optional)

    [generator]
    adapter = "stylegan2_nvidia"                 # a reference adapter of cage-eval ...
    pickle = "models/network.pkl"                # ... with its own keys (docs/generators.md)

    [generator]
    adapter = "my_gan"                           # ... or an entry point of another package

A ``factory`` (or an entry point, which names one) is called with the section's other keys as
keyword arguments, plus ``device`` when it takes a ``device`` parameter. A package registers an
adapter name with::

    [project.entry-points."cage_eval.generators"]
    my_gan = "my_package.gan:make_generator"

Whatever comes back goes through :func:`cage.generators.base.check_generator` (two latents are
sampled and decoded) before any real work, so a missing method, a wrong shape or range is one
:class:`~cage_eval.errors.ConfigError` naming the section.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from cage.config.sections import Section, call_with_options, import_object
from cage.generators.base import GuardedGenerator, batch_size_of, check_generator
from cage.generators.device import AUTOCAST_CHOICES, Compute, resolve_device
from cage_eval.errors import ConfigError

#: The reference adapters: ``adapter`` name -> module with ``from_section(section, compute)``.
ADAPTERS: dict[str, str] = {
    "torch_module": "cage.generators.torch_module",
    "stylegan2_nvidia": "cage.generators.stylegan2_nvidia",
    "stylegan2_rosinality": "cage.generators.stylegan2_rosinality",
    "zuko_flow": "cage.generators.zuko_flow",
    "cage_vae": "cage.experiments.digits.vae_adapter",
    "openvino": "cage.generators.openvino_ir",
    "onnx": "cage.generators.onnx_model",
}

#: Entry-point group through which other packages add adapter names.
ENTRY_POINT_GROUP = "cage_eval.generators"

#: ``batch_size`` of the reference adapters when the section does not set one.
DEFAULT_ADAPTER_BATCH = 64


@dataclass
class LoadedGenerator:
    """A checked generator and what the manifest should say about it.

    Attributes
    ----------
    generator : object
        Follows :class:`cage.generators.base.LatentGenerator`.
    obs_shape : tuple of int
        Shape of one decoded observation, ``(C, H, W)`` for images.
    compute : Compute
        Device, batch size and autocast (what a factory was given; adapters use it).
    info : dict
        JSON-serialisable description (how it was loaded, device, spaces, truncation, ...).
    """

    generator: Any
    obs_shape: tuple[int, ...]
    compute: Compute
    info: dict[str, Any] = field(default_factory=dict)


def adapter_names() -> list[str]:
    """Built-in adapter names, then entry-point names."""
    extra = [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(ADAPTERS) + sorted(set(extra) - set(ADAPTERS))


def read_compute(section: Section, device_override: str | None = None) -> Compute:
    """``device``, ``batch_size``, ``autocast`` and ``threads`` of a section (the device checked
    on this machine)."""
    name = device_override or section.text("device", "cpu")
    section.accept(["device"])
    device = resolve_device(name, section.where("device"))
    batch = section.integer("batch_size", DEFAULT_ADAPTER_BATCH, minimum=1)
    autocast = section.text("autocast", "off", choices=AUTOCAST_CHOICES)
    threads = section.integer("threads", None, minimum=1)
    return Compute(device=device, batch_size=batch, autocast=autocast, threads=threads)


def load_generator(section: Section, *, images: bool | None = True, need_encode: bool = False,
                   device_override: str | None = None) -> LoadedGenerator:
    """Build the generator a ``[generator]`` section describes and check it (module docstring).

    Parameters
    ----------
    section : Section
        The raw ``[generator]`` section.
    images : bool or None
        Passed to :func:`check_generator`: True requires ``(n, C, H, W)`` images.
    need_encode : bool
        Require ``encode``.
    device_override : str, optional
        Replaces ``[generator] device``.

    Raises
    ------
    ConfigError, InputFileError
        Naming the key, the file, the module or the method at fault.
    """
    has_factory, has_adapter = section.has("factory"), section.has("adapter")
    if has_factory == has_adapter:
        raise ConfigError(f"{section.where()}: give exactly one of factory = \"module:callable\" "
                          f"or adapter = one of {', '.join(adapter_names())}")
    section.python_path()
    if has_factory:
        spec = section.text("factory")
        factory = import_object(spec, section.where("factory"))
        generator, compute = _from_factory(section, factory, device_override)
        where, how = f"{section.where('factory')} = {spec!r}", {"factory": spec}
    else:
        name = section.text("adapter")
        where = f"{section.where('adapter')} = {name!r}"
        how = {"adapter": name}
        if name in ADAPTERS:
            compute = read_compute(section, device_override)
            generator = importlib.import_module(ADAPTERS[name]).from_section(section, compute)
            section.finish()
        else:
            factory = _entry_point(name, section)
            how["entry_point"] = f"{factory.__module__}:{getattr(factory, '__qualname__', '?')}"
            generator, compute = _from_factory(section, factory, device_override)
    generator = GuardedGenerator(generator, where)  # every later call of the user's code too
    obs_shape = check_generator(generator, where, need_encode=need_encode, images=images)
    generator.set_obs_shape(obs_shape)
    describe = getattr(generator, "describe", None)
    info = {**how, "latent_dim": int(generator.latent_dim), "obs_shape": list(obs_shape),
            "encode": hasattr(generator, "encode"), **compute.describe(),
            "decode_batch": batch_size_of(generator),
            **(describe() if callable(describe) else {})}
    return LoadedGenerator(generator=generator, obs_shape=obs_shape, compute=compute, info=info)


def _from_factory(section: Section, factory: Any, device_override: str | None) -> tuple[Any, Compute]:
    """Call a user factory with the section's other keys (and ``device`` when it takes one)."""
    if not callable(factory):
        raise ConfigError(f"{section.where('factory')}: names a {type(factory).__name__}, not a "
                          "callable; name a function or class that returns the generator")
    options = {k: v for k, v in section.body.items()
               if k not in ("factory", "adapter", "python_path", "device")}
    device_name = device_override or section.body.get("device", "cpu")
    if not isinstance(device_name, str):
        raise ConfigError(f"{section.where('device')} = {device_name!r}: expected \"cpu\" or "
                          "\"cuda\"")
    device = resolve_device(device_name, section.where("device"))
    key = "factory" if section.has("factory") else "adapter"
    where = f"{section.where(key)} = {section.body[key]!r}"
    generator = call_with_options(factory, options, where, extra={"device": device_name})
    batch = options.get("batch_size")
    compute = Compute(device=device, batch_size=batch if isinstance(batch, int) and batch > 0
                      else batch_size_of(generator))
    return generator, compute


def _entry_point(name: str, section: Section) -> Any:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except ImportError as exc:
                raise ConfigError(f"{section.where('adapter')} = {name!r}: its entry point "
                                  f"{ep.value!r} cannot be imported ({exc}); install the package "
                                  "that provides it") from None
    raise ConfigError(f"{section.where('adapter')} = {name!r}: no such generator adapter; choose "
                      f"one of {', '.join(adapter_names())} or use factory = \"module:callable\"")
