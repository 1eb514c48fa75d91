"""Where and how an adapter computes: the device, rows per call, and autocast on CUDA.

Every reference adapter takes the same three settings from ``[generator]``:

``device``
    ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``. Asking for CUDA where torch sees no GPU is a
    :class:`~cage_eval.errors.ConfigError`, never a silent fall-back to the CPU.
``batch_size``
    Rows per network call; ``decode`` and ``sample`` split larger requests.
``autocast``
    ``"off"`` (default), ``"fp16"`` or ``"bf16"``: decode under ``torch.autocast`` on CUDA. On the
    CPU it is always off (CPU half precision is slow and changes results), so one config serves
    both devices; the manifest records what was used.
``threads``
    Torch threads while the adapter computes (default: leave torch's setting). On a busy machine
    small networks run far faster on one thread, and one thread makes CPU results independent of
    the core count.

Adapters return CPU float32 tensors, so the rest of CAGE never sees a device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cage.compute.runtime import torch_threads
from cage_eval.errors import ConfigError

AUTOCAST_CHOICES = ("off", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str, where: str) -> torch.device:
    """``name`` as a torch device that exists on this machine.

    Raises
    ------
    ConfigError
        Not ``cpu``/``cuda``/``cuda:N``, or CUDA asked for where torch has no GPU.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{where} = {name!r}: choose \"cpu\" or \"cuda\" (or \"cuda:N\")") \
            from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{where} = {name!r}: choose \"cpu\" or \"cuda\" (or \"cuda:N\")")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.__version__
            raise ConfigError(f"{where} = {name!r}: torch {build} sees no CUDA GPU on this machine "
                              "(no GPU, no driver, or a CPU-only torch build); use device = "
                              "\"cpu\" or run on a machine with a GPU")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{where} = {name!r}: this machine has {count} CUDA device(s) "
                              f"(cuda:0 .. cuda:{count - 1})")
    return device


@dataclass(frozen=True)
class Compute:
    """Device, rows per call and autocast dtype of one adapter.

    Attributes
    ----------
    device : torch.device
    batch_size : int
        Rows per network call.
    autocast : str
        ``"off"``, ``"fp16"`` or ``"bf16"`` as configured; :attr:`autocast_dtype` is what is used.
    """

    device: torch.device = torch.device("cpu")
    batch_size: int = 64
    autocast: str = "off"
    threads: int | None = None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype actually used: None on the CPU or when off."""
        return _DTYPES.get(self.autocast) if self.device.type == "cuda" else None

    def autocast_context(self) -> contextlib.AbstractContextManager[None]:
        """``torch.autocast`` on CUDA when configured, else a no-op."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=dtype)

    def describe(self) -> dict[str, object]:
        """For the manifest."""
        return {"device": str(self.device), "batch_size": self.batch_size,
                "autocast": self.autocast if self.autocast_dtype is not None else "off",
                "threads": self.threads}


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, compute: Compute, *,
            autocast: bool = False) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``compute.batch_size`` rows, on ``compute.device``.

    Inputs are moved to the device as float32; outputs come back as CPU float32 and are
    concatenated. Gradients flow through (for optimisation-based inversion); CAGE itself calls
    under ``torch.no_grad()``.
    """
    parts = []
    with torch_threads(compute.threads):
        for start in range(0, x.shape[0], compute.batch_size):
            chunk = x[start:start + compute.batch_size].to(compute.device, torch.float32)
            with compute.autocast_context() if autocast else contextlib.nullcontext():
                out = fn(chunk)
            parts.append(out.to("cpu", torch.float32))
    if not parts:
        raise ValueError("batched() needs at least one row")
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def freeze(*modules: torch.nn.Module | None) -> None:
    """Put ``modules`` in eval mode with no parameter requiring gradients (inference only; an
    inversion then optimises the latents alone)."""
    for module in modules:
        if isinstance(module, torch.nn.Module):
            module.eval()
            for param in module.parameters():  # (TorchScript modules have no requires_grad_)
                param.requires_grad_(False)
