"""The one seed derivation of a run: every random stage draws from a seed named by its parts.

``stage_seed(master, "null", "permutation", "thick")`` is a 31-bit integer derived from the master
seed and the stage's name by SHA-256, so stages are independent of the order in which they run
(which is what makes a run under torchrun byte-identical to one process) and adding a stage never
shifts the seeds of the others.
"""

from __future__ import annotations

import hashlib

__all__ = ["stage_seed"]


def stage_seed(seed: int, *parts: str) -> int:
    """A 31-bit seed for one named stage, derived from the master seed (order independent).

    Parameters
    ----------
    seed : int
        The run's master seed (``[experiment] seed``).
    *parts : str
        The stage's name, e.g. ``("prior", "0")`` or ``("labels", "3")``.
    """
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
