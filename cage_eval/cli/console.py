"""The command line's progress reporter: stage lines with elapsed time, bars on a terminal.

Installed for every command by the ``cage-eval`` group (``--quiet`` silences it). Everything goes
to stderr, so stdout keeps only a command's result. Stage lines are printed whether or not stderr
is a terminal (logs show where time went); tqdm bars only on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import IO


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


class Console:
    """A :class:`cage_eval.progress.Reporter` writing to ``stream`` (default stderr).

    Parameters
    ----------
    stream : text stream
    quiet : bool
        Report nothing.
    bars : bool, optional
        Draw progress bars; default: when ``stream`` is a terminal.
    """

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False,
                 bars: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.bars = (isatty() if bars is None else bars) and not quiet
        self.started = time.perf_counter()
        self.depth = 0

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        clock = time.perf_counter() - self.started
        print(f"[{clock:7.1f} s] {'  ' * self.depth}{text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._line(f"{name} ...")
        start = time.perf_counter()
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        self._line(f"{name}: {time.perf_counter() - start:.1f} s")

    @contextlib.contextmanager
    def bar(self, total: int | None, desc: str, unit: str) -> Iterator[object]:
        if not self.bars:
            yield _NoBar()
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=f"{'  ' * self.depth}{desc}", unit=unit, file=self.stream,
                  leave=False, dynamic_ncols=True, mininterval=0.5) as bar:
            yield bar

    def note(self, text: str) -> None:
        self._line(text)
