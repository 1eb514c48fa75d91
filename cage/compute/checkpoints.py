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
but SIGKILL, and at most every ``every`` seconds in between.

Nothing read back is trusted unchecked. Every file records the run it belongs to (``__meta__``:
the *binding*, a digest of the resolved config, the code, the package versions and the output
directory, :mod:`cage.run.pipeline` computes it) and every unit a digest of the binding, its key and
its arrays (``<key>__#sha256``). A file that cannot be read or is bound to another run is not
used (:attr:`CheckpointStore.ignored`); a unit whose digest does not match sets
:attr:`CheckpointStore.tampered`, and :class:`cage.compute.distributed.Workers` then discards every
checkpoint of the run (:class:`Mismatch`). Resumed units are also validated against the units
computed or recomputed in the same map (names, dtypes, shapes, finite values) and a random sample
of them is recomputed and compared exactly (:func:`spot_check_count`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
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
#: The least share of resumed units that is recomputed and compared (at least one unit).
SPOT_CHECK_SHARE = 0.02
#: Bumped when the file layout changes (older files are then bound to no run).
FORMAT = 2
META = "__meta__"
DIGEST = "#sha256"


class Mismatch(Exception):
    """Checkpoints of this run that do not hold what computing their units gives (edited,
    damaged or forged): every checkpoint of the run is discarded and the work done again."""


def checkpoint_dir(out: str | os.PathLike[str]) -> Path:
    """Where the checkpoints of run directory ``out`` live: ``.<name>.checkpoints`` next to it."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.checkpoints"


def spot_check_count(resumed: int) -> int:
    """How many of ``resumed`` units are recomputed: at least 2 %, at least one (none of none)."""
    return 0 if resumed <= 0 else max(1, math.ceil(SPOT_CHECK_SHARE * resumed))


def unit_digest(binding: str, key: str, arrays: dict[str, np.ndarray]) -> str:
    """The digest a unit's arrays are saved with: the run's binding, the unit's key, and every
    array's name, dtype, shape and bytes."""
    h = hashlib.sha256(f"{FORMAT}:{binding}:{key}".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """True when ``a`` and ``b`` hold the same names with arrays of the same dtype, shape and
    bytes (NaN equal to itself: a bitwise comparison)."""
    if set(a) != set(b):
        return False
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype != y.dtype or x.shape != y.shape \
                or np.ascontiguousarray(x).tobytes() != np.ascontiguousarray(y).tobytes():
            return False
    return True


def _text(array: np.ndarray) -> str:
    return bytes(np.asarray(array, dtype=np.uint8)).decode("utf-8")


class CheckpointStore:
    """Unit results saved in ``directory`` (created on the first save).

    Parameters
    ----------
    directory : path
    rank : int
        Part of every file name written (ranks on a shared file system never collide).
    every : float
        Seconds between saves of completed units while work goes on.
    binding : str
        The run's binding (:meth:`bind`); files bound to anything else are not read.

    Attributes
    ----------
    ignored : int
        Files found that could not be read or belong to another run.
    tampered : str or None
        Why a file of this run cannot be trusted (a unit that does not match its digest).
    """

    def __init__(self, directory: str | os.PathLike[str], *, rank: int = 0,
                 every: float = SAVE_EVERY_S, binding: str = "") -> None:
        self.directory = Path(directory)
        self.rank = rank
        self.every = every
        self.binding = binding
        self.saved_files = 0
        self.ignored = 0
        self.tampered: str | None = None
        self._pending: dict[str, dict[str, np.ndarray]] = {}
        self._last_save = time.monotonic()
        self._index: dict[str, dict[str, np.ndarray]] | None = None

    def bind(self, binding: str) -> None:
        """Read and write checkpoints of the run ``binding`` names from now on."""
        if binding != self.binding:
            self.binding = binding
            self._index = None

    # ------------------------------------------------------------------ reading

    def _scan(self) -> dict[str, dict[str, np.ndarray]]:
        index: dict[str, dict[str, np.ndarray]] = {}
        self.ignored = 0
        if not self.directory.is_dir():
            return index
        for path in sorted(self.directory.glob("part-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as npz:
                    meta = json.loads(_text(npz[META]))
                    bound = isinstance(meta, dict) and meta.get("format") == FORMAT \
                        and meta.get("binding") == self.binding
                    entries = {name: npz[name] for name in npz.files if name != META} \
                        if bound else {}
            except (OSError, ValueError, KeyError, UnicodeDecodeError, zipfile.BadZipFile,
                    EOFError):
                bound = False
            if not bound:
                self.ignored += 1
                continue
            units: dict[str, dict[str, np.ndarray]] = {}
            for entry, array in entries.items():
                key, _, name = entry.partition("__")
                units.setdefault(key, {})[name] = array
            for key, arrays in units.items():
                digest = arrays.pop(DIGEST, None)
                if digest is None or _text(digest) != unit_digest(self.binding, key, arrays):
                    self.tampered = self.tampered or (
                        f"{path.name}: unit {key[:12]} does not match its digest")
                    continue
                index.setdefault(key, arrays)
        return index

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays saved for ``key``, or None."""
        if key in self._pending:
            return self._pending[key]
        if self._index is None:
            self._index = self._scan()
        return self._index.get(key)

    def forget(self) -> None:
        """Use none of the checkpoints found so far (they are being discarded)."""
        self._index = {}
        self._pending.clear()
        self.tampered = None

    def discard(self) -> int:
        """Delete every checkpoint file in the directory (every rank idle); return how many."""
        self.forget()
        gone = 0
        with files.signals_deferred():
            for path in sorted(self.directory.glob("part-*.npz")) \
                    if self.directory.is_dir() else []:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    gone += 1
        return gone

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
        meta = json.dumps({"format": FORMAT, "binding": self.binding}).encode()
        entries: dict[str, np.ndarray] = {META: np.frombuffer(meta, dtype=np.uint8)}
        for key, arrays in self._pending.items():
            entries.update({f"{key}__{name}": a for name, a in arrays.items()})
            digest = unit_digest(self.binding, key, arrays).encode()
            entries[f"{key}__{DIGEST}"] = np.frombuffer(digest, dtype=np.uint8)
        with files.signals_deferred():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        """Save what is kept and let go of what was read."""
        try:
            self.flush()
        finally:
            self._index = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove(directory: str | os.PathLike[str]) -> None:
    """Delete a checkpoint directory (another rank may be deleting it too)."""
    with files.signals_deferred():
        shutil.rmtree(directory, ignore_errors=True)
