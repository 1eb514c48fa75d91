"""Unbiased MMD^2 and its permutation test (cage.engine.mmd)."""

from __future__ import annotations

import numpy as np
import pytest

from cage.engine.mmd import _mmd2_from_indicator, gaussian_kernel, mmd2_unbiased, mmd_test


def _naive_mmd2(x, y, sigma):
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_matches_the_u_statistic_written_out():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((9, 3)) + 0.4
    value, sigma = mmd2_unbiased(x, y)
    pooled = np.vstack([x, y])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(21) for j in range(21) if i != j]
    assert sigma == pytest.approx(np.median(dists))
    assert value == pytest.approx(_naive_mmd2(x, y, sigma), abs=1e-12)


def test_vectorised_permutations_equal_direct_recomputation():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((10, 2)), rng.standard_normal((7, 2))
    k, sigma = gaussian_kernel(x, y)
    pooled = np.vstack([x, y])
    a = np.zeros((17, 4))
    for j in range(4):
        a[rng.permutation(17)[:10], j] = 1
    stats = _mmd2_from_indicator(k, a)
    for j in range(4):
        first = a[:, j] == 1
        assert stats[j] == pytest.approx(_naive_mmd2(pooled[first], pooled[~first], sigma), abs=1e-12)


def test_near_zero_on_equal_and_positive_on_shifted_distributions():
    rng = np.random.default_rng(2)
    same = mmd_test(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)), n_perm=200, seed=1)
    assert abs(same.mmd2) < 0.01 and same.p_value > 0.05
    shifted = mmd_test(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 0.5,
                       n_perm=200, seed=1)
    assert shifted.mmd2 > 0.05 and shifted.p_value <= 1 / 201 + 1e-12
