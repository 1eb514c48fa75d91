"""Null distributions for GATE and delta tau (docs/method.md §3).

Two constructions of "a treatment direction carrying no information about the attribute":

- **label permutation** (the paper's): shuffle the treatment attribute's labels, refit its latent
  classifier, take the refitted unit normal. The ``B`` refits are batched into one weight matrix
  (:func:`cage.engine.classifiers.fit_logreg_batched`), not a loop of scikit-learn fits;
- **random directions** (GANSpace ``get_random_dirs`` style): ``N(0, I)`` draws normalised to unit
  length.

Either way the null GATE is the GATE along the null direction with the observed outcome classifier;
p-values are :func:`cage.engine.effects.empirical_p_value`.
"""

from __future__ import annotations

import numpy as np
import torch

from cage.engine.classifiers import fit_logreg_batched


def random_directions(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` seeded unit vectors uniform on the sphere, shape (n, d), float64."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def permutation_labels(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` seeded permutations of ``y`` as columns, shape (len(y), n)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    return np.stack([rng.permutation(y) for _ in range(n)], axis=1)


def permutation_normals(
    z: np.ndarray, y: np.ndarray, n: int, *, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Unit normals of ``n`` logistic regressions refitted on permuted labels, shape (n, d).

    Parameters
    ----------
    z : array, shape (m, d)
        The latents the observed classifier was trained on.
    y : array, shape (m,)
        Its 0/1 labels.
    """
    labels = permutation_labels(y, n, seed)
    # Only the direction of a null normal matters: float32 products and a looser tolerance.
    coef, _ = fit_logreg_batched(z, labels, C=C, tol=1e-5, dtype=torch.float32)
    norms = np.linalg.norm(coef, axis=1, keepdims=True)
    # An all-zero refit (possible only in degenerate data) gets a random direction instead.
    bad = norms[:, 0] <= 0
    if bad.any():
        coef[bad] = random_directions(int(bad.sum()), z.shape[1], seed + 1)
        norms[bad] = 1.0
    return coef / norms
