"""Unbiased MMD^2 with a Gaussian kernel and its permutation test (Gretton et al. 2012).

docs/method.md §3: compare the conditional ``p(z | m = 1)`` with the
counterfactual ``p(z | do(m = 1))``.

``MMD^2_u = sum_{i != j} k(x_i, x_j) / (n(n-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1))
- 2 sum_{i,j} k(x_i, y_j) / (nm)``, ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, ``sigma`` the median
pairwise distance of the pooled sample (off-diagonal). Pooling makes ``sigma`` permutation
invariant, so the kernel matrix is computed once and every permutation is a relabelling of it;
all permutations are evaluated together as one ``K @ A`` product with ``A`` the (N, P) indicator
matrix of the permuted first samples. Reported as is, not clipped (it can be slightly negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MMDResult:
    """An MMD two-sample test: statistic, permutation p-value, bandwidth, sample sizes."""

    mmd2: float
    p_value: float
    sigma: float
    n: int
    m: int


def gaussian_kernel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Pooled Gaussian kernel matrix with the median-heuristic bandwidth.

    Returns
    -------
    K : np.ndarray, shape (n + m, n + m), float64
    sigma : float
    """
    xy = torch.as_tensor(np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)]))
    d2 = torch.cdist(xy, xy).pow(2)
    n_all = xy.shape[0]
    off = d2[~torch.eye(n_all, dtype=torch.bool)].clamp_min(0).sqrt().numpy()
    sigma = float(np.median(off))  # numpy's median (the mean of the two middle values)
    if sigma <= 0:
        sigma = 1.0  # all points identical: any bandwidth gives MMD = 0
    return torch.exp(-d2 / (2 * sigma**2)).numpy(), sigma


def _mmd2_from_indicator(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """MMD^2_u for every column of the 0/1 indicator ``a`` (N, P) of the first sample."""
    diag = np.diag(k)
    row = k.sum(1)
    total = row.sum()
    ka = k @ a
    n = a.sum(0)
    m = a.shape[0] - n
    sxx = (a * ka).sum(0) - a.T @ diag
    sxy = a.T @ row - (a * ka).sum(0)
    syy = total - 2 * (a.T @ row) + (a * ka).sum(0) - (1 - a).T @ diag
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(MMD^2_u, sigma)`` for samples ``x`` (n, d) and ``y`` (m, d), n, m >= 2."""
    k, sigma = gaussian_kernel(x, y)
    a = np.zeros((k.shape[0], 1))
    a[: len(x)] = 1.0
    return float(_mmd2_from_indicator(k, a)[0]), sigma


def mmd_test(x: np.ndarray, y: np.ndarray, *, n_perm: int = 200, seed: int = 0,
             chunk: int = 256) -> MMDResult:
    """Permutation test of ``p_x = p_y``: ``p = (1 + #{T_b >= T_obs}) / (1 + B)``."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 points per sample, got {n} and {m}")
    k, sigma = gaussian_kernel(x, y)
    a0 = np.zeros((n + m, 1))
    a0[:n] = 1.0
    obs = float(_mmd2_from_indicator(k, a0)[0])
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, chunk):
        p = min(chunk, n_perm - start)
        a = np.zeros((n + m, p))
        for j in range(p):
            a[rng.permutation(n + m)[:n], j] = 1.0
        stats = _mmd2_from_indicator(k, a)
        hits += int(np.count_nonzero(stats >= obs - 1e-12 * abs(obs)))
    return MMDResult(mmd2=obs, p_value=(1 + hits) / (1 + n_perm), sigma=sigma, n=n, m=m)
