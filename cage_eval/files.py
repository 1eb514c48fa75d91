"""Safe writing: atomic files, CSV text, staged run directories, run locks, SIGTERM as Ctrl-C.

Standard library only. Every file the project writes goes through :func:`atomic_write_bytes` (a
temporary file in the same directory, fsync, rename), so a crash never leaves a half-written file
that looks complete; a run directory is built in a hidden sibling and moved into place whole
(:func:`staged_run_dir`), and never over a directory that holds a study
(:func:`check_replaceable`). Commands that change a published run hold :func:`run_lock`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cage_eval import runs
from cage_eval.errors import RunDirError


def _file_mode() -> int:
    """The mode a plainly created file gets under the current umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()
#: The mode a plainly created file gets under this process's umask.
FILE_MODE = _FILE_MODE


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


def atomic_write_many(directory: str | os.PathLike[str], contents: Mapping[str, bytes]) -> list[Path]:
    """Write several files into ``directory`` all or nothing; return their paths.

    Every file is first written and synced under a temporary name (with the mode an ordinary
    ``open`` would give it); only when all are on disk are they renamed into place, so a failure
    leaves none of them, old or new, half-written.

    Raises
    ------
    OSError
        The directory cannot be created or written; no temporary file is left behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in contents.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            staged.append((tmp, directory / name))
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    return [final for _, final in staged]


# --------------------------------------------------------------------------- run locks

_LOCKS_HELD: dict[str, list[int]] = {}   # real path of a run -> [lock fd, nesting depth]
_LOCKS_GUARD = threading.Lock()


def _lock_holder(fd: int) -> str:
    """``process N`` from the lock file's ``pid activity`` line, or ``another process``."""
    with contextlib.suppress(OSError, ValueError):
        words = os.pread(fd, 200, 0).decode("ascii").split()
        if words and words[0].isdigit():
            return f"{' '.join(words[1:2]) or 'used'} by process {int(words[0])}"
    return _NO_HOLDER


#: What :func:`_lock_holder` says when the lock file names no process (yet).
_NO_HOLDER = "used by another process"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], activity: str) -> Iterator[None]:
    """Hold the run's exclusive lock (``RUN/.cage-eval.lock``) while the block runs.

    An operating-system lock (``flock``) on a file in the run: the kernel releases it when the
    process ends, however it ends, so a killed command never leaves a stale lock. The holder writes
    ``<pid> <activity>`` into the file, so a second process is told who holds it, and removes the
    file when done (a process that locked a file removed meanwhile tries again, so two holders
    can never coexist). Re-entrant within one process (a command may call library functions that
    take the same lock).

    Parameters
    ----------
    run_dir : the run directory (must exist).
    activity : what the holder does, as a past participle (``published``, ``collected``, ...).

    Raises
    ------
    RunDirError
        ``RUN is being published by process N``: another process holds the lock; or the lock
        file cannot be created (no such directory, read-only run).
    """
    run_dir = Path(run_dir)
    with _locked(run_dir, run_dir / runs.LOCK, activity):
        yield


