"""One attribute pair in one outcome variant: every number directions.csv reports for it.

Two evaluations of the counterfactual outcomes (cage_method.md section 2, step 5):

- :func:`latent_variant`, eq. 8: the outcome is the latent classifier, evaluated in closed form
  from the prior logits (:func:`cage.engine.effects.gate_from_logits`);
- :func:`observation_variant`, eq. 9: the counterfactual latents are decoded and the experiment's
  observation classifier ``psi`` reads them (:class:`ObservationScorer`).

For each the same record (:class:`Variant`): GATEs over the alpha grid and at the headline alpha,
the null GATEs of every null kind, the rotation null (the same pair geometry in randomly rotated
latent spaces, :func:`cage.engine.geometry.rotated_frames`), delta tau with the outcome thresholds
moved to each balance setting (:data:`cage.engine.geometry.BALANCE_SETTINGS`), and what the two
latent classifiers' geometry alone predicts (:func:`cage.engine.geometry.predicted_delta_tau`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cage.engine.classifiers import LatentClassifier, logits_of, sigmoid
from cage.engine.effects import delta_tau, gate_from_logits
from cage.engine.geometry import (
    BALANCE_SETTINGS,
    balance_offsets,
    predicted_delta_tau,
    rotated_frames,
)
from cage_eval import progress

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logits (balance control only).
EPS = 1e-12


@dataclass
class Variant:
    """One outcome variant of one pair (see the module docstring).

    Attributes
    ----------
    sweep12, sweep21 : np.ndarray, shape (A,)
        GATE(m1 -> m2) and GATE(m2 -> m1) over the alpha grid.
    g12, g21 : float
        The GATEs at the headline alpha (all ``k`` prior latents).
    obs12, obs21 : float
        The statistics the nulls are compared with (the GATEs on the latents the nulls use).
    nulls : dict
        ``{kind: (null GATE(1->2) (B,), null GATE(2->1) (B,))}``.
    rotation : tuple of np.ndarray
        The rotation null's GATEs ``(B,)`` each.
    balance : tuple of float
        Delta tau at each of :data:`BALANCE_SETTINGS`.
    geometric : tuple of float
        ``(GATE 1->2, GATE 2->1, delta tau)`` predicted by :func:`predicted_delta_tau`.
    geometric_sweep : np.ndarray, shape (A,)
        The predicted delta tau over the alpha grid.
    bands : dict
        ``{"lo": (A,), "hi": (A,)}`` central 95 % band of the decision null's delta tau over alpha
        (latent variant; empty for eq. 9).
    k_used : int
        Latents behind the nulls.
    """

    sweep12: np.ndarray
    sweep21: np.ndarray
    g12: float
    g21: float
    obs12: float
    obs21: float
    nulls: dict[str, tuple[np.ndarray, np.ndarray]]
    rotation: tuple[np.ndarray, np.ndarray]
    balance: tuple[float, ...]
    geometric: tuple[float, float, float]
    geometric_sweep: np.ndarray
    bands: dict[str, np.ndarray] = field(default_factory=dict)
    k_used: int = 0


@dataclass(frozen=True)
class PairGeometry:
    """The directions of one pair: interventions, null directions and rotated frames.

    Attributes
    ----------
    m1, m2 : str
    u : dict
        ``{attr: (d,)}`` unit intervention direction of each attribute.
    nulls : dict
        ``{(attr, kind): (B, d)}`` null treatment directions.
    frames : np.ndarray, shape (B, 4, d)
        Joint random rotations of ``(w1, w2, u1, u2)``.
    """

    m1: str
    m2: str
    u: dict[str, np.ndarray]
    nulls: dict[tuple[str, str], np.ndarray]
    frames: np.ndarray


def rotation_frames(c1: LatentClassifier, c2: LatentClassifier, u1: np.ndarray, u2: np.ndarray,
                    n: int, seed: int) -> np.ndarray:
    """``(n, 4, d)``: ``(w1, w2, u1, u2)`` under ``n`` joint Haar rotations of the latent space."""
    return rotated_frames(np.stack([c1.coef_, c2.coef_, u1, u2]), n, seed)


def geometric_prediction(c1: LatentClassifier, c2: LatentClassifier, u1: np.ndarray,
                         u2: np.ndarray, alpha: float, scale: str) -> tuple[float, float, float]:
    """Eq. 8 under ``N(0, I)`` from the two hyperplanes alone (no latent sampled)."""
    return predicted_delta_tau((c1.intercept_, c2.intercept_), (c1.weight_norm_, c2.weight_norm_),
                               (alpha * float(c2.coef_ @ u1), alpha * float(c1.coef_ @ u2)),
                               scale=scale)


def geometric_sweep(c1: LatentClassifier, c2: LatentClassifier, u1: np.ndarray, u2: np.ndarray,
                    alphas: np.ndarray, scale: str) -> np.ndarray:
    """:func:`geometric_prediction`'s delta tau at every alpha of the grid, shape (A,)."""
    return np.array([geometric_prediction(c1, c2, u1, u2, float(al), scale)[2] for al in alphas])


