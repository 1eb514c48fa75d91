"""OpenVINO IR networks as a CAGE generator (``adapter = "openvino"``): optional mapping, then
synthesis, read with the ``openvino`` runtime on the CPU.

Section keys::

    synthesis = "SynthesisNetwork.xml"   # IR: the .xml with its .bin next to it (ONNX files work too)
    mapping = "MappingNetwork.xml"       # optional z -> w network
    package = "random_face"              # optional: the paths are inside this installed package
    space = "w"                          # "z" or "w" (default "w" with a mapping)
    truncation_psi = 1.0                 # w_avg + psi (w - w_avg), when decoding only
    truncation_mean = 4096               # mapping draws averaged for w_avg
    output_range = [-1, 1]               # raw values of black and white
    clamp = true                         # clip to [0, 1] after the range map
    output_size = [256, 256]             # downscale decoded images
    channels_last = false
    image_shape = [3, 64, 64]            # for flat outputs
    precision = "f32"                    # or "bf16" (OpenVINO's own default on CPUs that have
                                         # it: faster there, results then depend on the CPU)

plus ``batch_size`` (rows per network call; the batch dimension of a static IR is reshaped, and
a network that cannot be reshaped runs one row at a time) and ``threads`` (OpenVINO's
``INFERENCE_NUM_THREADS``). ``device`` must be ``"cpu"``. Details: docs/generators.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from cage.config.sections import Section
from cage.generators import exported
from cage.generators.device import Compute
from cage_eval.errors import ConfigError, InputFileError

PRECISIONS = ("f32", "bf16")
INSTALL = "pip install openvino (or pip install 'cage-eval[faces]')"


def _runtime(where: str) -> Any:
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"{where}: the openvino runtime is not installed; {INSTALL}") from None
    return openvino


def package_file(section: Section, key: str) -> tuple[Path, str]:
    """The file ``key`` names, inside ``[generator] package`` when the section gives one."""
    value = section.text(key)
    package = section.text("package", None)
    if package is None:
        return section.path(key, what="give the network file (IR .xml with its .bin, or .onnx)"), \
            value
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{section.where('package')} = {package!r}: no such installed package; "
                          "install it (for MobileStyleGAN: pip install --no-deps random-face)")
    path = Path(list(spec.submodule_search_locations)[0]) / value
    if not path.is_file():
        raise InputFileError(f"{section.where(key)} = {value!r}: no such file in the installed "
                             f"package {package!r} ({path}); name a file of the package")
    return path, value


class IRNetwork:
    """One OpenVINO model compiled for the CPU (:class:`cage.generators.exported.Network`)."""

    def __init__(self, path: Path, where: str, shown: str, *, batch_size: int,
                 threads: int | None, precision: str = "f32") -> None:
        ov = _runtime(where)
        core = ov.Core()
        self.where = f"{where} = {shown!r}"
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise InputFileError(f"{self.where}: the weights file {path.with_suffix('.bin').name} "
                                 "is not next to it; an IR is an .xml and a .bin of the same name")
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise InputFileError(f"{self.where}: not a network OpenVINO can read ({first}); "
                                 "give an IR .xml (with its .bin) or an .onnx file") from None
        if len(model.inputs) != 1 or len(model.outputs) < 1:
            raise ConfigError(f"{self.where}: the network has {len(model.inputs)} inputs; "
                              "expected one, a batch of latent vectors (n, d)")
        shape = [d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape()] \
            if model.input(0).get_partial_shape().rank.is_static else []
        self.input_dim, self.batch = exported.input_dim_of(shape, where, shown)
        if self.batch is not None:
            try:  # a static batch: make it dynamic so batch_size rows run per call
                model.reshape([-1, self.input_dim])
                self.batch = None
            except RuntimeError:
                if self.batch != 1:
                    raise ConfigError(f"{self.where}: the network's batch is fixed at "
                                      f"{self.batch} and cannot be reshaped; export it with a "
                                      "batch of 1 or a dynamic batch") from None
        out = model.output(0).get_partial_shape()
        self.output_shape = tuple(d.get_length() if d.is_static else None for d in out)[1:] \
            if out.rank.is_static else ()
        # OpenVINO computes in bf16 by default on CPUs that have it: results would depend on the
        # machine. f32 unless asked.
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": precision}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.batch_size = batch_size

    def run(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: x})
        return np.array(result[self.compiled.output(0)], dtype=np.float32, copy=True)


def from_section(section: Section, compute: Compute) -> exported.ExportedGenerator:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    if compute.device.type != "cpu":
        raise ConfigError(f"{section.where('device')} = {str(compute.device)!r}: the openvino "
                          "adapter runs on the CPU; use device = \"cpu\" (or export to ONNX and "
                          "use adapter = \"onnx\" on a GPU)")
    section.accept(["package"])
    precision = section.text("precision", "f32", choices=PRECISIONS)

    def open_network(sec: Section, key: str) -> IRNetwork:
        path, shown = package_file(sec, key)
        return IRNetwork(path, sec.where(key), shown, batch_size=compute.batch_size,
                         threads=compute.threads, precision=precision)

    return exported.from_section(section, compute, open_network)