def target_lock_path(out: str | os.PathLike[str]) -> Path:
    """``PARENT/.<name>.cage-eval.lock``: the lock of a directory being built at ``out``."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    return parent / f".{out.name}{runs.TARGET_LOCK_SUFFIX}"


@contextlib.contextmanager
def target_lock(out: str | os.PathLike[str], activity: str) -> Iterator[None]:
    """Hold the lock of the directory ``out`` a command builds, from its first step to its last.

    The lock file sits next to ``out`` (:func:`target_lock_path`, the parent is created), so it
    exists before ``out`` does: a second command building the same ``out`` (``generate``,
    ``export-batch``) is refused with ``OUT is being generated by process N``. Same semantics as
    :func:`run_lock` otherwise (released when the process ends, however it ends; re-entrant).
    """
    out = Path(out)
    lock = target_lock_path(out)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror}); "
                          "choose a writable --out") from None
    with _locked(out, lock, activity):
        yield


@contextlib.contextmanager
def _locked(target: Path, lock: Path, activity: str) -> Iterator[None]:
    key = os.path.realpath(lock)
    with _LOCKS_GUARD:
        held = _LOCKS_HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _LOCKS_GUARD:
                held[1] -= 1
        return
    fd = _acquire(target, lock, activity)
    with _LOCKS_GUARD:
        _LOCKS_HELD[key] = [fd, 1]
    try:
        yield
    finally:
        with _LOCKS_GUARD:
            del _LOCKS_HELD[key]
        with contextlib.suppress(OSError):
            if _same_file(fd, lock):  # not when the run was moved (replaced)
                os.unlink(lock)  # while still holding it: see _acquire
        os.close(fd)  # releases the flock


def _acquire(target: Path, lock: Path, activity: str) -> int:
    """Open, lock and stamp the lock file; the locked descriptor."""
    for _ in range(20):
        fd = _open_lock_file(target, lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _lock_holder(fd)
            for _ in range(40):  # the holder stamps its pid just after locking: give it a moment
                if holder != _NO_HOLDER:
                    break
                time.sleep(0.025)
                holder = _lock_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(f"{target}: cannot lock the run ({exc.strerror})") from None
            raise RunDirError(f"{target} is being {holder}; wait for it to finish, then run "
                              "the command again") from None
        if _same_file(fd, lock):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {activity}\n".encode("ascii", "replace"), 0)
            return fd
        os.close(fd)  # the holder removed it as we locked it: lock the new one
    raise RunDirError(f"{lock}: keeps changing; is another program removing it?")


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd``."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _open_lock_file(target: Path, lock: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(lock, flags, _FILE_MODE)
    except FileNotFoundError:
        raise RunDirError(f"{target}: no such run directory") from None
    except OSError as exc:
        raise RunDirError(f"{lock}: cannot open the lock file ({exc.strerror}); the "
                          "directory must be writable") from None


# --------------------------------------------------------------------------- run directories

#: How many names an error message lists before it says "..."
_SHOWN = 4


#: A directory with more entries than this is not replaced (it is surely not a run directory).
MAX_REPLACE_ENTRIES = 100_000


def _scan(out: Path) -> tuple[tuple[Path, list[str]] | None, Path | None]:
    """Walk ``out`` (symlinks not followed): the first directory holding study files (and their
    names), and the first run directory strictly below ``out``."""
    study: tuple[Path, list[str]] | None = None
    run: Path | None = None
    seen = 0
    for dirpath, dirnames, filenames in os.walk(out, followlinks=False):
        seen += len(dirnames) + len(filenames)
        if seen > MAX_REPLACE_ENTRIES:
            raise RunDirError(f"{out}: holds over {MAX_REPLACE_ENTRIES:,} files; refusing to "
                              "replace it; write to a new directory")
        found = [n for n in runs.STUDY_FILES if n in filenames or n in dirnames]
        if found and study is None:
            study = (Path(dirpath), found)
        if runs.MANIFEST in filenames and Path(dirpath) != out and run is None:
            run = Path(dirpath)
    return study, run


def _within(path: Path, root: Path) -> bool:
    """True when ``path`` is ``root`` or below it (both resolved)."""
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


# --------------------------------------------------------------------------- what a command owns


@dataclass(frozen=True)
class Maker:
    """A command that builds whole directories, and how to recognise one it made.

    ``command`` is recorded in the marker (:data:`cage_eval.runs.RUN_MARKER`) of every directory
    it builds. A directory made before markers existed is recognised by its contents: a complete
    ``manifest.json`` of this schema (``manifest=True``), or holding ``key`` and nothing but
    ``names`` (plus what later commands add, :data:`cage_eval.runs.LATER_ENTRIES`).
    """

    command: str
    names: frozenset[str]
    manifest: bool = False
    key: str = ""


#: ``cage-eval generate``: run directories.
GENERATE = Maker("cage-eval generate", frozenset(runs.RUN_ENTRIES), manifest=True)

#: Hidden names of cage-eval's own temporary files and directories (an atomic write's
#: ``.NAME.<random>.tmp``, a stage's ``.NAME.partial-<random>``, a replaced run's ``.NAME.old-<random>``).
_OWN_TEMPORARY = re.compile(r"^\..+(\.tmp|\.partial-[A-Za-z0-9_]+|\.old-[A-Za-z0-9_]+)$")


#: What file browsers drop into any folder they show; never a reason to keep a run.
_OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _names(found: Sequence[str]) -> str:
    return ", ".join(found[:_SHOWN]) + (f", ... ({len(found)} in all)" if len(found) > _SHOWN
                                        else "")


def read_marker(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a directory cage-eval built (``made_by``, ``run_id``, ``entries``), or None
    when it has none or an unreadable one."""
    path = Path(directory) / runs.RUN_MARKER
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 1_000_000:
            return None
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (not isinstance(marker, dict) or not isinstance(marker.get("made_by"), str)
            or not isinstance(marker.get("entries"), list)):
        return None
    return marker


def write_marker(directory: str | os.PathLike[str], maker: Maker, run_id: str | None) -> None:
    """Write the marker of a directory ``maker`` is building: what it holds now is its own."""
    directory = Path(directory)
    entries = sorted({*os.listdir(directory), runs.RUN_MARKER})
    atomic_write_json(directory / runs.RUN_MARKER,
                      {"made_by": maker.command, "run_id": run_id, "entries": entries})


