"""One attribute pair in one outcome variant: every number directions.csv reports for it.

Two evaluations of the counterfactual outcomes (docs/method.md §2, step 5):

- :func:`latent_variant`, eq. 8: the outcome is the latent classifier, evaluated in closed form
  from the prior logits (:func:`cage.engine.effects.gate_from_logits`);
- :func:`observation_variant`, eq. 9: the counterfactual latents are decoded and the experiment's
  observation classifier ``psi`` reads them (:class:`ObservationScorer`).

For each the same record (:class:`Variant`): GATEs over the alpha grid and at the headline alpha,
the null GATEs of every null kind, the rotation null (the same pair geometry in randomly rotated
latent spaces, :func:`cage.engine.geometry.rotated_frames`), delta tau with the outcome thresholds
moved to each balance setting (:data:`cage.engine.geometry.BALANCE_SETTINGS`), delta tau with each
outcome recalibrated (:func:`calibration_delta_taus`, from the same per-latent outcomes), and what
the two latent classifiers' geometry alone predicts
(:func:`cage.engine.geometry.predicted_delta_tau`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cage.compute.distributed import Workers
from cage.engine.classifiers import LatentClassifier, logits_of, sigmoid
from cage.engine.effects import delta_tau, gate_from_logits
from cage.engine.geometry import (
    BALANCE_SETTINGS,
    balance_offsets,
    predicted_delta_tau,
    rotated_frames,
)
from cage.engine.rules import CALIBRATION_TEMPERATURES
from cage_eval import progress
from cage_eval.errors import ConfigError

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
    calibration : tuple
        ``((T1, T2), delta tau)`` for every recalibration of the two outcomes
        (:func:`calibration_delta_taus`; ``T1`` recalibrates m1's outcome, ``T2`` m2's).
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
    calibration: tuple[tuple[tuple[float, float], float], ...] = ()


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


def recalibrate(logit: np.ndarray, temperature: float, scale: str = "probability") -> np.ndarray:
    """``sigmoid(logit / T)``: a monotone recalibration that keeps every decision ``logit > 0``
    (so the classifier's accuracy); ``T = 0`` (or ``scale = "label"``) gives the hard labels."""
    if temperature == 0 or scale == "label":
        return (np.asarray(logit) > 0).astype(np.float64)
    return sigmoid(np.asarray(logit, dtype=np.float64) / temperature)


def calibration_delta_taus(plus12: np.ndarray, minus12: np.ndarray, plus21: np.ndarray,
                           minus21: np.ndarray, scale: str = "probability",
                           temperatures: tuple[float, ...] = CALIBRATION_TEMPERATURES
                           ) -> tuple[tuple[tuple[float, float], float], ...]:
    """Delta tau with each outcome recalibrated by its own temperature (the calibration control).

    Parameters
    ----------
    plus12, minus12 : np.ndarray, shape (k,)
        Logits of m2's outcome under ``do(m1 +)`` and ``do(m1 -)``, one per prior latent.
    plus21, minus21 : np.ndarray, shape (k,)
        Logits of m1's outcome under ``do(m2 +)`` and ``do(m2 -)``.
    scale : str
        The outcome scale; ``"label"`` outcomes are hard labels whatever the temperature.
    temperatures : tuple of float
        The grid for each outcome (``0``: hard labels; ``1`` is the outcome as given).

    Returns
    -------
    tuple of ``((T1, T2), delta tau)``, ``T1`` for m1's outcome and ``T2`` for m2's, over every
    pair of the grid except ``(1, 1)``.
    """
    g12 = {t: float(np.mean(recalibrate(plus12, t, scale) - recalibrate(minus12, t, scale)))
           for t in temperatures}
    g21 = {t: float(np.mean(recalibrate(plus21, t, scale) - recalibrate(minus21, t, scale)))
           for t in temperatures}
    return tuple(((t1, t2), abs(g12[t2]) - abs(g21[t1])) for t1 in temperatures
                 for t2 in temperatures if (t1, t2) != (1.0, 1.0))


def calibration_label(m1: str, m2: str, setting: tuple[float, float]) -> str:
    """``"thick T=1 / bright labels"``: a recalibration setting in words."""
    def one(t: float) -> str:
        return "labels" if t == 0 else f"T={t:g}"
    return f"{m1} {one(setting[0])} / {m2} {one(setting[1])}"


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
    calibration = calibration_delta_taus(logits[m2] + cc.alpha * s12, logits[m2] - cc.alpha * s12,
                                         logits[m1] + cc.alpha * s21, logits[m1] - cc.alpha * s21,
                                         scale)
    return Variant(
        sweep12=np.atleast_1d(gate_from_logits(logits[m2], s12, alphas, scale=scale)),
        sweep21=np.atleast_1d(gate_from_logits(logits[m1], s21, alphas, scale=scale)),
        g12=g12, g21=g21, obs12=g12, obs21=g21, nulls=nulls,
        rotation=(np.asarray(r12), np.asarray(r21)), balance=tuple(balance),
        geometric=geometric_prediction(c1, c2, g.u[m1], g.u[m2], cc.alpha, scale),
        geometric_sweep=geometric_sweep(c1, c2, g.u[m1], g.u[m2], alphas, scale),
        bands=bands, k_used=int(z_prior.shape[0]), calibration=calibration)


# --------------------------------------------------------------------------- eq. 9


@dataclass(frozen=True)
class Probe:
    """``psi(G(z_i + alpha u))`` for the first ``n`` prior latents (``u=None``: ``psi(G(z_i))``).

    Attributes
    ----------
    n : int
        Prior latents ``0 .. n - 1``.
    u : np.ndarray, shape (d,), or None
        Unit direction (float64).
    alpha : float
        Signed step along ``u``.
    attrs : tuple of str, or None
        The outcome attributes kept (None: every attribute ``psi`` gives).
    """

    n: int
    u: np.ndarray | None = None
    alpha: float = 0.0
    attrs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ScoreUnit:
    """A probe on the first ``rows`` latents of prior block ``block``: the unit of eq. 9 work that
    is dealt to a rank and checkpointed under ``key`` (empty: never checkpointed)."""

    key: str
    block: int
    rows: int
    u: np.ndarray | None
    alpha: float
    attrs: tuple[str, ...] | None

    @property
    def decodes(self) -> int:
        """Latents this unit decodes."""
        return self.rows


class ObservationScorer:
    """Decode (counterfactual) prior latents and read them with the observation classifier ``psi``.

    Work is planned as :class:`ScoreUnit` s, one probe on one prior block, decoded ``batch_size``
    rows at a time from the block's first row, so a latent's outcome is computed the same way
    whichever rank runs its unit, and no ``k x image`` tensor is ever held. Units are dealt in
    order, each to the rank with the fewest rows so far (ties: rank ``block mod W``, then the
    lowest), so the ranks' shares are even whatever the block sizes; a rank other than 0 draws
    only the prior blocks its units decode.

    Parameters
    ----------
    generator : LatentGenerator
    outcome : callable
        ``psi``: ``x (n, *obs_shape) -> {attribute: P(attribute = 1), shape (n,)}``.
    batch_size : int
    latents : callable
        ``block -> (rows, d)`` float32: the prior latents of a block (at least the rows asked for).
    block_size : int
        Latents per prior block.
    workers : cage.compute.distributed.Workers, optional
        The ranks that compute units (default: this process alone).
    """

    def __init__(self, generator: Any, outcome: Callable[[torch.Tensor], Mapping[str, Any]],
                 batch_size: int, latents: Callable[[int], torch.Tensor], block_size: int,
                 workers: Workers | None = None) -> None:
        self.generator = generator
        self.outcome = outcome
        self.batch_size = batch_size
        self.latents = latents
        self.block_size = block_size
        self.workers = workers if workers is not None else Workers()
        self.workers.register("score", self.unit)
        self.decoded = 0
        self._factual: dict[int, dict[str, np.ndarray]] = {}

    def unit(self, unit: ScoreUnit) -> dict[str, np.ndarray]:
        """Compute one unit here: ``{attribute: (rows,) float64}``."""
        z = self.latents(unit.block)[:unit.rows]
        shift = None if unit.u is None else torch.as_tensor(unit.alpha * np.asarray(unit.u),
                                                            dtype=z.dtype)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, z.shape[0], self.batch_size):
            zb = z[start:start + self.batch_size]
            if shift is not None:
                zb = zb + shift
            with torch.no_grad():
                x = self.generator.decode(zb)
                bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
                if bad:
                    raise ConfigError(
                        f"eq. 9: the generator's decode returned NaN or infinite values for {bad} "
                        f"of {zb.shape[0]} latents of prior block {unit.block}; every decoded "
                        "image counts in a GATE, so none can be set aside: fix the decode")
                probs = self.outcome(x.detach().to("cpu"))
            self.decoded += int(zb.shape[0])
            progress.advance(int(zb.shape[0]))
            for name, values in probs.items():
                if unit.attrs is None or name in unit.attrs:
                    parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64).ravel())
        return {name: np.concatenate(v) for name, v in parts.items()}

    def _key(self, probe: Probe, block: int, rows: int) -> str:
        run = self.workers.run_key
        if not run:
            return ""
        h = hashlib.sha256(f"{run}:score:{block}:{rows}:{self.batch_size}:"
                           f"{float(probe.alpha)!r}:{probe.attrs!r}:".encode())
        h.update(b"factual" if probe.u is None else np.asarray(probe.u, np.float64).tobytes())
        return h.hexdigest()[:32]

    def score(self, probes: list[Probe], *, factual: int | None = None
              ) -> list[dict[str, np.ndarray]]:
        """Every probe's ``{attribute: (n,) float64}``, computed in one pass over the ranks.

        With ``factual = n`` the factual outcomes of the first ``n`` latents are computed in the
        same pass (unless known) and kept for :meth:`factual`.
        """
        extra = [Probe(factual)] if factual is not None and factual not in self._factual else []
        units: list[ScoreUnit] = []
        owners: list[int] = []
        spans = []
        world = self.workers.world_size
        load = [0] * world  # rows dealt to each rank so far
        for p in [*probes, *extra]:
            first = len(units)
            for b in range(-(-p.n // self.block_size)):
                rows = min(self.block_size, p.n - b * self.block_size)
                units.append(ScoreUnit(self._key(p, b, rows), b, rows, p.u, p.alpha, p.attrs))
                owner = min(range(world), key=lambda r, b=b: (load[r], r != b % world, r))
                owners.append(owner)
                load[owner] += rows
            spans.append((first, len(units)))
        results = self.workers.map("score", units, owners)
        out = [{name: np.concatenate([r[name] for r in results[a:b]]) for name in results[a]}
               if b > a else {} for a, b in spans]
        if extra:
            self._factual[factual] = out.pop()  # type: ignore[index]
        return out

    def factual(self, n: int) -> dict[str, np.ndarray]:
        """``psi(G(z))`` of the first ``n`` prior latents, computed once per run."""
        if n not in self._factual:
            self.score([], factual=n)
        return self._factual[n]


def _gate(plus: np.ndarray, minus: np.ndarray, scale: str) -> float:
    """Eq. 9's GATE from the per-latent outcome probabilities of ``do(+)`` and ``do(-)``."""
    if scale == "label":
        return float(np.mean((plus > 0.5).astype(np.float64) - (minus > 0.5).astype(np.float64)))
    return float(np.mean(plus - minus))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def observation_variant(g: PairGeometry, classifiers: Mapping[str, LatentClassifier],
                        z_prior: torch.Tensor, scorer: ObservationScorer, cc: Any) -> Variant:
    """Eq. 9: decode the counterfactual latents and apply the observation classifier.

    Every GATE of the variant (sweep, headline, nulls, rotation null) and the factual outcomes
    are scored in one pass (:meth:`ObservationScorer.score`), so all ranks work at once.
    """
    m1, m2 = g.m1, g.m2
    scale = cc.outcome_scale
    alphas = np.asarray(cc.alphas)
    grid = list(alphas) + ([] if cc.alpha in alphas else [cc.alpha])
    k = int(z_prior.shape[0])
    if getattr(cc, "k_observation", 0):
        k = min(k, cc.k_observation)
    # Nulls on the first k_null_observation latents; the observed statistic for the p-values is
    # recomputed on the same latents so that both sides are comparable.
    n_sub = min(k, cc.k_null_observation)
    n_obs = getattr(cc, "n_null_observation", 0) or len(g.frames)
    if n_obs < len(g.frames):  # fewer eq. 9 null draws than eq. 8's: the first ones
        g = PairGeometry(m1=g.m1, m2=g.m2, u=g.u, frames=g.frames[:n_obs],
                         nulls={key: d[:n_obs] for key, d in g.nulls.items()})
    # (latents, treatment direction, outcome attribute, alpha) of every GATE, in this order:
    gates = [(k, g.u[m1], m2, al) for al in grid] + [(k, g.u[m2], m1, al) for al in grid]
    gates += [(n_sub, g.u[m1], m2, cc.alpha), (n_sub, g.u[m2], m1, cc.alpha)]
    for kind in cc.nulls:
        gates += [(n_sub, d, m2, cc.alpha) for d in g.nulls[(m1, kind)]]
        gates += [(n_sub, d, m1, cc.alpha) for d in g.nulls[(m2, kind)]]
    # Rotation null: the pair's intervention directions rotated jointly; psi and G unchanged.
    gates += [(n_sub, f[2], m2, cc.alpha) for f in g.frames]
    gates += [(n_sub, f[3], m1, cc.alpha) for f in g.frames]
    probes = [Probe(n, u, sign * al, (attr,)) for n, u, attr, al in gates for sign in (1, -1)]
    res = scorer.score(probes, factual=k)
    done = iter([(_gate(res[2 * i][a], res[2 * i + 1][a], scale), res[2 * i][a], res[2 * i + 1][a])
                 for i, (_, _, a, _) in enumerate(gates)])

    def take(count: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
        return [next(done) for _ in range(count)]

    at12 = dict(zip(grid, take(len(grid)), strict=True))
    at21 = dict(zip(grid, take(len(grid)), strict=True))
    sweep12 = np.array([at12[al][0] for al in alphas])
    sweep21 = np.array([at21[al][0] for al in alphas])
    g12, p12, n12m = at12[cc.alpha]
    g21, p21, n21m = at21[cc.alpha]
    obs12, obs21 = take(1)[0][0], take(1)[0][0]
    nulls = {}
    for kind in cc.nulls:
        n12 = np.array([v[0] for v in take(len(g.nulls[(m1, kind)]))])
        nulls[kind] = (n12, np.array([v[0] for v in take(len(g.nulls[(m2, kind)]))]))
    r12 = np.array([v[0] for v in take(len(g.frames))])
    r21 = np.array([v[0] for v in take(len(g.frames))])
    # Balance control: move psi's thresholds so that a share q of the prior samples reads 1.
    fact = scorer.factual(k)
    balance = []
    for q1, q2 in BALANCE_SETTINGS:
        d1, d2 = balance_offsets(_logit(fact[m1]), q1), balance_offsets(_logit(fact[m2]), q2)
        b12 = _shift_gate(_logit(p12), _logit(n12m), d2, scale)
        b21 = _shift_gate(_logit(p21), _logit(n21m), d1, scale)
        balance.append(abs(b12) - abs(b21))
    # Calibration control: the same per-latent outcomes, each attribute's psi recalibrated.
    calibration = calibration_delta_taus(_logit(p12), _logit(n12m), _logit(p21), _logit(n21m),
                                         scale)
    c1, c2 = classifiers[m1], classifiers[m2]
    return Variant(sweep12=sweep12, sweep21=sweep21, g12=g12, g21=g21, obs12=obs12, obs21=obs21,
                   nulls=nulls, rotation=(r12, r21), balance=tuple(balance),
                   geometric=geometric_prediction(c1, c2, g.u[m1], g.u[m2], cc.alpha, scale),
                   geometric_sweep=geometric_sweep(c1, c2, g.u[m1], g.u[m2], alphas, scale),
                   k_used=n_sub, calibration=calibration)
