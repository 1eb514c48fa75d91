"""The geometric prediction of eq. 8, the rotation null's invariants and the balance offsets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm

from cage.engine.effects import gate_from_logits
from cage.engine.geometry import (
    balance_offsets,
    predicted_delta_tau,
    predicted_gate,
    rotated_frames,
)


def _gate_by_scipy(b: float, s: float, t: float) -> float:
    """The same expectation by adaptive quadrature (an independent computation)."""
    def f(v):
        return norm.pdf(v) * (expit(b + s * v + t) - expit(b + s * v - t))

    value, _ = integrate.quad(f, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-10, limit=400)
    return value


@pytest.mark.parametrize("b, s, t", [(0.0, 1.0, 0.5), (1.5, 3.0, 1.2), (-2.0, 6.0, -0.8),
                                     (0.3, 0.2, 2.0), (4.0, 10.0, 3.0)])
def test_predicted_gate_matches_adaptive_quadrature(b, s, t):
    assert predicted_gate(b, s, t) == pytest.approx(_gate_by_scipy(b, s, t), abs=1e-9)


@pytest.mark.parametrize("b, s, t", [(0.0, 1.0, 0.5), (1.5, 3.0, 1.2), (-2.0, 6.0, -0.8)])
def test_predicted_label_gate_is_the_normal_interval_probability(b, s, t):
    # P(-|t| < L <= |t|) with L ~ N(b, s^2), signed like t.
    expected = np.sign(t) * (norm.cdf((abs(t) - b) / s) - norm.cdf((-abs(t) - b) / s))
    assert predicted_gate(b, s, t, scale="label") == pytest.approx(expected, abs=1e-12)


def test_predicted_gate_matches_the_closed_form_on_many_prior_samples():
    rng = np.random.default_rng(0)
    d, k = 12, 400_000
    w = rng.standard_normal(d)
    b = 0.7
    z = rng.standard_normal((k, d))
    logits = z @ w + b
    for t in (0.3, 1.0, -2.0):
        mc = float(gate_from_logits(logits, t, 1.0))
        # Monte Carlo standard error of a mean of values in [-1, 1] over 400,000 draws: < 1.6e-3.
        assert predicted_gate(b, np.linalg.norm(w), t) == pytest.approx(mc, abs=3e-3)


def test_delta_tau_follows_the_hyperplane_nearer_the_prior_mean():
    """Same norms and shared alpha cos: the attribute whose boundary is nearer the prior mean has
    the larger GATE as an effect (the finding that makes eq. 8's delta tau geometry)."""
    g12, g21, dt = predicted_delta_tau((5.0, 0.0), (3.0, 3.0), (1.0, 1.0))
    assert dt > 0.1 and g12 > g21
    assert predicted_delta_tau((0.0, 5.0), (3.0, 3.0), (1.0, 1.0))[2] == pytest.approx(-dt)


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 40), m=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_rotated_frames_keep_norms_and_angles_exactly(d, m, seed):
    m = min(m, d)
    v = np.random.default_rng(seed).standard_normal((m, d)) * np.array([1.0, 3.0, 0.5, 2.0])[:m, None]
    frames = rotated_frames(v, 7, seed + 1)
    assert frames.shape == (7, m, d)
    gram = v @ v.T
    for f in frames:
        np.testing.assert_allclose(f @ f.T, gram, atol=1e-9 * (1 + np.abs(gram).max()))


def test_rotated_frames_are_uniform_on_the_sphere():
    v = np.array([[1.0, 0, 0, 0, 0], [0.6, 0.8, 0, 0, 0]])
    frames = rotated_frames(v, 4000, 3)
    first = frames[:, 0, :]
    # Uniform on S^4: every coordinate has mean 0 and variance 1/5.
    assert np.abs(first.mean(0)).max() < 0.03
    np.testing.assert_allclose((first**2).mean(0), 0.2, atol=0.02)
    # Different draws are different rotations.
    assert np.abs(frames[0] - frames[1]).max() > 0.1


def test_rotated_frames_are_seeded():
    v = np.eye(3)[:2]
    np.testing.assert_array_equal(rotated_frames(v, 3, 5), rotated_frames(v, 3, 5))
    assert not np.array_equal(rotated_frames(v, 3, 5), rotated_frames(v, 3, 6))


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5, 0.9])
def test_balance_offsets_relabel_the_requested_share(share):
    logits = np.random.default_rng(1).normal(0.8, 2.0, size=20_001)
    delta = balance_offsets(logits, share)
    assert np.mean(logits + delta > 0) == pytest.approx(share, abs=1 / logits.size)


def test_balance_offsets_reject_impossible_shares():
    with pytest.raises(ValueError):
        balance_offsets(np.zeros(3), 1.0)