def _shift_gate(plus: np.ndarray, minus: np.ndarray, offset: float, scale: str) -> float:
    """``mean f(logit plus + offset) - f(logit minus + offset)`` from outcome logits."""
    if scale == "label":
        return float(np.mean((plus + offset > 0).astype(np.float64)
                             - (minus + offset > 0).astype(np.float64)))
    return float(np.mean(sigmoid(plus + offset) - sigmoid(minus + offset)))


# --------------------------------------------------------------------------- eq. 8


def latent_variant(g: PairGeometry, classifiers: Mapping[str, LatentClassifier],
                   logits: Mapping[str, np.ndarray], z_prior: torch.Tensor, cc: Any,
                   decision_null: str) -> Variant:
    """Eq. 8 in closed form: every alpha, null direction, rotation and balance setting."""
    m1, m2 = g.m1, g.m2
    c1, c2 = classifiers[m1], classifiers[m2]
    alphas = np.asarray(cc.alphas)
    scale = cc.outcome_scale
    s12, s21 = float(c2.coef_ @ g.u[m1]), float(c1.coef_ @ g.u[m2])
    g12 = float(gate_from_logits(logits[m2], s12, cc.alpha, scale=scale))
    g21 = float(gate_from_logits(logits[m1], s21, cc.alpha, scale=scale))
    nulls: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bands: dict[str, np.ndarray] = {}
    for kind in cc.nulls:
        n12 = g.nulls[(m1, kind)] @ c2.coef_
        n21 = g.nulls[(m2, kind)] @ c1.coef_
        nulls[kind] = (np.atleast_1d(gate_from_logits(logits[m2], n12, cc.alpha, scale=scale)),
                       np.atleast_1d(gate_from_logits(logits[m1], n21, cc.alpha, scale=scale)))
        if kind == decision_null:
            a12 = np.atleast_2d(gate_from_logits(logits[m2], n12, alphas, scale=scale))
            a21 = np.atleast_2d(gate_from_logits(logits[m1], n21, alphas, scale=scale))
            dt = delta_tau(a12, a21)
            bands = {"lo": np.quantile(dt, 0.025, axis=1), "hi": np.quantile(dt, 0.975, axis=1)}
    # Rotation null: rotate both classifiers and both directions; the outcome logits are those of
    # the rotated classifiers on the same prior latents.
    r12, r21 = [], []
    for w1r, w2r, u1r, u2r in g.frames:
        l1 = logits_of(z_prior, w1r, c1.intercept_)
        l2 = logits_of(z_prior, w2r, c2.intercept_)
        r12.append(float(gate_from_logits(l2, float(w2r @ u1r), cc.alpha, scale=scale)))
        r21.append(float(gate_from_logits(l1, float(w1r @ u2r), cc.alpha, scale=scale)))
    balance = []
    for q1, q2 in BALANCE_SETTINGS:
        d1, d2 = balance_offsets(logits[m1], q1), balance_offsets(logits[m2], q2)
        b12 = float(gate_from_logits(logits[m2] + d2, s12, cc.alpha, scale=scale))
        b21 = float(gate_from_logits(logits[m1] + d1, s21, cc.alpha, scale=scale))
        balance.append(abs(b12) - abs(b21))
    return Variant(
        sweep12=np.atleast_1d(gate_from_logits(logits[m2], s12, alphas, scale=scale)),
        sweep21=np.atleast_1d(gate_from_logits(logits[m1], s21, alphas, scale=scale)),
        g12=g12, g21=g21, obs12=g12, obs21=g21, nulls=nulls,
        rotation=(np.asarray(r12), np.asarray(r21)), balance=tuple(balance),
        geometric=geometric_prediction(c1, c2, g.u[m1], g.u[m2], cc.alpha, scale),
        geometric_sweep=geometric_sweep(c1, c2, g.u[m1], g.u[m2], alphas, scale),
        bands=bands, k_used=int(z_prior.shape[0]))


