"""Progress of long work, reported through whatever the caller installs (nothing by default).

Library code never prints. It announces what it is doing through :func:`current`:

    with progress.stage("training the VAE"):           # a named step with its elapsed time
        with progress.bar(total=epochs, unit="epoch") as bar:   # a count that moves
            for epoch in ...:
                ...
                bar.update(1)
    progress.note("VAE: loaded from the cache (digits-weights-…)")   # a one-line fact

    with progress.counting(n_images, "labelling decoded samples", "image"):  # a bar that code
        ...                                                   # further down moves:
        progress.advance(len(batch))                          # (no-op outside counting)

The default reporter (:class:`Silent`) does nothing, so tests and library users see nothing
unless they ask. The command line installs a console reporter (:mod:`cage_eval.cli.console`) with
:func:`use` for the duration of a command: stage lines with elapsed time on stderr always (so
logs show where time went) and progress bars only when stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Protocol


class Bar(Protocol):
    """A counter that moves: ``update(n)`` adds ``n`` done units."""

    def update(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    """What a progress reporter provides (see the module docstring)."""

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]: ...

    def bar(self, total: int | None, desc: str, unit: str) -> contextlib.AbstractContextManager[Bar]: ...

    def note(self, text: str) -> None: ...


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


class Silent:
    """Reports nothing (the default)."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def bar(self, total: int | None, desc: str, unit: str) -> Iterator[Bar]:
        yield _NoBar()

    def note(self, text: str) -> None:
        pass


_SILENT = Silent()
_CURRENT: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("cage_progress",
                                                                           default=None)


def current() -> Reporter:
    """The reporter installed by :func:`use`, else :class:`Silent`."""
    reporter = _CURRENT.get()
    return _SILENT if reporter is None else reporter


@contextlib.contextmanager
def use(reporter: Reporter) -> Iterator[Reporter]:
    """Install ``reporter`` for the block."""
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


def stage(name: str) -> contextlib.AbstractContextManager[None]:
    """A named step of the current reporter."""
    return current().stage(name)


def bar(total: int | None, desc: str, unit: str = "it") -> contextlib.AbstractContextManager[Bar]:
    """A progress bar of the current reporter."""
    return current().bar(total, desc, unit)


_COUNTING: contextvars.ContextVar[Bar | None] = contextvars.ContextVar("cage_counting",
                                                                     default=None)


@contextlib.contextmanager
def counting(total: int | None, desc: str, unit: str = "it") -> Iterator[Bar]:
    """A bar of the current reporter that :func:`advance` moves from anywhere inside the block
    (the loop that knows the total is not the one that does the work)."""
    with bar(total, desc, unit) as b:
        token = _COUNTING.set(b)
        try:
            yield b
        finally:
            _COUNTING.reset(token)


def advance(n: int = 1) -> None:
    """Move the innermost :func:`counting` bar by ``n`` (nothing outside one)."""
    b = _COUNTING.get()
    if b is not None:
        b.update(n)


def note(text: str) -> None:
    """A one-line fact for the current reporter (e.g. "loaded from the cache")."""
    current().note(text)
