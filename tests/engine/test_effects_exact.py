"""cage.engine.effects on cases with exact answers: accumulation, batching, squeezing, the label
scale, and the decision rule at its boundaries (p = level, delta tau = 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cage.engine.classifiers import sigmoid
from cage.engine.effects import decide, gate_from_logits, gate_materialised, mean_outcomes


def test_mean_outcomes_is_the_plain_mean_accumulated_in_float64():
    """Per batch [1e8, 1, -1e8] in float32 sums to 0 in float32 but 1 in float64: the means must
    be the float64 ones (1/3), starting from 0, whatever the batch size divides."""
    z = np.zeros((9, 2))

    def outcome(zb):
        return {"m": np.tile(np.array([1e8, 1.0, -1e8], dtype=np.float32), len(zb) // 3)}

    for bs in (3, 9):
        assert mean_outcomes(z, lambda zb: zb, outcome, batch_size=bs) == {"m": 1 / 3}
    z = np.arange(10.0)[:, None] * np.ones((1, 2))
    means = mean_outcomes(z, lambda zb: 2 * zb, lambda zb: {"a": zb[:, 0].numpy(),
                                                           "b": zb[:, 1].numpy() ** 2},
                          batch_size=4)
    assert means == {"a": pytest.approx(9.0, abs=1e-12),
                     "b": pytest.approx(np.mean((2 * np.arange(10.0)) ** 2), abs=1e-12)}


def test_gate_materialised_keeps_every_call_within_the_batch_size():
    seen = []
    z = torch.as_tensor(np.random.default_rng(0).standard_normal((1000, 3)))

    def outcome(zb):
        seen.append(len(zb))
        return {"m": sigmoid(zb[:, 0].numpy())}

    gate = gate_materialised(z, lambda zb, sign: zb + sign * 0.5, outcome, batch_size=64)
    assert max(seen) == 64 and sum(seen) == 2000               # do(+) and do(-), all rows once
    expected = np.mean(sigmoid(z[:, 0].numpy() + 0.5) - sigmoid(z[:, 0].numpy() - 0.5))
    assert gate["m"] == pytest.approx(expected, abs=1e-12)


def test_gate_from_logits_shapes_follow_the_inputs():
    logits = np.random.default_rng(1).standard_normal(50)
    grid = gate_from_logits(logits, np.array([0.5, -1.0, 2.0]), np.array([0.1, 1.0]))
    assert grid.shape == (2, 3)
    assert np.ndim(gate_from_logits(logits, 0.5, 1.0)) == 0
    assert gate_from_logits(logits, 0.5, np.array([0.1, 1.0])).shape == (2,)
    assert gate_from_logits(logits, np.array([0.5, -1.0, 2.0]), 1.0).shape == (3,)
    for i, a in enumerate((0.1, 1.0)):
        for j, s in enumerate((0.5, -1.0, 2.0)):
            ref = np.mean(sigmoid(logits + a * s) - sigmoid(logits - a * s))
            assert grid[i, j] == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match="unknown outcome scale 'logit'"):
        gate_from_logits(logits, 0.5, 1.0, scale="logit")


def test_label_scale_counts_logits_inside_the_shifted_band():
    """Hard labels: 1[L + t > 0] - 1[L - t > 0] is sign(t) for -|t| < L <= |t| and 0 otherwise,
    so the GATE is sign(t) times the share of logits in (-|t|, |t|]."""
    logits = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    assert gate_from_logits(logits, 1.0, 1.0, scale="label") == pytest.approx(4 / 7)  # -.5..1
    assert gate_from_logits(logits, -1.0, 1.0, scale="label") == pytest.approx(-4 / 7)
    assert gate_from_logits(logits, 1.0, 0.0, scale="label") == 0.0
    assert gate_from_logits(logits, 10.0, 1.0, scale="label") == pytest.approx(1.0)
    brute = [np.mean((logits + t > 0).astype(float) - (logits - t > 0)) for t in (0.7, -2.5)]
    np.testing.assert_allclose(gate_from_logits(logits, 1.0, np.array([0.7, -2.5]),
                                                scale="label"), brute, atol=1e-15)


def test_extreme_logits_or_shifts_stay_finite():
    """cosh overflows beyond |x| ~ 710: a latent that far out contributes 0, and a shift that
    large contributes tanh(t) = 1 for a latent near its boundary."""
    far = np.array([-1000.0, 1000.0, 0.0])
    ref = np.mean(sigmoid(far + 0.3) - sigmoid(far - 0.3))
    assert gate_from_logits(far, 1.0, 0.3) == pytest.approx(ref, abs=1e-7)
    near = np.array([-1.0, 0.0, 2.0])
    assert gate_from_logits(near, 1.0, 800.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_and_shifts_together_stay_finite(dtype):
    far = np.array([-1000.0, 1000.0, 0.0])
    # sigmoid(L + 800) - sigmoid(L - 800): ~0, ~0 and 1 for the three latents.
    assert gate_from_logits(far, 1.0, 800.0, dtype=dtype) == pytest.approx(1 / 3, abs=1e-6)
    # Past float32's cosh range (|L| > 89, |t| > 103) but inside float64's: every term exact.
    logits = np.array([-150.0, -95.0, 0.0, 20.0, 95.0, 150.0])
    for t in (110.0, -120.0, 5.0):
        ref = np.mean(sigmoid(logits + t) - sigmoid(logits - t))
        got = gate_from_logits(logits, t, 1.0, dtype=dtype)
        assert np.isfinite(got) and got == pytest.approx(ref, abs=1e-6)


def test_float64_closed_form_equals_the_materialised_sum():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal(3000) * 3
    ref = np.mean(sigmoid(logits + 0.8) - sigmoid(logits - 0.8))
    assert gate_from_logits(logits, 0.4, 2.0, dtype=torch.float64) == pytest.approx(ref, abs=1e-13)


@pytest.mark.parametrize("delta, p12, p21, pdt, call", [
    (0.2, 0.05, 0.6, 0.01, "->"),     # p_gate_12 = level is significant: not independent
    (0.2, 0.6, 0.05, 0.01, "->"),     # p_gate_21 = level likewise
    (-0.2, 0.05, 0.05, 0.05, "<-"),   # every p at the level: significant, sign picks <-
    (0.2, 0.0500001, 0.06, 0.01, "⊥"),
    (1e-12, 0.01, 0.01, 0.01, "->"),  # any positive delta tau orients, however small
])
def test_decision_rule_at_its_boundaries(delta, p12, p21, pdt, call):
    assert decide(delta, p12, p21, pdt, 0.05) == call


def test_empirical_p_value_compares_float32_nulls_at_float64_precision():
    """The 1e-12 tie tolerance holds for float32 null draws too: an observed value 1e-9 above a
    draw (far below float32's resolution, far above the tolerance) is not reached by it."""
    from cage.engine.effects import empirical_p_value

    null = np.array([0.3, -0.1], dtype=np.float32)
    draw = float(null[0])
    assert empirical_p_value(null, draw * (1 + 1e-9)) == 1 / 3
    assert empirical_p_value(null, -draw * (1 + 1e-9)) == 1 / 3
    assert empirical_p_value(null, draw * (1 + 1e-13)) == 2 / 3   # within the tolerance: a tie


def test_an_observed_zero_is_reached_by_every_draw():
    """|draw| >= 0 always holds, exact zeros included: an observed statistic of 0 has p = 1."""
    from cage.engine.effects import empirical_p_value

    assert empirical_p_value(np.zeros(4), 0.0) == 1.0
    assert empirical_p_value(np.array([0.0, -0.2]), -0.0) == 1.0
