"""The generator interface CAGE needs, and the check every generator passes before it is used.

A generator maps latents ``z`` (shape ``(n, latent_dim)``, float32) to observations. CAGE samples
latents from the generator's prior, decodes them, and (for encoded data and counterfactual pairs
of real images) encodes observations: the exact inverse for a flow, the posterior mean for a VAE,
a trained or optimisation-based inverter for a GAN (docs/method.md §1).

The protocol
------------
``latent_dim: int``
    Size of the latent space CAGE edits (for StyleGAN: z, w, or w+ flattened).
``sample(n, seed) -> Tensor (n, latent_dim)``
    ``n`` prior draws, float32, on the CPU. The same ``(n, seed)`` gives the same tensor, and
    ``sample(n, seed)[:m] == sample(m, seed)[:m]`` is *not* required: CAGE always asks for whole
    blocks of :data:`cage.run.pipeline.PRIOR_BLOCK` draws with one seed per block, so that a latent's
    value depends only on its global index (the same on one process or many).
``decode(z) -> Tensor``
    Observations for latents ``z`` (float32, any device the generator chooses; CAGE moves them to
    the CPU): images are ``(n, C, H, W)`` with ``C`` in {1, 3} and values in ``[0, 1]``; non-image
    observations are ``(n, F)``. CAGE calls ``decode`` on at most ``batch_size`` rows at a time and
    under ``torch.no_grad()``; decoding must be deterministic (fixed noise for a GAN).

Optional
--------
``encode(x) -> Tensor (n, latent_dim)``
    Latents of observations (an :class:`EncodingGenerator`).
``batch_size: int``
    Rows per ``decode`` call (default :data:`DEFAULT_BATCH_SIZE`).
``device: str``
    Where the generator computes (``"cpu"``, ``"cuda"``, ``"cuda:1"``); informational.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from cage_eval.errors import CageEvalError, ConfigError, UserCodeError

#: Rows per decode call when a generator does not say.
DEFAULT_BATCH_SIZE = 256


@runtime_checkable
class LatentGenerator(Protocol):
    """What CAGE requires of a pretrained latent-variable generator (see the module docstring).

    Attributes
    ----------
    latent_dim : int
        Size of the latent space CAGE edits.
    """

    latent_dim: int

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded prior draws, shape ``(n, latent_dim)``, float32, CPU."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Observations for latents ``z``: images ``(n, C, H, W)`` in ``[0, 1]``, else ``(n, F)``."""
        ...


@runtime_checkable
class EncodingGenerator(LatentGenerator, Protocol):
    """A generator that can also encode observations back to latents."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents for observations ``x``: exact inverse (flow) or posterior mean (VAE)."""
        ...


def gaussian_sample(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """``n`` seeded ``N(0, I)`` draws, shape ``(n, latent_dim)``, float32: the usual prior."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, latent_dim, generator=gen, dtype=torch.float32)


def batch_size_of(generator: Any) -> int:
    """The generator's ``batch_size`` if it states a positive one, else :data:`DEFAULT_BATCH_SIZE`."""
    size = getattr(generator, "batch_size", None)
    return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 \
        else DEFAULT_BATCH_SIZE


def check_generator(generator: Any, where: str, *, need_encode: bool = False,
                    images: bool | None = None) -> tuple[int, ...]:
    """Check that ``generator`` follows the protocol; return the shape of one observation.

    Draws two latents with ``sample(2, 0)`` and decodes them, so a wrong output shape, type, range
    or a non-finite value is found before any real work starts.

    Parameters
    ----------
    generator : object
    where : str
        Where the generator came from (``"file.toml: [generator] factory = 'pkg:make'"``), for
        messages.
    need_encode : bool
        Require ``encode``.
    images : bool, optional
        True: the observations must be images ``(C, H, W)`` with ``C`` in {1, 3}; False: vectors
        ``(F,)``; None: either.

    Returns
    -------
    tuple of int
        The shape of one observation (``(C, H, W)`` or ``(F,)``).

    Raises
    ------
    ConfigError
        Naming what is missing or wrong.
    """
    missing = [name for name in ("latent_dim", "sample", "decode") if not hasattr(generator, name)]
    if need_encode and not hasattr(generator, "encode"):
        missing.append("encode")
    if missing:
        own = generator.inner if isinstance(generator, GuardedGenerator) else generator
        raise ConfigError(f"{where}: the generator ({type(own).__name__}) has no "
                          f"{', '.join(missing)}; it must provide latent_dim, sample(n, seed) and "
                          "decode(z) (see docs/generators.md)")
    for name in ("sample", "decode") + (("encode",) if need_encode else ()):
        if not callable(getattr(generator, name)):
            raise ConfigError(f"{where}: the generator's {name} is not callable")
    dim = generator.latent_dim
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"{where}: the generator's latent_dim is {dim!r}; it must be a positive "
                          "integer")
    z = generator.sample(2, 0)
    if not isinstance(z, torch.Tensor) or tuple(z.shape) != (2, dim):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ConfigError(f"{where}: sample(2, seed) returned {shape}; expected a torch tensor of "
                          f"shape (2, {dim}) (latent_dim = {dim})")
    if not torch.isfinite(z).all():
        raise ConfigError(f"{where}: sample(2, seed) returned NaN or infinite latents")
    with torch.no_grad():
        x = generator.decode(z.to(torch.float32))
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{where}: decode(z) returned {type(x).__name__}; expected a torch tensor")
    shape = tuple(x.shape[1:])
    if x.ndim < 2 or 0 in x.shape[1:]:
        raise ConfigError(f"{where}: decode(z) returned shape {tuple(x.shape)}; expected images "
                          "(n, C, H, W) or vectors (n, F), every size at least 1")
    if x.shape[0] != 2:
        raise ConfigError(f"{where}: decode(z) on 2 latents returned {x.shape[0]} rows; expected 2")
    is_image = len(shape) == 3
    if images is True and not (is_image and shape[0] in (1, 3)):
        raise ConfigError(f"{where}: decode(z) returned shape {tuple(x.shape)}; expected images "
                          "(n, C, H, W) with C = 1 or 3 (convert channels-last or other layouts in "
                          "your factory)")
    if images is False and len(shape) != 1:
        raise ConfigError(f"{where}: decode(z) returned shape {tuple(x.shape)}; expected (n, F)")
    if len(shape) not in (1, 3):
        raise ConfigError(f"{where}: decode(z) returned shape {tuple(x.shape)}; expected images "
                          "(n, C, H, W) or vectors (n, F)")
    xf = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(xf).all():
        raise ConfigError(f"{where}: decode(z) returned NaN or infinite values")
    if is_image and (float(xf.min()) < -1e-4 or float(xf.max()) > 1 + 1e-4):
        raise ConfigError(f"{where}: decode(z) returned values in [{float(xf.min()):.3g}, "
                          f"{float(xf.max()):.3g}]; images must be in [0, 1] (a generator with "
                          "outputs in [-1, 1] needs output_range = [-1, 1] in its adapter)")
    return shape


