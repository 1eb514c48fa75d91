"""Precomputed annotated latents: ``latents.npy`` (n, d) with ``labels.csv`` (n rows).

For users who already encoded their data (an e4e/pSp encoder, an earlier inversion, a previous
cage-eval run's ``artifacts.npz`` ``data_latents``): row ``i`` of ``labels.csv`` labels row ``i``
of ``latents.npy``. ``labels.csv`` has one column per attribute (0/1, -1/1 or true/false) and an
optional integer ``id`` column (the pairs' ``source_*_id``; default the row number).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cage.labels.attributes_file import AttributeTable, read_attribute_table
from cage_eval.errors import InputFileError


def read_precomputed(latents_path: Path, labels_path: Path, *,
                     latent_dim: int) -> tuple[np.ndarray, AttributeTable]:
    """Load and check the pair of files.

    Returns
    -------
    latents : np.ndarray, shape (n, latent_dim), float32
    table : AttributeTable

    Raises
    ------
    InputFileError
        Not a numeric 2-D ``.npy`` (pickled arrays are refused), a latent size other than the
        generator's, non-finite values, or a row count that differs from the labels'.
    """
    try:
        raw = np.load(latents_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{latents_path}: not a readable .npy array ({exc}); save it with "
                             "numpy.save(path, latents)") from None
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.number):
        raise InputFileError(f"{latents_path}: holds a {raw.dtype} array of shape {raw.shape}; "
                             "expected numbers of shape (n, latent_dim)")
    if raw.shape[1] != latent_dim:
        raise InputFileError(f"{latents_path}: latents have {raw.shape[1]} dimensions but the "
                             f"generator's latent_dim is {latent_dim}; encode in the same space "
                             "(z, w or w+) as [generator] space")
    latents = raw.astype(np.float32)
    if not np.all(np.isfinite(latents)):
        bad = int((~np.isfinite(latents)).any(axis=1).sum())
        raise InputFileError(f"{latents_path}: {bad} rows hold NaN or infinite values")
    table = read_attribute_table(labels_path, names=False)
    if len(table) != latents.shape[0]:
        raise InputFileError(f"{labels_path}: {len(table)} label rows for {latents.shape[0]} "
                             f"latents in {latents_path}; row i must label latent i")
    return latents, table
