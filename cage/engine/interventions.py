"""Interventions on latents: ``pi(z, alpha)`` realising ``do(m = 1)`` / ``do(m = 0)``.

docs/method.md §2, step 4 (paper eq. 2-4). An intervention is any object with

``apply(z, classifier, alpha, sign) -> z'``
    counterfactual latents, same shape and type (numpy or torch) as ``z`` (n, d); ``sign = +1``
    realises ``do(m = 1)``, ``sign = -1`` realises ``do(m = 0)``;

``direction(classifier) -> np.ndarray | None``
    the unit direction ``u`` when the intervention is the constant shift ``z + sign * alpha * u``
    (then :mod:`cage.engine.effects` evaluates it in closed form from the logits), else None.

Provided:

- :class:`LinearIntervention`: ``z +- alpha h`` with ``h`` the classifier's unit normal (eq. 4);
- :class:`ConditionalIntervention`: the same along ``h`` with other attributes' normals projected
  out and renormalised (InterFaceGAN's conditional manipulation, docs/method.md §2), so the
  edit leaves those attributes' logits unchanged;
- :class:`TargetDistanceIntervention`: moves every latent to signed distance ``sign * alpha`` from
  the classifier's hyperplane (InterFaceGAN's ``linear_interpolate`` with the intercept kept).
  Not a constant shift, so CAGE materialises its counterfactuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from cage_eval.errors import ConfigError


@runtime_checkable
class HasNormal(Protocol):
    """A fitted linear classifier as interventions see it (e.g. :class:`cage.engine.classifiers.LatentClassifier`)."""

    coef_: np.ndarray
    intercept_: float
    normal_: np.ndarray


@runtime_checkable
class Intervention(Protocol):
    """A strategy ``pi(z, alpha)``; see the module docstring."""

    name: str

    def direction(self, classifier: HasNormal) -> np.ndarray | None: ...

    def apply(self, z: Any, classifier: HasNormal, alpha: float, sign: int) -> Any: ...


def _check(alpha: float, sign: int) -> None:
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")


def _shift(z: Any, u: np.ndarray, amount: Any) -> Any:
    """``z + amount * u`` for numpy or torch ``z``; ``amount`` scalar or (n,)."""
    if isinstance(z, torch.Tensor):
        ut = torch.as_tensor(u, dtype=z.dtype, device=z.device)
        amt = torch.as_tensor(amount, dtype=z.dtype, device=z.device)
        return z + (amt[:, None] if amt.ndim == 1 else amt) * ut
    z = np.asarray(z)
    amt = np.asarray(amount, dtype=np.float64)
    out = z + (amt[:, None] if amt.ndim == 1 else amt) * u
    return out.astype(z.dtype, copy=False)


def project_out(normal: np.ndarray, conditions: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """``normal`` with the span of ``conditions`` removed, renormalised to unit length.

    Least-squares projection (InterFaceGAN ``project_boundary`` for any number of conditions).

    Parameters
    ----------
    normal : array, shape (d,)
    conditions : array, shape (m, d), or a sequence of (d,) arrays (any length; unit not required)

    Raises
    ------
    ConfigError
        When ``normal`` lies (numerically) in the span of the conditions.
    """
    h = np.asarray(normal, dtype=np.float64)
    c = np.asarray(conditions, dtype=np.float64).reshape(-1, h.shape[0])
    if c.shape[0] == 0:
        return h / np.linalg.norm(h)
    coeffs, *_ = np.linalg.lstsq(c.T, h, rcond=None)
    rest = h - c.T @ coeffs
    norm = float(np.linalg.norm(rest))
    if norm < 1e-6 * float(np.linalg.norm(h)):
        raise ConfigError("conditional intervention: the attribute's normal lies in the span of the "
                          "normals it is conditioned on; use intervention = \"linear\"")
    return rest / norm


class LinearIntervention:
    """``z(do(m=1)) = z + alpha h``, ``z(do(m=0)) = z - alpha h`` (paper eq. 4)."""

    name = "linear"

    def direction(self, classifier: HasNormal) -> np.ndarray:
        return np.asarray(classifier.normal_, dtype=np.float64)

    def apply(self, z: Any, classifier: HasNormal, alpha: float, sign: int) -> Any:
        _check(alpha, sign)
        return _shift(z, self.direction(classifier), sign * alpha)


class ConditionalIntervention:
    """Shift along the normal with ``conditions`` (other attributes' normals) projected out.

    Parameters
    ----------
    conditions : array, shape (m, d)
        Normals to keep fixed; ``m = 0`` makes this the linear intervention.
    """

    name = "conditional"

    def __init__(self, conditions: Sequence[np.ndarray] | np.ndarray = ()) -> None:
        self.conditions = conditions

    def direction(self, classifier: HasNormal) -> np.ndarray:
        return project_out(classifier.normal_, self.conditions)

    def apply(self, z: Any, classifier: HasNormal, alpha: float, sign: int) -> Any:
        _check(alpha, sign)
        return _shift(z, self.direction(classifier), sign * alpha)


class TargetDistanceIntervention:
    """Move each latent along the normal to signed distance ``sign * alpha`` from the hyperplane.

    The signed distance of ``z`` is ``(w . z + b) / |w|``; afterwards every latent sits at
    ``+alpha`` (``do(m=1)``) or ``-alpha`` (``do(m=0)``), whatever its start.
    """

    name = "target_distance"

    def direction(self, classifier: HasNormal) -> None:
        return None

    def apply(self, z: Any, classifier: HasNormal, alpha: float, sign: int) -> Any:
        _check(alpha, sign)
        w = np.asarray(classifier.coef_, dtype=np.float64)
        norm = float(np.linalg.norm(w))
        h = w / norm
        if isinstance(z, torch.Tensor):
            dist = (z.to(torch.float64) @ torch.as_tensor(h)) + classifier.intercept_ / norm
        else:
            dist = np.asarray(z, dtype=np.float64) @ h + classifier.intercept_ / norm
        return _shift(z, h, sign * alpha - dist)


INTERVENTIONS = ("linear", "conditional", "target_distance")


def make_intervention(kind: str, *, conditions: Sequence[np.ndarray] | np.ndarray = ()) -> Intervention:
    """The intervention named ``kind`` (``linear``, ``conditional`` or ``target_distance``)."""
    if kind == "linear":
        return LinearIntervention()
    if kind == "conditional":
        return ConditionalIntervention(conditions)
    if kind == "target_distance":
        return TargetDistanceIntervention()
    raise ConfigError(f"intervention {kind!r}: choose one of {', '.join(INTERVENTIONS)}")
