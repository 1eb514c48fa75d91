"""How torch runs: threads and deterministic algorithms for a block of work.

Decoding and training run on a fixed number of torch threads with deterministic algorithms, so
every number computed from decoded images is the same on every machine whatever its core count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def deterministic_torch(threads: int = 1) -> Iterator[None]:
    """Run a block with ``threads`` torch threads and deterministic algorithms, then restore."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` torch threads (None: leave the setting alone), then restore."""
    if threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)
