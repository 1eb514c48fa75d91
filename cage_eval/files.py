"""Safe writing: atomic files, CSV text, staged run directories, SIGTERM as Ctrl-C.

Standard library only. Every file the project writes goes through :func:`atomic_write_bytes` (a
temporary file in the same directory, fsync, rename), so a crash never leaves a half-written file
that looks complete; a run directory is built in a hidden sibling and moved into place whole
(:func:`staged_run_dir`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cage_eval.errors import RunDirError


def _file_mode() -> int:
    """The mode a plainly created file gets under the current umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it, or ``mode``
    (e.g. ``0o600`` for secrets: the temporary file is private from its first byte).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, mode: int | None = None
) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON (sorted keys, 2-space indent, trailing newline) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as CSV text with a fixed column order and ``\\n`` line endings."""
    rows = list(rows)
    # The csv module quotes values holding "\n" but not a lone "\r"; quote everything in that rare
    # case so that every value reads back exactly.
    has_cr = any(isinstance(v, str) and "\r" in v for row in rows for v in row.values())
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf,
        fieldnames=list(columns),
        lineterminator="\n",
        extrasaction="raise",
        quoting=csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL,
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def atomic_write_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write rows as CSV atomically, columns in the given order."""
    atomic_write_text(path, csv_text(rows, columns))


# --------------------------------------------------------------------------- run directories


@contextlib.contextmanager
def staged_run_dir(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Build a run directory in a hidden sibling and move it into place only on success.

    A failure (any exception) removes the staging directory, so no partial run directory is ever
    left looking complete. ``out`` must not exist, or be empty, unless ``force`` is set, in which
    case the old directory is replaced only after the new one is complete.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RunDirError(f"{out}: directory exists and is not empty; pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
        stage.chmod(0o777 & ~(0o666 ^ _FILE_MODE))  # mkdtemp gives 0700; a run is an ordinary folder
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror}); "
                          "choose a writable --out") from None
    try:
        yield stage
    except BaseException:
        # SIGTERM (torchrun stopping a job after another process died) must not cut this short:
        # one arriving before the handlers are swapped is caught here and the removal retried.
        while True:
            try:
                _discard(stage)
                break
            except KeyboardInterrupt:
                continue
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "run")
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)


def _discard(stage: Path) -> None:
    with signals_deferred():
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` while the block runs (main thread only).

    A terminated ``generate`` then unwinds like Ctrl-C, so :func:`staged_run_dir` removes its
    staging directory instead of leaving a hidden partial run behind.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)




@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT off while the block runs (main thread), then deliver them.

    For cleanup that must not be cut short: removing a staging directory, saving checkpoints.
    A signal that arrives meanwhile is noted and raised again when the block ends, unless the
    block runs while an exception is being handled (the process is failing anyway, and that
    exception says why). Handlers are swapped rather than the signals masked: a masked
    process-directed signal would go to another thread, and Python runs its handler anyway.
    """
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held and sys.exc_info()[0] is None:
            signal.raise_signal(held[0])