def _legacy(out: Path, maker: Maker) -> bool:
    """Whether ``out`` (no marker) is recognisably a directory ``maker`` made before markers."""
    if maker.manifest:
        try:
            manifest = json.loads((out / runs.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return (isinstance(manifest, dict) and manifest.get("complete") is True
                and manifest.get("schema_version") == runs.SCHEMA_VERSION)
    return bool(maker.key) and (out / maker.key).is_file()


def _check_owned(out: Path, maker: Maker) -> None:
    """Refuse unless ``out`` was made by ``maker`` and holds nothing else (see
    :func:`check_replaceable`)."""
    present = sorted(n for n in os.listdir(out)
                     if not _OWN_TEMPORARY.match(n) and n not in _OS_LITTER)
    if not present or present == [runs.LOCK]:
        return
    marker = read_marker(out)
    if marker is None:
        if not _legacy(out, maker):
            raise RunDirError(
                f"{out}: not made by `{maker.command}` (it holds {_names(present)} and no "
                f"{runs.RUN_MARKER} marker); --force replaces only a directory that `"
                f"{maker.command}` wrote. Move it away or choose another --out")
        owned = set(maker.names)
    elif marker["made_by"] != maker.command:
        raise RunDirError(f"{out}: was made by `{marker['made_by']}`, not by `{maker.command}`; "
                          "--force never replaces another command's output; choose another --out")
    else:
        owned = {str(n) for n in marker["entries"]}
    foreign = [n for n in present if n not in owned and n not in runs.LATER_ENTRIES]
    if foreign:
        raise RunDirError(
            f"{out}: holds {_names(foreign)}, not made by cage-eval; --force would delete "
            f"{'it' if len(foreign) == 1 else 'them'}. Move {'it' if len(foreign) == 1 else 'them'}"
            f" out of {out} first, or choose another --out")


def check_replaceable(out: str | os.PathLike[str], *, keep: Sequence[str | os.PathLike[str]] = (),
                      maker: Maker = GENERATE) -> None:
    """Refuse to replace ``out`` unless ``maker`` made it and nothing in it would be lost.

    The one place that decides what a command may replace. Losing a published study or a
    user's file is worse than any inconvenience, so ``out`` must

    - not be one of ``keep`` (the runs the command reads) or a directory above one;
    - hold no publishing ledger (MTurk or Turkle), blinding map, frozen analysis plan or answers
      anywhere inside it, and no other run directory;
    - carry the marker ``maker`` wrote when it built ``out`` (:data:`cage_eval.runs.RUN_MARKER`),
      or, made before markers existed, be recognisable as ``maker``'s (a complete
      ``manifest.json`` for a run);
    - hold nothing but what ``maker`` wrote there and what later commands add (a ``thesis.txt``
      dropped into a run stops the replacement).

    An empty directory (or one holding only a lock file) is always replaceable.

    Raises
    ------
    RunDirError
        Naming the path, what is there and how to keep it.
    """
    out = Path(out)
    for run in keep:
        if _within(Path(run), out):
            raise RunDirError(f"{out}: is the run directory {run} or holds it; writing here would "
                              "replace the run being read; choose a new, separate directory")
    if out.is_symlink():
        raise RunDirError(f"{out}: is a symbolic link; give the directory itself or a new one")
    if not out.is_dir():
        return
    study, run = _scan(out)
    if study is not None:
        where, found = study
        raise RunDirError(
            f"{where}: holds a study ({_names(found)}); replacing {out} would orphan published "
            f"HITs and lose the blinding map and answers. Archive it first (e.g. `mv {out} "
            f"{out.name}-archive` or `tar czf {out.name}.tgz {out}`) and write to a new directory")
    if run is not None:
        raise RunDirError(f"{out}: contains the run directory {run}; replacing {out} would delete "
                          "it; write to a directory that holds no run")
    _check_owned(out, maker)


def _empty(out: Path) -> bool:
    return not any(n != runs.LOCK for n in os.listdir(out))


@contextlib.contextmanager
def staged_run_dir(out: str | os.PathLike[str], *, force: bool = False,
                   keep: Sequence[str | os.PathLike[str]] = (), maker: Maker = GENERATE,
                   run_id: str | None = None, activity: str = "generated") -> Iterator[Path]:
    """Build a directory in a hidden sibling and move it into place only on success.

    A failure (any exception) removes the staging directory, so no partial run directory is ever
    left looking complete. The stage carries ``maker``'s marker (with ``run_id``) from its first
    moment, so the directory appears with it, atomically. The block runs under the lock of
    ``out`` (:func:`target_lock`; a second command building ``out`` is refused) and, when ``out``
    exists, under its run lock too (no publish can start while it is being replaced). ``out``
    must not exist, or be empty, unless ``force`` is set, in which case the old directory is
    replaced only after the new one is complete, and only if :func:`check_replaceable` allows it
    (checked before and again at the moment of the swap). ``keep`` names directories the
    command reads, which ``out`` must not be or contain.
    """
    out = Path(out)
    with contextlib.ExitStack() as locks:
        locks.enter_context(target_lock(out, activity))
        if out.is_symlink():
            raise RunDirError(f"{out}: is a symbolic link; give the directory itself or a new one")
        if out.exists() and not out.is_dir():
            raise RunDirError(f"{out}: exists and is not a directory; choose another --out")
        check_replaceable(out, keep=keep, maker=maker)
        if out.is_dir() and not _empty(out):
            if not force:
                raise RunDirError(f"{out}: directory exists and is not empty; pass --force to "
                                  "replace it")
            locks.enter_context(run_lock(out, "replaced"))
            check_replaceable(out, keep=keep, maker=maker)  # a publish may have run meanwhile
        parent = out.parent if str(out.parent) else Path(".")
        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
            stage.chmod(0o777 & ~(0o666 ^ _FILE_MODE))  # mkdtemp gives 0700; an ordinary folder
            write_marker(stage, maker, run_id)
        except OSError as exc:
            raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror}); "
                              "choose a writable --out") from None
        try:
            yield stage
        except BaseException:
            # SIGTERM (torchrun stopping a job after another process died) must not cut this
            # short: one arriving before the handlers are swapped is caught here and the removal
            # retried.
            while True:
                try:
                    _discard(stage)
                    break
                except KeyboardInterrupt:
                    continue
            raise
        try:
            write_marker(stage, maker, run_id)
            _move_into_place(stage, out, parent, keep, maker)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise


