"""Checkpoints of sharded work: the results of completed units, found again by a rerun.

A unit of work (:mod:`cage.compute.distributed`) has a ``key``, a digest of everything its result depends
on (the generator and classifier as computed, the prior block, the direction, alpha, the
attribute, the batch size). Once computed, its arrays are saved here; a rerun of the same study,
on any number of processes, reads them back instead of decoding again.

Layout: one directory (for a run directory ``runs/x``, the hidden sibling
``runs/.x.checkpoints``, see :func:`checkpoint_dir`) of ``part-r<rank>-<random>.npz`` files, each
holding the arrays of several units as ``<key>__<name>``. Every file is written whole (temporary
file, fsync, rename) with SIGTERM and SIGINT held off, so a killed process leaves no torn file. A
rank saves what it completed at the end of its share of every map, when it stops for any reason
but SIGKILL, and at most every ``every`` seconds in between. Files that cannot be read are
ignored (their units are computed again).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

from cage_eval import files

#: Seconds between saves while a rank works through its share of a map.
SAVE_EVERY_S = 60.0


def checkpoint_dir(out: str | os.PathLike[str]) -> Path:
    """Where the checkpoints of run directory ``out`` live: ``.<name>.checkpoints`` next to it."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.checkpoints"


class CheckpointStore:
    """Unit results saved in ``directory`` (created on the first save).

    Parameters
    ----------
    directory : path
    rank : int
        Part of every file name written (ranks on a shared file system never collide).
    every : float
        Seconds between saves of completed units while work goes on.
    """

    def __init__(self, directory: str | os.PathLike[str], *, rank: int = 0,
                 every: float = SAVE_EVERY_S) -> None:
        self.directory = Path(directory)
        self.rank = rank
        self.every = every
        self.saved_files = 0
        self._pending: dict[str, dict[str, np.ndarray]] = {}
        self._last_save = time.monotonic()
        self._index: dict[str, tuple[np.lib.npyio.NpzFile, list[str]]] | None = None

    # ------------------------------------------------------------------ reading

    def _scan(self) -> dict[str, tuple[np.lib.npyio.NpzFile, list[str]]]:
        index: dict[str, tuple[np.lib.npyio.NpzFile, list[str]]] = {}
        if not self.directory.is_dir():
            return index
        for path in sorted(self.directory.glob("part-*.npz")):
            try:
                npz = np.load(path, allow_pickle=False)
                names = list(npz.files)
            except (OSError, ValueError, zipfile.BadZipFile):
                continue
            mine: dict[str, list[str]] = {}
            for entry in names:
                key, _, name = entry.partition("__")
                mine.setdefault(key, []).append(name)
            for key, unit_names in mine.items():
                index.setdefault(key, (npz, unit_names))
        return index

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays saved for ``key``, or None."""
        if key in self._pending:
            return self._pending[key]
        if self._index is None:
            self._index = self._scan()
        found = self._index.get(key)
        if found is None:
            return None
        npz, names = found
        try:
            return {name: npz[f"{key}__{name}"] for name in names}
        except (OSError, ValueError, zipfile.BadZipFile):
            return None

    # ------------------------------------------------------------------ writing

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Keep ``arrays`` for ``key``; save everything kept if the last save is ``every`` old."""
        self._pending[key] = {name: np.asarray(a) for name, a in arrays.items()}
        if time.monotonic() - self._last_save >= self.every:
            self.flush()

    def flush(self) -> None:
        """Save every kept unit in one new file (nothing to do when none is kept)."""
        self._last_save = time.monotonic()
        if not self._pending:
            return
        entries = {f"{key}__{name}": a for key, arrays in self._pending.items()
                   for name, a in arrays.items()}
        with files.signals_deferred():
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".part.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **entries)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.directory / f"part-r{self.rank}-{uuid.uuid4().hex[:12]}.npz")
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        self.saved_files += 1
        self._pending.clear()

    def close(self) -> None:
        """Save what is kept and close the files read."""
        try:
            self.flush()
        finally:
            for npz, _ in (self._index or {}).values():
                npz.close()
            self._index = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove(directory: str | os.PathLike[str]) -> None:
    """Delete a checkpoint directory (another rank may be deleting it too)."""
    with files.signals_deferred():
        shutil.rmtree(directory, ignore_errors=True)
