"""GATE, delta tau, p-values and the decision rule (cage.engine.effects, cage.engine.nulls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

from cage.engine.classifiers import LatentClassifier, sigmoid
from cage.engine.effects import (
    CALLS,
    decide,
    delta_tau,
    empirical_p_value,
    gate_from_logits,
    gate_materialised,
    mean_outcomes,
)
from cage.engine.interventions import LinearIntervention
from cage.engine.nulls import permutation_normals, random_directions


def _planted(n, d, direction, beta, rng):
    z = rng.standard_normal((n, d))
    y = (rng.random(n) < sigmoid(beta * z @ direction)).astype(int)
    return z, y


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    d = 12
    a = rng.standard_normal(d)
    a /= np.linalg.norm(a)
    b = rng.standard_normal(d)
    b /= np.linalg.norm(b)
    z1, y1 = _planted(3000, d, a, 3.0, rng)
    z2, y2 = _planted(3000, d, 0.6 * a + 0.8 * b, 2.0, rng)
    c1 = LatentClassifier().fit(z1, y1)
    c2 = LatentClassifier().fit(z2, y2)
    prior = rng.standard_normal((4000, d))
    return c1, c2, prior


@pytest.mark.parametrize("scale", ["probability", "label"])
def test_closed_form_equals_materialised(fitted, scale):
    c1, c2, prior = fitted
    inter = LinearIntervention()
    alphas = np.array([0.1, 0.5, 1.0, 2.5])
    directions = np.vstack([c1.normal_, random_directions(5, prior.shape[1], seed=3)])
    closed = gate_from_logits(c2.decision_function(prior), directions @ c2.coef_, alphas, scale=scale)

    def outcome(zb):
        p = c2.predict_proba(zb)
        return {"m2": p if scale == "probability" else (p > 0.5).astype(float)}

    for j, u in enumerate(directions):
        for i, alpha in enumerate(alphas):
            def apply(zb, sign, u=u, alpha=alpha):
                return zb + sign * alpha * torch.as_tensor(u)

            mat = gate_materialised(torch.as_tensor(prior), apply, outcome, batch_size=999)["m2"]
            assert abs(mat - closed[i, j]) <= 1e-6
    # The intervention object gives the same counterfactuals as the explicit shift.
    z_cf = inter.apply(prior, c1, 0.5, -1)
    np.testing.assert_allclose(z_cf, prior - 0.5 * c1.normal_, atol=1e-12)


def test_planted_effect_recovered_within_tolerance():
    """Logit of m2 is beta * (a . z); intervening along a by alpha gives, for t ~ N(0, 1),
    GATE = E[sigmoid(beta (t + alpha)) - sigmoid(beta (t - alpha))] (numerical integral).
    The fitted classifiers must recover it within 0.02 (n = 20,000)."""
    rng = np.random.default_rng(1)
    d, beta, alpha = 6, 2.0, 0.7
    a = np.eye(d)[0]
    z, y = _planted(20000, d, a, beta, rng)
    clf = LatentClassifier().fit(z, y)

    def integrand(t):
        return (sigmoid(beta * (t + alpha)) - sigmoid(beta * (t - alpha))) * np.exp(-t * t / 2)

    truth = integrate.quad(integrand, -12, 12)[0] / np.sqrt(2 * np.pi)
    prior = rng.standard_normal((50000, d))
    est = gate_from_logits(clf.decision_function(prior), float(clf.coef_ @ a), alpha)
    assert abs(est - truth) < 0.02, (est, truth)
    # An orthogonal treatment direction has no effect.
    zero = gate_from_logits(clf.decision_function(prior), float(clf.coef_ @ np.eye(d)[1]), alpha)
    assert abs(zero) < 0.02


def _type_one_rate(null_kind: str, n_sims: int, seed: int) -> tuple[float, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, n, k, b_draws = 6, 300, 1000, 99
    pvals = []
    for s in range(n_sims):
        a = rng.standard_normal(d)
        e = rng.standard_normal(d)
        z1, y1 = _planted(n, d, a / np.linalg.norm(a), 2.0, rng)
        if null_kind == "permutation":
            y1 = rng.integers(0, 2, n)  # m1 carries no information at all
        z2, y2 = _planted(n, d, e / np.linalg.norm(e), 2.0, rng)
        c1 = LatentClassifier().fit(z1, y1)
        c2 = LatentClassifier().fit(z2, y2)
        prior = rng.standard_normal((k, d))
        logits = c2.decision_function(prior)
        obs = gate_from_logits(logits, float(c2.coef_ @ c1.normal_), 1.0)
        if null_kind == "random":
            dirs = random_directions(b_draws, d, seed=s)
        else:
            dirs = permutation_normals(z1, y1, b_draws, seed=s)
        null = gate_from_logits(logits, dirs @ c2.coef_, 1.0)
        pvals.append(empirical_p_value(null, obs))
    pvals = np.asarray(pvals)
    return float(np.mean(pvals <= 0.05)), pvals


@pytest.mark.parametrize("null_kind", ["random", "permutation"])
def test_p_values_uniform_under_no_effect(null_kind):
    """300 simulated data sets without effect: the type-I error at 0.05 lies in [0.015, 0.09]
    (0.05 +- 3 binomial standard deviations), and the p-values look uniform (KS p > 0.01)."""
    from scipy import stats

    rate, pvals = _type_one_rate(null_kind, 300, seed=11 if null_kind == "random" else 12)
    assert 0.015 <= rate <= 0.09, rate
    # p-values live on the grid {1/100, ..., 1}; compare with the discrete uniform via a KS test
    # on jittered values.
    jitter = pvals - np.random.default_rng(0).random(pvals.size) / 100
    assert stats.kstest(jitter, "uniform").pvalue > 0.01


def test_results_do_not_depend_on_sample_order_or_batch_size(fitted):
    c1, c2, prior = fitted
    perm = np.random.default_rng(5).permutation(prior.shape[0])
    s = float(c2.coef_ @ c1.normal_)
    g = gate_from_logits(c2.decision_function(prior), s, [0.5, 1.0])
    g_perm = gate_from_logits(c2.decision_function(prior[perm]), s, [0.5, 1.0])
    np.testing.assert_allclose(g, g_perm, atol=1e-12)

    def outcome(zb):
        return {"m2": c2.predict_proba(zb)}

    means = [mean_outcomes(prior, lambda zb: zb + 0.3, outcome, batch_size=bs)["m2"]
             for bs in (1, 7, 256, 10_000)]
    assert max(means) - min(means) < 1e-12


def test_empirical_p_value_and_delta_tau():
    null = np.array([-0.5, 0.1, 0.2, 0.3])
    assert empirical_p_value(null, 0.25) == (1 + 2) / 5  # |-0.5| and 0.3 reach 0.25
    assert empirical_p_value(null, -0.6) == 1 / 5
    assert empirical_p_value(null, 0.3) == 3 / 5  # ties count
    assert delta_tau(-0.4, 0.1) == pytest.approx(0.3)
    np.testing.assert_allclose(delta_tau(np.array([0.1, -0.2]), np.array([0.3, 0.1])), [-0.2, 0.1])


@pytest.mark.parametrize("delta, p12, p21, pdt, call", [
    # neither GATE significant: independent, whatever delta tau does
    (0.2, 0.5, 0.6, 0.01, "⊥"),
    (0.2, 0.06, 0.051, 0.9, "⊥"),
    # a GATE significant and delta tau significant: the sign of delta tau picks the arrow
    (0.2, 0.01, 0.6, 0.01, "->"),
    (0.2, 0.6, 0.01, 0.05, "->"),  # p = level counts as significant
    (-0.2, 0.01, 0.01, 0.02, "<-"),
    # a GATE significant, delta tau not: associated, direction undetermined
    (0.013, 0.024, 0.024, 0.902, "?"),  # the digits thick / bright latent row
    (-0.014, 0.024, 0.024, 1.0, "?"),  # ... and its observation row (the sign flipped)
    (0.2, 0.01, 0.6, 0.051, "?"),
    (0.0, 0.01, 0.01, 0.01, "?"),  # delta tau exactly 0 orients nothing
])
def test_decision_rule_truth_table(delta, p12, p21, pdt, call):
    assert decide(delta, p12, p21, pdt, 0.05) == call
    assert call in CALLS


def _gate_integral(mean, sd, t):
    """E[sigmoid(L + t) - sigmoid(L - t)] for L ~ N(mean, sd^2), by quadrature."""
    def f(x):
        pdf = np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
        return (sigmoid(x + t) - sigmoid(x - t)) * pdf
    return integrate.quad(f, mean - 12 * sd, mean + 12 * sd)[0]


def test_planted_asymmetry_is_still_called_with_a_significant_delta_tau():
    # m1: a soft, off-centre hyperplane (|w1| = 1, offset 2); m2: a sharp, centred one (|w2| = 4) at
    # cos 0.6. Intervening on m1 moves m2's logits by 4 * 0.6 = 2.4 across a boundary where the prior
    # mass sits; intervening on m2 moves m1's logits by only 0.6, far from its boundary:
    # GATE(1->2) ~ 0.41, GATE(2->1) ~ 0.14 (quadrature), delta tau ~ +0.27, far outside the null of
    # random unit directions in d = 64 (|cos| ~ 0.12): the new rule still calls m1 -> m2.
    rng = np.random.default_rng(5)
    d, k = 64, 4000
    z = rng.standard_normal((k, d))
    h1 = np.eye(d)[0]
    h2 = 0.6 * np.eye(d)[0] + 0.8 * np.eye(d)[1]
    w1, b1, w2, b2 = 1.0 * h1, -2.0, 4.0 * h2, 0.0
    l1, l2 = z @ w1 + b1, z @ w2 + b2
    g12 = float(gate_from_logits(l2, w2 @ h1, 1.0))
    g21 = float(gate_from_logits(l1, w1 @ h2, 1.0))
    # Sampling error of a mean of k bounded terms: tolerance 0.02 (> 4 standard errors).
    assert g12 == pytest.approx(_gate_integral(0.0, 4.0, 2.4), abs=0.02)
    assert g21 == pytest.approx(_gate_integral(-2.0, 1.0, 0.6), abs=0.02)
    null = rng.standard_normal((2, 200, d))
    null /= np.linalg.norm(null, axis=2, keepdims=True)
    n12 = gate_from_logits(l2, null[0] @ w2, 1.0)
    n21 = gate_from_logits(l1, null[1] @ w1, 1.0)
    p12, p21 = empirical_p_value(n12, g12), empirical_p_value(n21, g21)
    pdt = empirical_p_value(delta_tau(n12, n21), delta_tau(g12, g21))
    assert p12 <= 0.05 and pdt <= 0.05
    assert decide(delta_tau(g12, g21), p12, p21, pdt, 0.05) == "->"
    # The same GATEs with a delta tau the null reaches are only "associated".
    assert decide(delta_tau(g12, g21), p12, p21, 0.3, 0.05) == "?"