#: The generator methods whose calls :class:`GuardedGenerator` checks.
GUARDED_METHODS = ("sample", "decode", "encode")


def guarded_call(where: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, the user's code: any exception it raises becomes one
    :class:`UserCodeError` ``WHERE: NAME raised TYPE: message`` (the original kept as its cause,
    for ``cage-eval --debug``). cage-eval's own errors and Ctrl-C pass through."""
    try:
        return fn(*args, **kwargs)
    except CageEvalError:
        raise
    except Exception as exc:
        raise UserCodeError(f"{where}: {name} raised {type(exc).__name__}: {exc}") from exc


class GuardedGenerator:
    """The user's generator as CAGE calls it: every ``sample``, ``decode`` and ``encode`` call is
    guarded (:func:`guarded_call`) and its result checked, on every batch, for what a later step
    needs: a torch tensor, of ``(n, latent_dim)`` latents or of observations shaped like the
    first ones (``obs_shape``, once known). Everything else is the user's object itself
    (attributes, ``isinstance``).
    """

    def __init__(self, inner: Any, where: str) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_obs_shape", None)

    @property
    def inner(self) -> Any:
        """The user's own generator object."""
        return self._inner

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(guarded, TheirClass) holds, as for the object
        return type(self._inner)

    def set_obs_shape(self, shape: tuple[int, ...]) -> None:
        object.__setattr__(self, "_obs_shape", tuple(shape))

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_where", "_obs_shape"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        value = getattr(self._inner, name)
        if name in GUARDED_METHODS and callable(value):
            return _GuardedMethod(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def _check(self, name: str, args: tuple, out: Any) -> Any:
        where = self._where
        if not isinstance(out, torch.Tensor):
            raise UserCodeError(f"{where}: {name} returned {type(out).__name__}; expected a torch "
                                "tensor")
        rows = _rows(args[0]) if args else None
        if rows is not None and (out.ndim == 0 or out.shape[0] != rows):
            raise UserCodeError(f"{where}: {name} returned shape {tuple(out.shape)} for {rows} "
                                f"row(s); expected {rows} rows")
        if name in ("sample", "encode"):
            dim = getattr(self._inner, "latent_dim", None)
            if isinstance(dim, int) and (out.ndim != 2 or out.shape[1] != dim):
                raise UserCodeError(f"{where}: {name} returned shape {tuple(out.shape)}; expected "
                                    f"(n, {dim}) latents (latent_dim = {dim})")
        elif self._obs_shape is not None and tuple(out.shape[1:]) != self._obs_shape:
            raise UserCodeError(f"{where}: decode returned shape {tuple(out.shape)}; expected "
                                f"(n, {', '.join(map(str, self._obs_shape))}) as on its first "
                                "call")
        return out


def _rows(first: Any) -> int | None:
    if isinstance(first, torch.Tensor) and first.ndim >= 1:
        return int(first.shape[0])
    if isinstance(first, int) and not isinstance(first, bool):
        return first
    return None


class _GuardedMethod:
    """A bound ``sample``/``decode``/``encode`` of :class:`GuardedGenerator`."""

    def __init__(self, owner: GuardedGenerator, name: str, fn: Any) -> None:
        self.owner, self.name, self.fn = owner, name, fn
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = guarded_call(self.owner._where, self.name, self.fn, *args, **kwargs)
        return self.owner._check(self.name, args, out)
