"""ONNX networks as a CAGE generator (``adapter = "onnx"``), run by onnxruntime on the CPU or,
with onnxruntime-gpu, on CUDA.

Section keys: those of ``adapter = "openvino"`` (:mod:`cage.generators.openvino_ir`:
``synthesis``, ``mapping``, ``package``, ``space``, ``truncation_psi``, ``truncation_mean``,
``output_range``, ``clamp``, ``output_size``, ``channels_last``, ``image_shape``) with ``.onnx``
files, plus ``device`` (``"cpu"``, or ``"cuda"``/``"cuda:N"``: onnxruntime's CUDA execution
provider, which needs the ``onnxruntime-gpu`` package; asking for it without is an error, never a
silent fall-back), ``batch_size`` and ``threads`` (onnxruntime's intra-op threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cage.config.sections import Section
from cage.generators import exported
from cage.generators.device import Compute
from cage.generators.openvino_ir import package_file
from cage_eval.errors import ConfigError, InputFileError

INSTALL = "pip install onnxruntime (onnxruntime-gpu for CUDA; or pip install 'cage-eval[faces]')"


def runtime(where: str) -> Any:
    """The onnxruntime module, or a ConfigError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"{where}: onnxruntime is not installed; {INSTALL}") from None
    return onnxruntime


def providers(device: str, where: str) -> list[Any]:
    """onnxruntime execution providers for a torch-style device name."""
    ort = runtime(where)
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(f"{where}: device {device!r} needs onnxruntime's CUDA execution "
                          f"provider, and this onnxruntime has only "
                          f"{', '.join(ort.get_available_providers())}; pip install "
                          "onnxruntime-gpu, or use device = \"cpu\"")
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def open_session(path: Path, where: str, *, device: str = "cpu",
                 threads: int | None = None) -> Any:
    """An onnxruntime session of ``path``; a file it cannot read is an InputFileError."""
    ort = runtime(where)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers(device, where))
    except ConfigError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputFileError(f"{where}: not an ONNX model onnxruntime can run ({first}); export "
                             "it with torch.onnx.export") from None


def dims(shape: list[Any]) -> list[Any]:
    """ONNX shape entries: ints stay, symbolic names and None become None."""
    return [s if isinstance(s, int) and s > 0 else None for s in shape]


class OnnxNetwork:
    """One ONNX model in an onnxruntime session (:class:`cage.generators.exported.Network`)."""

    def __init__(self, path: Path, where: str, shown: str, *, device: str,
                 threads: int | None) -> None:
        self.where = f"{where} = {shown!r}"
        self.session = open_session(path, self.where, device=device, threads=threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"{self.where}: the network has {len(inputs)} inputs; expected one, "
                              "a batch of latent vectors (n, d)")
        self.input_name = inputs[0].name
        self.input_dim, self.batch = exported.input_dim_of(dims(list(inputs[0].shape)), where,
                                                           shown)
        if self.batch not in (None, 1):
            raise ConfigError(f"{self.where}: the network's batch is fixed at {self.batch}; "
                              "export it with a dynamic batch (dynamic_axes) or a batch of 1")
        self.output_shape = tuple(dims(list(self.session.get_outputs()[0].shape)))[1:]

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)


def from_section(section: Section, compute: Compute) -> exported.ExportedGenerator:
    """Build the adapter from ``[generator]`` (keys in the module docstring)."""
    section.accept(["package"])
    device = str(compute.device)

    def open_network(sec: Section, key: str) -> OnnxNetwork:
        path, shown = package_file(sec, key)
        return OnnxNetwork(path, sec.where(key), shown, device=device, threads=compute.threads)

    return exported.from_section(section, compute, open_network)