# --------------------------------------------------------------------------- eq. 9


class ObservationScorer:
    """Decode (counterfactual) latents and read them with the observation classifier ``psi``.

    Latents are decoded ``batch_size`` rows at a time, so no ``k x image`` tensor is ever held.

    Parameters
    ----------
    generator : LatentGenerator
    outcome : callable
        ``psi``: ``x (n, *obs_shape) -> {attribute: P(attribute = 1), shape (n,)}``.
    batch_size : int
    """

    def __init__(self, generator: Any, outcome: Callable[[torch.Tensor], Mapping[str, Any]],
                 batch_size: int) -> None:
        self.generator = generator
        self.outcome = outcome
        self.batch_size = batch_size
        self.decoded = 0
        self._factual: dict[str, np.ndarray] | None = None

    def probabilities(self, z: torch.Tensor, u: np.ndarray | None = None, alpha: float = 0.0,
                      attrs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """``psi(G(z + alpha u))`` per attribute, shape ``(n,)`` float64 (``u=None``: factual)."""
        shift = None if u is None else torch.as_tensor(alpha * np.asarray(u), dtype=z.dtype)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, z.shape[0], self.batch_size):
            zb = z[start:start + self.batch_size]
            if shift is not None:
                zb = zb + shift
            with torch.no_grad():
                x = self.generator.decode(zb)
                probs = self.outcome(x.detach().to("cpu"))
            self.decoded += int(zb.shape[0])
            for name, values in probs.items():
                if attrs is None or name in attrs:
                    parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64).ravel())
        return {name: np.concatenate(v) for name, v in parts.items()}

    def factual(self, z: torch.Tensor) -> dict[str, np.ndarray]:
        """``psi(G(z))`` of the prior latents, computed once per run."""
        if self._factual is None:
            self._factual = self.probabilities(z)
        return self._factual

    def gate_pair(self, z: torch.Tensor, u: np.ndarray, alpha: float, attr: str,
                  scale: str) -> tuple[float, np.ndarray, np.ndarray]:
        """GATE of intervening along ``u`` on ``attr``, with the per-latent outcome probabilities
        of ``do(+)`` and ``do(-)`` (for the balance control)."""
        plus = self.probabilities(z, u, alpha, (attr,))[attr]
        minus = self.probabilities(z, u, -alpha, (attr,))[attr]
        if scale == "label":
            gate = float(np.mean((plus > 0.5).astype(np.float64) - (minus > 0.5).astype(np.float64)))
        else:
            gate = float(np.mean(plus - minus))
        return gate, plus, minus


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def observation_variant(g: PairGeometry, classifiers: Mapping[str, LatentClassifier],
                        z_prior: torch.Tensor, scorer: ObservationScorer, cc: Any) -> Variant:
    """Eq. 9: decode the counterfactual latents and apply the observation classifier."""
    alphas = np.asarray(cc.alphas)
    grid = list(alphas) + ([] if cc.alpha in alphas else [cc.alpha])
    calls = 2 * len(grid) + 2 + 2 * cc.n_null * len(cc.nulls) + 2 * len(g.frames)
    with progress.bar(calls, "eq. 9 GATEs (sweep, nulls, rotations)", "GATE") as bar:
        return _observation_variant(g, classifiers, z_prior, _Counting(scorer, bar), cc, grid)


