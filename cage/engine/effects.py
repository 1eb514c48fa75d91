"""Generative treatment effects: GATE (paper eq. 6-9), delta tau (eq. 10) and the decision rule
(:func:`decide`: ``->``, ``<-``, ``⊥`` or ``?``).

``GATE(c -> e) = mean_i [ m_e(i; do(m_c = 1)) - m_e(i; do(m_c = 0)) ]`` over ``k`` prior latents.

Two evaluations:

- :func:`gate_from_logits`: closed form for a linear latent outcome classifier (eq. 8) and an
  intervention that is a constant shift ``z +- alpha u``. The outcome logit of every latent moves by
  ``+- alpha (w_e . u)``, so with ``L_i = w_e . z_i + b_e`` computed once,
  ``GATE = mean_i f(L_i + alpha s) - f(L_i - alpha s)``, ``s = w_e . u``, ``f`` the sigmoid (or the
  step for hard labels). A whole alpha grid and any number of null directions cost ``O(k)`` per
  (alpha, direction) and one ``(B, d) @ (d,)`` product; no counterfactual latent is materialised.
- :func:`mean_outcomes`: the straightforward route, in row batches: build the counterfactual latents,
  (decode them,) apply the outcome classifier. Used for observation-space outcomes (eq. 9), for
  interventions that are not constant shifts, and as the reference in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

#: Elements per block of the closed form's (k, offsets) temporaries (16 MiB in float32).
BLOCK_ELEMENTS = 2**22

ARROW_12 = "->"
ARROW_21 = "<-"
INDEPENDENT = "⊥"
UNDETERMINED = "?"
#: Every value ``decide`` returns (the ``direction`` column of directions.csv).
CALLS = (ARROW_12, ARROW_21, INDEPENDENT, UNDETERMINED)


def gate_from_logits(
    logits: np.ndarray,
    shifts: np.ndarray | float,
    alphas: np.ndarray | float,
    *,
    scale: str = "probability",
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Closed-form GATE for a linear outcome classifier under constant-shift interventions.

    Parameters
    ----------
    logits : array, shape (k,)
        Outcome logits ``w_e . z_i + b_e`` of the prior latents.
    shifts : array, shape (B,), or float
        ``w_e . u_b`` for each treatment direction ``u_b`` (unit vectors).
    alphas : array, shape (A,), or float
    scale : {'probability', 'label'}
        Soft outcome ``sigmoid`` or hard outcome ``1[logit > 0]``.
    dtype : torch.dtype
        Precision of the elementwise work (sums are accumulated in float64). float32 halves the
        cost; its error on a GATE is below 1e-6 (checked against the materialised float64
        computation in the tests).

    Returns
    -------
    np.ndarray, shape (A, B) (squeezed like the inputs: scalars in, scalar out)

    Notes
    -----
    With ``t = alpha * s``, ``sigmoid(L + t) - sigmoid(L - t) = tanh(t) / (1 + cosh(L) / cosh(t))``,
    so ``GATE = tanh(t) mean_i 1 / (1 + cosh(L_i) / cosh(t))``: ``cosh(L_i)`` is computed once and
    each (latent, offset) pair costs a multiply-add and a reciprocal. The ``A * B`` offsets are
    processed in blocks of at most ``BLOCK_ELEMENTS / k``, so temporaries stay near
    ``BLOCK_ELEMENTS`` elements whatever ``k``, ``A`` and ``B``. Hard labels are counted with a
    binary search in the sorted logits.
    """
    scalar_s, scalar_a = np.ndim(shifts) == 0, np.ndim(alphas) == 0
    s = np.atleast_1d(np.asarray(shifts, dtype=np.float64))
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    t_all = (a[:, None] * s[None, :]).ravel()
    lg64 = np.asarray(logits, dtype=np.float64)
    k = lg64.shape[0]
    if scale == "label":
        # 1[L + t > 0] - 1[L - t > 0] = sign(t) 1[-|t| < L <= |t|]: a count in the sorted logits.
        srt = np.sort(lg64)
        inside = (np.searchsorted(srt, np.abs(t_all), side="right")
                  - np.searchsorted(srt, -np.abs(t_all), side="right"))
        out = np.sign(t_all) * inside / k
    elif scale == "probability":
        # sigmoid(L + t) - sigmoid(L - t) = tanh(t) / (1 + cosh(L) / cosh(t)): no transcendental
        # function per (latent, offset) element, one multiply-add and one reciprocal.
        with np.errstate(over="ignore"):
            c = torch.as_tensor(np.cosh(lg64)).to(dtype)[:, None]  # inf beyond float range: term 0
            q_all = 1.0 / np.cosh(t_all)  # 0 when cosh overflows: term tanh(t)
        tanh_t = np.tanh(t_all)
        block = max(1, BLOCK_ELEMENTS // max(k, 1))
        out = np.empty(t_all.size, dtype=np.float64)
        log_cosh_l = None
        for start in range(0, t_all.size, block):
            q = torch.as_tensor(q_all[start:start + block]).to(dtype)[None, :]
            denom = torch.addcmul(torch.ones((), dtype=dtype), c, q)
            terms = denom.reciprocal_()
            bad = torch.isnan(terms).any(0)
            if bool(bad.any()):
                # cosh(L) overflowed to inf where 1/cosh(t) underflowed to 0 (large |L| and |t|
                # together: past ~89 and ~103 in float32): those offsets exactly, in log space,
                # 1 / (1 + cosh(L) / cosh(t)) = sigmoid(log cosh(t) - log cosh(L)).
                if log_cosh_l is None:
                    log_cosh_l = torch.as_tensor(_log_cosh(lg64))[:, None]
                cols = torch.nonzero(bad).flatten()
                lt = torch.as_tensor(_log_cosh(t_all[start:start + block][cols.numpy()]))[None, :]
                terms[:, cols] = torch.sigmoid(lt - log_cosh_l).to(dtype)
            total = terms.sum(0, dtype=torch.float64).numpy()
            out[start:start + block] = tanh_t[start:start + block] * total / k
    else:
        raise ValueError(f"unknown outcome scale {scale!r}")
    out = out.reshape(a.size, s.size)
    if scalar_a and scalar_s:
        return out[0, 0]
    if scalar_s:
        return out[:, 0]
    if scalar_a:
        return out[0]
    return out


def _log_cosh(x: np.ndarray) -> np.ndarray:
    """``log cosh(x)`` without overflow: ``|x| + log1p(exp(-2|x|)) - log 2``, float64."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    return a + np.log1p(np.exp(-2.0 * a)) - np.log(2.0)


def mean_outcomes(
    z: np.ndarray | torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    outcome: Callable[[torch.Tensor], Mapping[str, np.ndarray]],
    *,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Mean outcome probabilities of counterfactual latents, computed in row batches.

    Parameters
    ----------
    z : array, shape (k, d)
        Prior latents.
    transform : callable
        ``z_batch -> z'_batch`` (e.g. ``lambda zb: intervention.apply(zb, clf, alpha, +1)``).
    outcome : callable
        ``z'_batch -> {attribute: P(attribute = 1), shape (batch,)}``; for eq. 9 this decodes and
        applies the observation classifier.
    batch_size : int

    Returns
    -------
    dict
        ``{attribute: mean_i outcome_i}`` (float64 sums, so the batch size does not matter).
    """
    zt = torch.as_tensor(z)
    sums: dict[str, float] = {}
    for start in range(0, zt.shape[0], batch_size):
        probs = outcome(transform(zt[start:start + batch_size]))
        for name, values in probs.items():
            sums[name] = sums.get(name, 0.0) + float(np.asarray(values, dtype=np.float64).sum())
    return {name: total / zt.shape[0] for name, total in sums.items()}


def gate_materialised(
    z: np.ndarray | torch.Tensor,
    apply: Callable[[torch.Tensor, int], torch.Tensor],
    outcome: Callable[[torch.Tensor], Mapping[str, np.ndarray]],
    *,
    batch_size: int = 4096,
) -> dict[str, float]:
    """GATE of one intervention on every outcome attribute, by materialising counterfactuals.

    ``apply(z_batch, sign)`` realises ``do(m = 1)`` for ``sign = +1`` and ``do(m = 0)`` for -1.
    Returns ``{attribute: GATE}``.
    """
    plus = mean_outcomes(z, lambda zb: apply(zb, 1), outcome, batch_size=batch_size)
    minus = mean_outcomes(z, lambda zb: apply(zb, -1), outcome, batch_size=batch_size)
    return {name: plus[name] - minus[name] for name in plus}


def delta_tau(gate_12: Any, gate_21: Any) -> Any:
    """``|GATE(m1 -> m2)| - |GATE(m2 -> m1)|`` (eq. 10); works elementwise on arrays."""
    return np.abs(gate_12) - np.abs(gate_21)


def empirical_p_value(null: np.ndarray, observed: float) -> float:
    """Two-sided empirical p-value ``(1 + #{|null| >= |obs|}) / (1 + B)``.

    A relative tolerance of 1e-12 counts numerically equal draws as ties (conservative).
    """
    null = np.abs(np.asarray(null, dtype=np.float64).ravel())
    obs = abs(float(observed))
    hits = int(np.count_nonzero(null >= obs * (1 - 1e-12)))
    return (1 + hits) / (1 + null.size)


def decide(delta: float, p_gate_12: float, p_gate_21: float, p_delta_tau: float,
           level: float) -> str:
    """The call for one attribute pair: ``⊥``, ``->``, ``<-`` or ``?`` (undetermined).

    A p-value is significant when it is ``<= level``.

    - ``⊥`` (independent): neither GATE is significant (``p_gate_12 > level`` and
      ``p_gate_21 > level``), as the paper calls gender and smiling.
    - ``->`` (m1 causes m2) / ``<-`` (m2 causes m1): at least one GATE is significant **and** delta
      tau is significant (``p_delta_tau <= level``); the sign of delta tau picks the arrow.
    - ``?`` (associated, direction not identified): at least one GATE is significant but delta tau
      is not (or is exactly 0). Intervening on either attribute moves the other, but the asymmetry
      that would orient the edge is within what the null produces.

    Sign stability over the alpha sweep is *not* part of the rule; it is reported next to every call
    (``sign_stable``) so that a reader can apply it.
    """
    if p_gate_12 > level and p_gate_21 > level:
        return INDEPENDENT
    if p_delta_tau > level or delta == 0:
        return UNDETERMINED
    return ARROW_12 if delta > 0 else ARROW_21


#: The words the summaries use for each call.
CALL_WORDS = {ARROW_12: "direction", ARROW_21: "direction", INDEPENDENT: "independent",
              UNDETERMINED: "undetermined"}
