"""Tiny networks written as ONNX files (with the ``onnx`` package) and as OpenVINO IR (converted
from them by OpenVINO itself), with their closed forms in NumPy, for the exported-network
adapters' tests: what a researcher exports, at a size a test can afford.

* mapping ``z (n, d) -> w = z A + b`` (``(n, d_w)``);
* synthesis ``w (n, d_w) -> tanh(w B) reshaped to (n, C, H, W)``, values in ``(-1, 1)``;
* a classifier ``images (n, C, H, W) -> sigmoid(mean over pixels per channel @ K)``, ``(n, k)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _weights(shape: tuple[int, ...], seed: int, scale: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def mapping_weights(d: int = 6, d_w: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return _weights((d, d_w), seed), _weights((d_w,), seed + 100)


def synthesis_weights(d_w: int = 5, shape: tuple[int, int, int] = (3, 8, 8),
                      seed: int = 2) -> np.ndarray:
    return _weights((d_w, int(np.prod(shape))), seed)


def mapping_np(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return z.astype(np.float64) @ a + b


def synthesis_np(w: np.ndarray, bmat: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return np.tanh(w.astype(np.float64) @ bmat).reshape(w.shape[0], *shape)


def _save(graph, path: Path, opset: int = 17) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _input(name: str, dims: list) -> object:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def write_mapping(path: Path, a: np.ndarray, b: np.ndarray, *, batch: object = "N") -> Path:
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["z", "A"], ["zA"]), helper.make_node("Add", ["zA", "b"], ["w"])],
        "mapping", [_input("z", [batch, a.shape[0]])], [_input("w", [batch, a.shape[1]])],
        [numpy_helper.from_array(a, "A"), numpy_helper.from_array(b, "b")])
    return _save(graph, path)


def write_synthesis(path: Path, bmat: np.ndarray, shape: tuple[int, ...], *,
                    batch: object = "N", input_dims: list | None = None,
                    op: str = "Tanh") -> Path:
    """``op(w B)`` reshaped to ``shape`` (``(C, H, W)``, or ``(F,)`` for a flat output);
    ``op = "Log"`` gives NaN for negative ``w B``."""
    from onnx import helper, numpy_helper

    dims = input_dims if input_dims is not None else [batch, bmat.shape[0]]
    nodes = [helper.make_node("MatMul", ["w", "B"], ["wB"]),
             helper.make_node(op, ["wB"], ["t"]),
             helper.make_node("Reshape", ["t", "shape"], ["img"])]
    graph = helper.make_graph(
        nodes, "synthesis", [_input("w", dims)], [_input("img", [batch, *shape])],
        [numpy_helper.from_array(bmat, "B"),
         numpy_helper.from_array(np.array([-1, *shape], dtype=np.int64), "shape")])
    return _save(graph, path)


def write_classifier(path: Path, kmat: np.ndarray, *, size: int = 8, batch: object = "N") -> Path:
    """``sigmoid(mean_{h,w}(x) @ K)``: ``(n, C, size, size) -> (n, k)``."""
    from onnx import helper, numpy_helper

    c, k = kmat.shape
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "K"], ["l"]),
             helper.make_node("Sigmoid", ["l"], ["p"])]
    graph = helper.make_graph(
        nodes, "classifier", [_input("x", [batch, c, size, size])], [_input("p", [batch, k])],
        [numpy_helper.from_array(kmat, "K"),
         numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")])
    return _save(graph, path, opset=18)


def to_ir(onnx_path: Path, xml_path: Path) -> Path:
    """The same network as OpenVINO IR (``.xml`` + ``.bin``), converted by OpenVINO."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path
