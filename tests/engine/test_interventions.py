"""Interventions on latents (cage.engine.interventions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cage.engine.classifiers import LatentClassifier, sigmoid
from cage.engine.interventions import (
    ConditionalIntervention,
    Intervention,
    LinearIntervention,
    TargetDistanceIntervention,
    make_intervention,
    project_out,
)
from cage_eval.errors import ConfigError


@pytest.fixture(scope="module")
def classifiers():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1500, 6))
    out = []
    for w in (np.array([2.0, 1, 0, 0, 0, 0]), np.array([1.0, 0, 2, 0, 0, 0]),
              np.array([0.0, 0, 1, 1, 0, 0])):
        y = (rng.random(1500) < sigmoid(z @ w + 0.5)).astype(int)
        out.append(LatentClassifier().fit(z, y))
    return out


def test_linear_shift_numpy_and_torch(classifiers):
    c = classifiers[0]
    z = np.random.default_rng(1).standard_normal((10, 6)).astype(np.float32)
    inter = LinearIntervention()
    assert isinstance(inter, Intervention)
    up = inter.apply(z, c, 1.5, 1)
    assert up.dtype == np.float32
    np.testing.assert_allclose(up, z + 1.5 * c.normal_, rtol=1e-6, atol=1e-6)
    down = inter.apply(torch.as_tensor(z), c, 1.5, -1)
    assert isinstance(down, torch.Tensor) and down.dtype == torch.float32
    np.testing.assert_allclose(down.numpy(), z - 1.5 * c.normal_, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        inter.apply(z, c, 0.0, 1)


def test_conditional_keeps_other_attributes_fixed(classifiers):
    c0, c1, c2 = classifiers
    inter = ConditionalIntervention([c1.normal_, c2.normal_])
    u = inter.direction(c0)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    assert abs(u @ c1.normal_) < 1e-10 and abs(u @ c2.normal_) < 1e-10
    assert u @ c0.normal_ > 0  # still moves the treated attribute up
    z = np.random.default_rng(2).standard_normal((50, 6))
    moved = inter.apply(z, c0, 2.0, 1)
    np.testing.assert_allclose(c1.decision_function(moved), c1.decision_function(z), atol=1e-9)
    assert np.all(c0.decision_function(moved) > c0.decision_function(z))
    # With nothing to condition on it is the linear intervention.
    np.testing.assert_allclose(make_intervention("conditional").direction(c0), c0.normal_)


def test_project_out_one_condition_matches_interfacegan_formula():
    rng = np.random.default_rng(3)
    n1, n2 = rng.standard_normal(5), rng.standard_normal(5)
    n1, n2 = n1 / np.linalg.norm(n1), n2 / np.linalg.norm(n2)
    expected = n1 - (n1 @ n2) * n2
    np.testing.assert_allclose(project_out(n1, [n2]), expected / np.linalg.norm(expected))
    with pytest.raises(ConfigError, match="span"):
        project_out(n1, [n1 * 2.0])


def test_target_distance_puts_every_latent_at_alpha(classifiers):
    c = classifiers[1]
    z = np.random.default_rng(4).standard_normal((40, 6))
    inter = make_intervention("target_distance")
    assert isinstance(inter, TargetDistanceIntervention)
    assert inter.direction(c) is None  # not a constant shift: no closed form
    for sign in (1, -1):
        moved = inter.apply(z, c, 0.8, sign)
        dist = c.decision_function(moved) / c.weight_norm_
        np.testing.assert_allclose(dist, sign * 0.8, atol=1e-9)
    with pytest.raises(ConfigError):
        make_intervention("sideways")