class _Counting:
    """A scorer whose ``gate_pair`` also moves a progress bar."""

    def __init__(self, scorer: ObservationScorer, bar: Any) -> None:
        self.scorer, self.bar = scorer, bar

    def factual(self, z: torch.Tensor) -> dict[str, np.ndarray]:
        return self.scorer.factual(z)

    def gate_pair(self, *args: Any) -> tuple[float, np.ndarray, np.ndarray]:
        out = self.scorer.gate_pair(*args)
        self.bar.update(1)
        return out


def _observation_variant(g: PairGeometry, classifiers: Mapping[str, LatentClassifier],
                         z_prior: torch.Tensor, scorer: Any, cc: Any, grid: list) -> Variant:
    m1, m2 = g.m1, g.m2
    scale = cc.outcome_scale
    alphas = np.asarray(cc.alphas)
    at12 = {al: scorer.gate_pair(z_prior, g.u[m1], al, m2, scale) for al in grid}
    at21 = {al: scorer.gate_pair(z_prior, g.u[m2], al, m1, scale) for al in grid}
    sweep12 = np.array([at12[al][0] for al in alphas])
    sweep21 = np.array([at21[al][0] for al in alphas])
    g12, p12, n12m = at12[cc.alpha]
    g21, p21, n21m = at21[cc.alpha]
    # Nulls on the first k_null_observation latents; the observed statistic for the p-values is
    # recomputed on the same latents so that both sides are comparable.
    n_sub = min(int(z_prior.shape[0]), cc.k_null_observation)
    z_sub = z_prior[:n_sub]
    obs12 = scorer.gate_pair(z_sub, g.u[m1], cc.alpha, m2, scale)[0]
    obs21 = scorer.gate_pair(z_sub, g.u[m2], cc.alpha, m1, scale)[0]
    nulls = {}
    for kind in cc.nulls:
        nulls[kind] = (
            np.array([scorer.gate_pair(z_sub, d, cc.alpha, m2, scale)[0]
                      for d in g.nulls[(m1, kind)]]),
            np.array([scorer.gate_pair(z_sub, d, cc.alpha, m1, scale)[0]
                      for d in g.nulls[(m2, kind)]]))
    # Rotation null: the pair's intervention directions rotated jointly; psi and G unchanged.
    r12 = np.array([scorer.gate_pair(z_sub, f[2], cc.alpha, m2, scale)[0] for f in g.frames])
    r21 = np.array([scorer.gate_pair(z_sub, f[3], cc.alpha, m1, scale)[0] for f in g.frames])
    # Balance control: move psi's thresholds so that a share q of the prior samples reads 1.
    fact = scorer.factual(z_prior)
    balance = []
    for q1, q2 in BALANCE_SETTINGS:
        d1, d2 = balance_offsets(_logit(fact[m1]), q1), balance_offsets(_logit(fact[m2]), q2)
        b12 = _shift_gate(_logit(p12), _logit(n12m), d2, scale)
        b21 = _shift_gate(_logit(p21), _logit(n21m), d1, scale)
        balance.append(abs(b12) - abs(b21))
    c1, c2 = classifiers[m1], classifiers[m2]
    return Variant(sweep12=sweep12, sweep21=sweep21, g12=g12, g21=g21, obs12=obs12, obs21=obs21,
                   nulls=nulls, rotation=(r12, r21), balance=tuple(balance),
                   geometric=geometric_prediction(c1, c2, g.u[m1], g.u[m2], cc.alpha, scale),
                   geometric_sweep=geometric_sweep(c1, c2, g.u[m1], g.u[m2], alphas, scale),
                   k_used=n_sub)
