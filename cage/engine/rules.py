"""Call rules: from GATEs, delta tau and their controls to ``->``, ``<-``, ``⊥`` or ``?``.

Two rules, both reported for every pair (directions.csv ``direction_paper`` and
``direction_controlled``); ``[cage] rule`` picks the one that fills ``direction``:

``paper``
    The paper's reading (:func:`cage.engine.effects.decide`): an arrow when a GATE and delta tau
    are significant against the label-permutation null, its sign picking the direction.
``controlled`` (the default)
    An arrow only when the direction survives every control that can explain it without a
    mechanism (docs/method.md §4); otherwise ``?`` with the reasons:

    - ``no-effect``: neither GATE is significant (the call is ``⊥``);
    - ``geometry-only``: eq. 8 (a latent outcome). Its GATEs depend only on the marginal law of
      each outcome logit and on ``alpha (w_e . u_c)``, so delta tau is fixed by the two
      hyperplanes' offsets and norms (:mod:`cage.engine.geometry`) and cannot tell a cause from an
      effect;
    - ``rotation-null``: eq. 9 (an observation outcome). Delta tau is not outside the rotation
      null (the same pair geometry in a randomly rotated latent space). Runs written before this
      reason had its own name call it ``geometry-only`` on eq. 9 rows
      (:func:`cage.explain.reason_name` reads them);
    - ``not-significant``: delta tau is not outside its decision null *around the null's own
      centre* (:func:`centred_p_value`; the null of delta tau is not centred at 0);
    - ``balance-driven``: the sign of delta tau changes when the outcome classifiers' thresholds
      are moved so that both are balanced (50 % of the prior samples labelled 1), or one
      of them is rare (25 %) and the other balanced;
    - ``calibration-driven``: the sign of delta tau changes when either outcome's probabilities
      are passed through a monotone recalibration that keeps its decisions (and so its accuracy):
      a temperature ``sigma(logit(p) / T)`` for ``T`` in :data:`CALIBRATION_TEMPERATURES`, or hard
      labels ``1[p > 0.5]``, for each outcome independently
      (:func:`cage.engine.variants.calibration_delta_taus`, from the stored per-latent outcomes). Delta
      tau compares the sizes of two GATEs read by two different outcome functions, so it depends
      on their relative calibration, which no accuracy figure shows;
    - ``alpha-unstable``: the sign of delta tau changes over the alpha grid;
    - ``falsified``: the experiment declares (``[cage] falsified``) that CAGE's arrows failed a
      falsification on this generator: with the data's mechanism reversed or removed, the same
      arrow passed every control (``benchmarks/bench_falsification.py``). Its arrows are then
      reported as ``?``; the evidence stays in ``directions.csv``.

The controlled rule requires every check to pass (an intersection-union test), so its false-arrow
rate is at most the level of any one of its tests; its power is measured in
``benchmarks/bench_calibration.py`` (docs/calibration.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cage.config.experiment import RULES
from cage.engine.effects import ARROW_12, ARROW_21, INDEPENDENT, UNDETERMINED, decide

__all__ = ["CALIBRATION_TEMPERATURES", "RULES", "REASONS", "Evidence", "centred_p_value",
           "decide_all", "decide_controlled", "decide_paper", "reason_text"]

#: Every reason :func:`decide_controlled` can give, in the order they are checked.
REASONS = ("no-effect", "geometry-only", "rotation-null", "not-significant", "balance-driven",
           "calibration-driven", "alpha-unstable", "falsified")
#: Temperatures of the calibration control (each outcome on its own; ``0`` stands for hard labels
#: ``1[p > 0.5]``, the limit ``T -> 0``). The range covers over- and under-confidence by up to a
#: factor of 4 on the logit scale; fitted temperatures of trained classifiers are typically 1-3
#: (Guo et al., "On calibration of modern neural networks", ICML 2017). The range must be bounded:
#: as one outcome's ``T`` grows its GATE shrinks to 0, so every delta tau changes sign for some
#: large enough ``T``.
CALIBRATION_TEMPERATURES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def centred_p_value(null: np.ndarray, observed: float) -> float:
    """Two-sided empirical p-value of ``observed`` around the null's own median.

    ``(1 + #{|null_b - m| >= |observed - m|}) / (1 + B)`` with ``m = median(null)``; ties within a
    relative 1e-12 count as exceedances (conservative). NaN draws are dropped; with no draw left
    the p-value is 1.
    """
    draws = np.asarray(null, dtype=np.float64).ravel()
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return 1.0
    centre = float(np.median(draws))
    dist = np.abs(draws - centre)
    obs = abs(float(observed) - centre)
    hits = int(np.count_nonzero(dist >= obs * (1 - 1e-12)))
    return (1 + hits) / (1 + draws.size)


@dataclass(frozen=True)
class Evidence:
    """What the rules read for one pair and outcome variant.

    Attributes
    ----------
    delta_tau : float
        Observed delta tau at the headline alpha.
    p_gate_12, p_gate_21, p_delta_tau : float
        p-values against the decision null (``p_delta_tau`` compares ``|delta tau|``, the paper's
        reading).
    p_delta_tau_centred : float
        Delta tau against the decision null around its own centre.
    p_geometry : float
        Delta tau against the rotation null (eq. 9); NaN when not computed.
    balance_delta_tau : tuple of float
        Delta tau with the outcome thresholds moved to each balance setting.
    sign_stable : bool
        Delta tau keeps its sign over the alpha grid.
    latent_outcome : bool
        The outcome is the latent classifier (eq. 8).
    calibration_delta_tau : tuple of float
        Delta tau with the outcomes recalibrated (:data:`CALIBRATION_TEMPERATURES`); empty when
        not computed (the check then passes).
    falsified : bool
        The experiment declares its arrows falsified (``[cage] falsified``).
    """

    delta_tau: float
    p_gate_12: float
    p_gate_21: float
    p_delta_tau: float
    p_delta_tau_centred: float
    p_geometry: float
    balance_delta_tau: tuple[float, ...]
    sign_stable: bool
    latent_outcome: bool
    calibration_delta_tau: tuple[float, ...] = ()
    falsified: bool = False


def _arrow(delta: float) -> str:
    return ARROW_12 if delta > 0 else ARROW_21


def decide_controlled(ev: Evidence, level: float) -> tuple[str, tuple[str, ...]]:
    """The controlled call and every reason it is not an arrow (empty for an arrow)."""
    if ev.p_gate_12 > level and ev.p_gate_21 > level:
        return INDEPENDENT, ("no-effect",)
    reasons: list[str] = []
    if ev.latent_outcome:
        reasons.append("geometry-only")
    elif not (ev.p_geometry <= level):
        reasons.append("rotation-null")
    if ev.delta_tau == 0 or ev.p_delta_tau_centred > level:
        reasons.append("not-significant")
    if any(np.sign(b) != np.sign(ev.delta_tau) for b in ev.balance_delta_tau):
        reasons.append("balance-driven")
    if any(np.sign(c) != np.sign(ev.delta_tau) for c in ev.calibration_delta_tau):
        reasons.append("calibration-driven")
    if not ev.sign_stable:
        reasons.append("alpha-unstable")
    if ev.falsified:
        reasons.append("falsified")
    if reasons:
        return UNDETERMINED, tuple(reasons)
    return _arrow(ev.delta_tau), ()


def decide_paper(ev: Evidence, level: float) -> tuple[str, tuple[str, ...]]:
    """The paper's call (:func:`cage.engine.effects.decide`) with its reason."""
    call = decide(ev.delta_tau, ev.p_gate_12, ev.p_gate_21, ev.p_delta_tau, level)
    if call == INDEPENDENT:
        return call, ("no-effect",)
    if call == UNDETERMINED:
        return call, ("not-significant",)
    return call, ()


def decide_all(ev: Evidence, level: float) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{rule: (call, reasons)}`` for every rule in :data:`RULES`."""
    return {"controlled": decide_controlled(ev, level), "paper": decide_paper(ev, level)}


def reason_text(reasons: Sequence[str]) -> str:
    """The ``reason`` column: reasons joined by ``+`` (empty for an arrow)."""
    return "+".join(reasons)
