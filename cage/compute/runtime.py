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


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's core count."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (at most the CPUs available); return the number set.

    One thread is the default of the command line: the built-in models are small, and on a shared
    machine torch's OpenMP threads wait on each other whenever another process holds a core
    (measured: 150 steps of the mixture-of-Gaussians MAF took 14.5 s on 1 thread and 240 s on 2
    while other jobs loaded the 2 cores; README, "Speed").
    """
    n = max(1, min(int(threads), available_cpus()))
    torch.set_num_threads(n)
    return n