def _move_into_place(stage: Path, out: Path, parent: Path,
                     keep: Sequence[str | os.PathLike[str]], maker: Maker) -> None:
    """Rename ``stage`` to ``out``; an existing ``out`` is checked again under its lock, then
    moved aside and deleted."""
    if not out.exists():
        os.replace(stage, out)
        return
    with run_lock(out, "replaced"):
        check_replaceable(out, keep=keep, maker=maker)  # a publish may have started meanwhile
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "run")
        os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


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


#: What the first bytes of every page ``cage-eval report`` writes hold (its ``<head>``).
REPORT_SIGNATURE = b'<meta name="generator" content="cage-eval report'
_SIGNATURE_WINDOW = 4096


def check_report_target(path: str | os.PathLike[str]) -> Path:
    """Refuse to write a report at ``path`` unless it is new or a report cage-eval wrote; return it.

    A report may replace only a previous report (recognised by :data:`REPORT_SIGNATURE` in its
    first 4 KiB), never a run file (``results.csv``, ``hit_items.csv``, ``manifest.json``, ...)
    or any file it did not write, and is never written under a run file's name.

    Raises
    ------
    RunDirError
        Naming the path and what is there.
    """
    path = Path(path)
    if path.is_symlink():
        raise RunDirError(f"{path}: is a symbolic link; give a plain path for the report")
    if path.exists():
        if not path.is_file():
            raise RunDirError(f"{path}: exists and is not a file; choose another --out")
        try:
            with path.open("rb") as fh:
                head = fh.read(_SIGNATURE_WINDOW)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot be read ({exc.strerror}); choose another --out") \
                from None
        if REPORT_SIGNATURE not in head:
            raise RunDirError(f"{path}: exists and is not a cage-eval report; a report replaces "
                              "only a report it wrote; choose a new file for --out")
    elif path.name in runs.RUN_FILE_NAMES:
        raise RunDirError(f"{path}: is named like a run file ({path.name}); a report never takes "
                          "a run file's name; choose e.g. report.html")
    return path


def writable_directory(path: str | os.PathLike[str], what: str = "files") -> Path:
    """Create ``path`` if needed and check that ``what`` can be written in it; return it.

    Raises
    ------
    RunDirError
        ``path`` is a file, or the directory cannot be created or written.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory; choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".cage-eval-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{out}: cannot write {what} here ({exc.strerror}); choose a "
                          "writable directory") from None
    return out


def content_key(obj: object, digits: int = 12) -> str:
    """The cache key of a JSON-able description: the first ``digits`` hex digits of the SHA-256 of
    its canonical JSON (sorted keys). Every cache of the project names its entries with this, so
    the same settings always find the same entry and any change finds a new one."""
    blob = json.dumps(obj, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:digits]
