"""Null directions (cage.engine.nulls) against independent references (scikit-learn refits, exact
seeding, the degenerate-refit fallback), and the empirical p-value read off a null, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cage.engine.effects import empirical_p_value
from cage.engine.nulls import permutation_labels, permutation_normals, random_directions


@pytest.fixture(scope="module")
def data():
    # Few samples and unequal scales, so that the L2 penalty visibly turns the normals (C = 1
    # and C = 2 differ by 0.08 in some coordinate).
    rng = np.random.default_rng(0)
    z = rng.standard_normal((60, 5)) * np.array([3.0, 1.0, 0.3, 2.0, 0.5])
    y = (z[:, 0] + 0.5 * rng.standard_normal(60) > 0).astype(int)
    return z, y


def test_random_directions_are_seeded_unit_vectors():
    u = random_directions(200, 7, seed=3)
    assert u.shape == (200, 7) and u.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(u, random_directions(200, 7, seed=3))
    assert not np.allclose(u, random_directions(200, 7, seed=4))
    # Uniform on the sphere: the mean is near 0 (each coordinate has variance 1/7; 4 sigma).
    assert np.abs(u.mean(0)).max() < 4 * np.sqrt(1 / 7 / 200)


def test_permutation_labels_are_seeded_permutations(data):
    _, y = data
    labels = permutation_labels(y, 6, seed=1)
    assert labels.shape == (len(y), 6)
    for col in labels.T:
        np.testing.assert_array_equal(np.sort(col), np.sort(y))  # same labels, reordered
    assert len({col.tobytes() for col in labels.T}) == 6
    np.testing.assert_array_equal(labels, permutation_labels(y, 6, seed=1))
    assert not np.array_equal(labels, permutation_labels(y, 6, seed=2))


@pytest.mark.parametrize("C", [None, 0.05])
def test_permutation_normals_equal_scikit_learn_refits(data, C):
    """Each null normal is the unit normal of scikit-learn's L2 logistic regression (same C) on
    one permuted label column; the default is C = 1 and seed 0. Tolerance 1e-4 on each unit
    vector (float32 products, gradient tolerance 1e-5 per sample; measured error 1e-5)."""
    z, y = data
    normals = (permutation_normals(z, y, 5) if C is None
               else permutation_normals(z, y, 5, C=C, seed=0))
    labels = permutation_labels(y, 5, seed=0)
    for b in range(5):
        ref = LogisticRegression(C=1.0 if C is None else C, tol=1e-10, max_iter=1000)
        w = ref.fit(z, labels[:, b]).coef_[0]
        np.testing.assert_allclose(normals[b], w / np.linalg.norm(w), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-12)


def test_degenerate_refits_fall_back_to_seeded_random_directions(data):
    """Constant labels give all-zero refits; each is replaced by a random unit direction drawn
    with seed + 1 (so the null stays reproducible)."""
    z, _ = data
    normals = permutation_normals(z, np.zeros(len(z), dtype=int), 4, seed=7)
    np.testing.assert_array_equal(normals, random_directions(4, z.shape[1], seed=8))


def test_empirical_p_value_counts_the_observed_statistic_as_one_draw():
    """``(1 + #{|null| >= |obs|}) / (1 + B)`` (Phipson & Smyth 2010), by hand: the
    observed value counts as one draw of the null, so p is never 0 and with B = 19 draws the
    smallest attainable p is exactly 1/20."""
    null = np.linspace(-0.9, 0.9, 19)                       # |null| in {0, 0.1, ..., 0.9}
    assert empirical_p_value(null, 5.0) == 1 / 20           # beyond every draw: 1/(B+1), not 0
    assert empirical_p_value(null, -0.85) == (1 + 2) / 20   # -0.9 and 0.9 reach |obs|
    assert empirical_p_value(null, 0.0) == 1.0              # every draw reaches 0
    assert empirical_p_value(np.array([]), 0.3) == 1.0      # no draws: no evidence at all
    assert empirical_p_value(np.array([[0.2, -0.4], [0.1, 0.05]]), 0.15) == (1 + 2) / 5
    # Ties within 1e-12 relative count as reaching (conservative), a clear gap does not.
    assert empirical_p_value(np.array([0.3 * (1 - 1e-13)]), 0.3) == 1.0
    assert empirical_p_value(np.array([0.3 * (1 - 1e-9)]), 0.3) == 0.5
