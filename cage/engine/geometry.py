"""What the geometry of two linear classifiers alone predicts, and the controls built on it.

docs/method.md §4. With linear latent classifiers
``L_a(z) = w_a . z + b_a`` and a shift intervention ``z +- alpha u_c``, eq. 8's effect on ``e`` is

    GATE(c -> e) = E_z[ f(L_e(z) + t) - f(L_e(z) - t) ],   t = alpha (w_e . u_c),

``f`` the sigmoid (probability scale) or the step (label scale). It depends on the generator only
through the marginal law of the effect's logit ``L_e`` under the prior; the cause's classifier
enters only through the scalar ``t``. Under the prior ``N(0, I)``, ``L_e ~ N(b_e, |w_e|^2)``, so
GATE(c -> e) is a function of ``(|w_e|, b_e, t)`` alone (:func:`predicted_gate`) and delta tau of
the two hyperplanes' norms, offsets and the shared ``alpha cos``: label balance and separability,
not the mechanism.

This module provides

- :func:`predicted_gate`: that prediction (one-dimensional integral, no sampling);
- :func:`rotated_frames`: random rotations of the latent space applied jointly to a pair's
  vectors, keeping their norms and mutual angles (the rotation null);
- :func:`balance_offsets`: logit offsets that move an outcome classifier's threshold so that a
  chosen share of the prior samples is labelled 1 (the label-balance control).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, ndtr

#: Quadrature grid of :func:`predicted_gate`: standard-normal abscissae on [-12, 12].
_GRID = np.linspace(-12.0, 12.0, 24001)
_WEIGHTS = np.exp(-0.5 * _GRID**2) / np.sqrt(2 * np.pi) * (_GRID[1] - _GRID[0])

#: The balance settings of the label-balance control: the share of prior samples labelled 1 for
#: ``(m1, m2)``: both balanced, m1 rare, m2 rare. (A share q and 1 - q are the same setting for a
#: GATE: flipping the sign of the latent maps one onto the other, so "rare" covers "common".)
BALANCE_SETTINGS: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.25, 0.5), (0.5, 0.25))


def predicted_gate(intercept: float, weight_norm: float, shift: float, *,
                   scale: str = "probability") -> float:
    """Eq. 8's GATE under an ``N(0, I)`` prior, from the outcome classifier's geometry alone.

    Parameters
    ----------
    intercept : float
        ``b_e``, the outcome classifier's intercept (its logit at the prior mean).
    weight_norm : float
        ``|w_e|``: the outcome logit's standard deviation under the prior.
    shift : float
        ``t = alpha (w_e . u_c)``: how far the intervention moves the outcome logit
        (``alpha |w_e| cos(h_c, h_e)`` for the linear intervention).
    scale : {'probability', 'label'}

    Returns
    -------
    float
        ``E_v[f(b + |w| v + t) - f(b + |w| v - t)]``, ``v ~ N(0, 1)``: for hard labels exactly
        ``Phi((t - b)/|w|) - Phi((-t - b)/|w|)``; for probabilities by quadrature on a
        24,001-point grid (absolute error below 1e-9 for ``|w| <= 50``).
    """
    b, s, t = float(intercept), float(weight_norm), float(shift)
    if scale == "label":
        if s == 0:
            return float((b + t > 0) - (b - t > 0))
        # 1[L + t > 0] - 1[L - t > 0] = 1[-t < L <= t] for t >= 0 (negated for t < 0): the same
        # expression either way.
        return float(ndtr((t - b) / s) - ndtr((-t - b) / s))
    if scale != "probability":
        raise ValueError(f"unknown outcome scale {scale!r}")
    logit = b + s * _GRID
    return float(np.sum(_WEIGHTS * (expit(logit + t) - expit(logit - t))))


def predicted_delta_tau(intercepts: tuple[float, float], weight_norms: tuple[float, float],
                        shifts: tuple[float, float], *, scale: str = "probability"
                        ) -> tuple[float, float, float]:
    """``(GATE(1 -> 2), GATE(2 -> 1), delta tau)`` predicted from the geometry alone.

    ``intercepts``, ``weight_norms``: ``(b_1, b_2)``, ``(|w_1|, |w_2|)``; ``shifts``:
    ``(t_12, t_21)`` with ``t_12 = alpha w_2 . u_1`` (intervening on 1 moves 2's logit) and
    ``t_21 = alpha w_1 . u_2``.
    """
    g12 = predicted_gate(intercepts[1], weight_norms[1], shifts[0], scale=scale)
    g21 = predicted_gate(intercepts[0], weight_norms[0], shifts[1], scale=scale)
    return g12, g21, abs(g12) - abs(g21)


def rotated_frames(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` Haar-random rotations of the latent space applied jointly to ``vectors``.

    Every rotated set keeps the norms of the vectors and all their mutual angles (their Gram
    matrix) exactly; only where the set points in the latent space is random. This is all a
    rotation of the whole space does to the vectors: the set is expressed in an orthonormal basis
    of its span (QR), and that basis is replaced by a uniformly random orthonormal frame.

    Parameters
    ----------
    vectors : array, shape (m, d)
        E.g. the two classifiers' weights and the two intervention directions of a pair.
    n : int
        Number of rotations.
    seed : int

    Returns
    -------
    np.ndarray, shape (n, m, d)
    """
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    m, d = v.shape
    q, r = np.linalg.qr(v.T)  # v.T = q r: q (d, m') orthonormal, r (m', m)
    rng = np.random.default_rng(seed)
    out = np.empty((n, m, d))
    for i in range(n):
        g = rng.standard_normal((d, q.shape[1]))
        f, rr = np.linalg.qr(g)
        f = f * np.where(np.diag(rr) < 0, -1.0, 1.0)  # Haar: fix the signs of QR's columns
        out[i] = (f @ r).T
    return out


def balance_offsets(logits: np.ndarray, share: float) -> float:
    """The logit offset ``delta`` with ``mean(logits + delta > 0) = share`` (to within one sample).

    Moving an outcome classifier's threshold by ``-delta`` relabels the prior samples so that
    ``share`` of them are 1: the label-balance control of the call rule.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    return -float(np.quantile(np.asarray(logits, dtype=np.float64), 1.0 - share))
