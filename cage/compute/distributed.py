"""One study over many processes: the torch.distributed process group and work dealt over it.

Under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) :func:`session` joins the process group; anywhere else it
creates nothing and every helper here is a no-op on one process. The backend follows the device
the generator computes on: ``nccl`` on CUDA (each rank on the GPU of its ``LOCAL_RANK``), ``gloo``
on the CPU (or where torch has no NCCL).

Rank 0 runs the study (classifier fits, the closed-form eq. 8 GATE, MMD, baselines, every file);
the other ranks serve it. :class:`Workers` is the whole protocol: rank 0 calls :meth:`Workers.map`
with a list of independent units of work (a probe of eq. 9 on one prior block, one batch of
counterfactual manipulations), every rank computes the units it owns, and rank 0 receives the
results in unit order; the other ranks sit in :meth:`Workers.serve` until rank 0 stops them.
Nothing floating-point is ever summed across ranks: a unit's result is computed entirely on one
rank, exactly as one process computes it, and rank 0 reassembles the pieces in global order, so
1, 2 or 4 processes write the same bytes.

Failure. Every collective waits at most ``CAGE_EVAL_DIST_TIMEOUT`` seconds (default 1800); the
one wait that covers rank 0's setup (which may train a model) waits at least a day. A process
that dies closes its connections, so the others fail at their next collective at once (and
``torchrun`` stops the rest); the error becomes a :class:`~cage_eval.errors.DistributedError`.
Results of units are saved as they complete in a
:class:`~cage.compute.checkpoints.CheckpointStore`, so a rerun resumes instead of starting over.
What a rerun reads back is checked first: only files bound to this run, every unit's digest, the
names, dtypes and shapes of its arrays, finite values, and a random sample of the resumed units
(at least 2 %, at least one per rank and map) is recomputed and compared bit for bit. Any
mismatch discards every checkpoint of the run (a :class:`~cage_eval.errors.CheckpointWarning`)
and :meth:`Workers.map` raises :class:`~cage.compute.checkpoints.Mismatch`, on which the pipeline
computes everything again.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import secrets
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cage.compute import checkpoints
from cage_eval import errors, progress
from cage_eval.errors import CageEvalError, CheckpointWarning, DistributedError

#: Seconds a collective waits for the other ranks unless ``CAGE_EVAL_DIST_TIMEOUT`` says otherwise.
DEFAULT_TIMEOUT_S = 1800.0
#: The least the other ranks wait for rank 0's setup (training a generator can take hours).
SETUP_TIMEOUT_S = 24 * 3600.0
#: The environment variables torchrun sets for every process.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Group:
    """The facts of this process's place in the job.

    Attributes
    ----------
    rank, world_size, local_rank : int
        ``0, 1, 0`` on a single process.
    backend : str or None
        ``"nccl"`` or ``"gloo"``; None on a single process.
    timeout_s : float
        How long a collective waits for the other ranks.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    control: Any = field(default=None, repr=False)

    @property
    def leader(self) -> bool:
        """True on rank 0, the process that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def launched() -> bool:
    """True when this process is one of several started by torchrun (``WORLD_SIZE > 1``)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_s() -> float:
    """``CAGE_EVAL_DIST_TIMEOUT`` in seconds, or :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get("CAGE_EVAL_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise errors.ConfigError(f"CAGE_EVAL_DIST_TIMEOUT = {raw!r}: give a number of seconds") \
            from None
    if value <= 0:
        raise errors.ConfigError(f"CAGE_EVAL_DIST_TIMEOUT = {raw!r}: must be positive")
    return value


def backend_for(device: str) -> str:
    """``"nccl"`` for a CUDA device when torch has NCCL, else ``"gloo"``."""
    import torch
    import torch.distributed as dist

    try:
        cuda = torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        cuda = False
    return "nccl" if cuda and dist.is_nccl_available() else "gloo"


@contextlib.contextmanager
def session(device: str = "cpu") -> Iterator[Group]:
    """Join torchrun's process group for the block (a single-process :class:`Group` otherwise).

    Parameters
    ----------
    device : str
        Where the generator computes (``"cpu"``, ``"cuda"``); picks the backend. With NCCL the
        process's current CUDA device is set to ``LOCAL_RANK`` first, so ``device = "cuda"``
        means a GPU of its own for every rank.

    A group that someone else initialised (a script that called ``init_process_group``) is used
    as it is and left open.
    """
    if not launched():
        yield Group()
        return
    import torch
    import torch.distributed as dist

    limit = timeout_s()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owned = not dist.is_initialized()
    if owned:
        backend = backend_for(device)
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=limit))
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"cannot join the torchrun job ({_first_line(exc)}); check "
                                   "MASTER_ADDR, MASTER_PORT and the rendezvous flags") from None
    control = dist.new_group(backend="gloo", timeout=datetime.timedelta(
        seconds=max(limit, SETUP_TIMEOUT_S)))
    group = Group(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                  backend=dist.get_backend(), timeout_s=limit, control=control)
    try:
        yield group
    finally:
        # Also after a failure: a process group left to the interpreter's exit aborts the
        # process (SIGABRT from its threads). Shutting down aborts NCCL communicators too.
        if owned:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- collectives


def _lost(group: Group, exc: BaseException, waited: float | None = None) -> DistributedError:
    """The error of a collective that failed: a peer died, hung, or the network broke."""
    error = DistributedError(
        f"rank {group.rank} of {group.world_size}: another process of this job stopped or did "
        f"not answer within {waited or group.timeout_s:g} s ({_first_line(exc)}); nothing was "
        "published, and a rerun of the same command resumes from the checkpoints")
    error.lost = True  # type: ignore[attr-defined]  # no use telling the others anything
    return error


def _broadcast(group: Group, obj: Any = None, *, control: bool = False) -> Any:
    """``obj`` from rank 0 to every rank (pickled)."""
    import torch.distributed as dist

    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0, group=group.control if control else None)
    except RuntimeError as exc:
        raise _lost(group, exc, max(group.timeout_s, SETUP_TIMEOUT_S) if control else None) \
            from None
    return box[0]


def _gather(group: Group, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0, in rank order (None elsewhere)."""
    import torch.distributed as dist

    out: list[Any] | None = [None] * group.world_size if group.leader else None
    try:
        dist.gather_object(obj, out, dst=0)
    except RuntimeError as exc:
        raise _lost(group, exc) from None
    return out


# --------------------------------------------------------------------------- work


class Unit(Protocol):
    """A unit of work: picklable, with ``key``, a digest of everything its result depends on
    (the checkpoint key; empty when it is never checkpointed)."""

    key: str


Handler = Callable[[Any], dict[str, np.ndarray]]


@dataclass
class WorkStats:
    """Units of one kind of work, over all ranks and all maps.

    Attributes
    ----------
    units, computed, resumed : int
        Units asked for; computed this run; read back from checkpoints.
    verified : int
        Resumed units recomputed and found identical (the spot check).
    decoded : int
        Rows decoded by the computed units (units that say, through ``decodes``).
    """

    units: int = 0
    computed: int = 0
    resumed: int = 0
    verified: int = 0
    decoded: int = 0


class Workers:
    """Units of work dealt over the ranks of ``group`` (see the module docstring).

    Parameters
    ----------
    group : Group
    store : cage.compute.checkpoints.CheckpointStore, optional
        Where results of checkpointed units are saved and found again.

    Every rank registers the same handlers (:meth:`register`); rank 0 calls :meth:`map`, the
    others :meth:`serve`. On one process :meth:`map` simply computes every unit.
    """

    def __init__(self, group: Group | None = None, store: Any = None) -> None:
        self.group = group if group is not None else Group()
        self.store = store
        self.handlers: dict[str, Handler] = {}
        self.stats: dict[str, WorkStats] = {}
        self.run_key = ""
        self.binding = ""
        self.spot_seed = 0
        self.ignored_files = 0
        self.discarded: str | None = None
        self.on_ready: Callable[[Any, Any], None] | None = None
        self._phase = "setup"

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def register(self, name: str, handler: Handler) -> None:
        """The function that computes units of kind ``name`` on this rank."""
        self.handlers[name] = handler

    # ------------------------------------------------------------------ rank 0

    def map(self, name: str, units: Sequence[Unit], owners: Sequence[int] | None = None, *,
            checkpoint: bool = True) -> list[dict[str, np.ndarray]]:
        """Compute ``units`` over the ranks; their results, in unit order (rank 0 only).

        ``owners[i]`` is the rank that computes unit ``i`` (default: dealt round-robin). Rank 0's
        torch thread count and deterministic-algorithms setting hold on every rank meanwhile.
        An error on any rank is raised here once every rank has answered.
        """
        if not self.group.leader:
            raise RuntimeError("Workers.map is for rank 0; the other ranks serve()")
        n = len(units)
        owners = list(owners) if owners is not None else [i % self.world_size for i in range(n)]
        if self.group.distributed:
            _broadcast(self.group, ("map", name, list(units), owners, checkpoint, _settings()))
        mine = self._share(name, units, owners, checkpoint)
        answers = _gather(self.group, mine) if self.group.distributed else [mine]
        assert answers is not None
        results: list[dict[str, np.ndarray] | None] = [None] * n
        for rank, answer in enumerate(answers):
            if answer["error"] is not None:
                raise _rebuild(answer["error"], rank, self.group)
        self._note_ignored(max(int(a.get("ignored", 0)) for a in answers))
        mismatch = next((f"rank {rank}: {a['mismatch']}" if self.group.distributed
                         else a["mismatch"] for rank, a in enumerate(answers)
                         if a.get("mismatch")), None)
        if mismatch is not None:
            self._discard(mismatch)
            raise checkpoints.Mismatch(mismatch)
        stats = self.stats.setdefault(name, WorkStats())
        stats.units += n
        for answer in answers:
            stats.verified += int(answer.get("verified", 0))
            for i, (value, resumed) in answer["results"].items():
                results[i] = value
                stats.resumed += int(resumed)
                stats.computed += int(not resumed)
                stats.decoded += 0 if resumed else int(getattr(units[i], "decodes", 0))
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise DistributedError(f"{len(missing)} units of {name!r} came back from no rank")
        return results  # type: ignore[return-value]

    def _note_ignored(self, count: int) -> None:
        """Warn (once a run) about checkpoint files that were not used."""
        if count > self.ignored_files:
            warnings.warn(CheckpointWarning(
                f"{self.store.directory}: {count} checkpoint file(s) cannot be read or belong to "
                "another run (another config, code version or output directory); not used"),
                stacklevel=3)
            self.ignored_files = count

    def _discard(self, reason: str) -> None:
        """Every checkpoint of the run is discarded: the ranks forget what they read, rank 0
        deletes the files (every rank is idle between maps)."""
        self.discarded = reason
        if self.group.distributed:
            _broadcast(self.group, ("forget",))
        gone = self.store.discard() if self.store is not None else 0
        warnings.warn(CheckpointWarning(
            f"{self.store.directory if self.store is not None else 'checkpoints'}: a checkpoint "
            f"does not hold what its unit computes ({reason}); all {gone} checkpoint file(s) of "
            "this run discarded, everything is computed again"), stacklevel=3)

    def checkpoint_record(self) -> dict[str, Any]:
        """manifest.json's ``checkpoints``: units resumed and re-verified, files not used, and
        whether (and why) the run's checkpoints were discarded."""
        return {"resumed": sum(s.resumed for s in self.stats.values()),
                "verified": sum(s.verified for s in self.stats.values()),
                "spot_check_share": checkpoints.SPOT_CHECK_SHARE,
                "ignored_files": self.ignored_files, "discarded": self.discarded}

    def announce_setup(self, ok: bool) -> None:
        """Tell the other ranks whether rank 0's setup succeeded (they set up after it, so what
        it trained is in the cache for them)."""
        if self.group.distributed and self._phase == "setup":
            _broadcast(self.group, ok, control=True)
        self._phase = "handshake" if ok else "stopped"

    def handshake(self, facts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every rank's ``facts`` (what it makes of a fixed input: decoded images, classifier
        outputs) must agree with rank 0's to within 0.01; return rank 0's."""
        answers = _gather(self.group, ("ok", facts)) if self.group.distributed else [("ok", facts)]
        assert answers is not None
        self._phase = "handshaken"
        for rank, (status, value) in enumerate(answers):
            if status == "error":
                raise _rebuild(value, rank, self.group)
        for rank, (_, theirs) in enumerate(answers[1:], start=1):
            for name, mine in facts.items():
                other = theirs.get(name)
                if other is None or np.shape(other) != np.shape(mine) \
                        or float(np.max(np.abs(np.asarray(other) - mine), initial=0.0)) > 1e-2:
                    raise DistributedError(
                        f"rank {rank} decodes or classifies differently from rank 0 ({name}); "
                        "every rank must load the same generator and observation classifier: "
                        "put the cache directory on storage every node shares, or fill the cache "
                        "with a run on one process first")
        return facts

    def start(self, run_key: str, binding: str = "") -> None:
        """Send the run's checkpoint key, binding (:mod:`cage.compute.checkpoints`) and directory, and
        the seed of the spot checks (drawn here, unpredictable); the other ranks start serving."""
        self.run_key, self.binding = run_key, binding
        self.spot_seed = secrets.randbits(63)
        if self.store is not None:
            self.store.bind(binding)
        directory = str(self.store.directory) if self.store is not None else None
        if self.group.distributed:
            _broadcast(self.group, ("start", run_key, directory, binding, self.spot_seed))
        self._phase = "serving"

    @contextlib.contextmanager
    def leading(self, directory: str | os.PathLike[str]) -> Iterator[None]:
        """Rank 0's side of a run: checkpoints in ``directory`` for the block. On success the
        other ranks are stopped and the checkpoints deleted; on an error the others are stopped
        too (unless they are gone already) and the checkpoints kept for a rerun."""
        self.store = checkpoints.CheckpointStore(directory, rank=self.group.rank)
        try:
            yield
        except BaseException as exc:
            # Interrupted (torchrun stops every rank) or contact lost: no use telling the others.
            if not isinstance(exc, KeyboardInterrupt) and not getattr(exc, "lost", False):
                with contextlib.suppress(DistributedError):
                    self.stop("failed")
            raise
        finally:
            self.store.close()
        self.stop("done")
        checkpoints.remove(directory)

    def stop(self, status: str) -> None:
        """End the job on every rank, whatever phase it is in (``status``: ``"done"``,
        ``"failed"``). Safe to call twice; the second call does nothing."""
        phase, self._phase = self._phase, "stopped"
        if not self.group.distributed or phase == "stopped":
            return
        if phase == "setup":
            _broadcast(self.group, False, control=True)
            return
        if phase == "handshake":
            _gather(self.group, ("ok", None))
        _broadcast(self.group, ("stop", status))

    # ------------------------------------------------------------------ ranks > 0

    def wait_setup(self) -> bool:
        """Wait for rank 0's setup; False when it failed (nothing more to do)."""
        ok = bool(_broadcast(self.group, control=True))
        self._phase = "handshake" if ok else "stopped"
        return ok

    def answer_handshake(self, facts: Any = None, error: BaseException | None = None
                         ) -> tuple[str, str | None] | None:
        """Send this rank's ``facts`` (or its setup ``error``); return rank 0's ``(run_key,
        checkpoint directory)``, or None when rank 0 stopped the job instead."""
        _gather(self.group, ("error", _portable(error)) if error is not None else ("ok", facts))
        msg = _broadcast(self.group)
        if msg[0] != "start":
            self._phase = "stopped"
            return None
        self.run_key, self.binding, self.spot_seed = msg[1], msg[3], msg[4]
        self._phase = "serving"
        return msg[1], msg[2]

    def follow(self, prepare: Callable[[], dict[str, np.ndarray]]) -> None:
        """The life of a rank > 0: wait for rank 0's setup; ``prepare()`` (set up, register the
        handlers, return the handshake's facts); serve until stopped; delete the checkpoints when
        the run was published. An error in ``prepare`` goes to rank 0, which reports it."""
        if not self.wait_setup():
            return
        try:
            facts = prepare()
        except Exception as exc:  # noqa: BLE001 - rank 0 raises it
            self.answer_handshake(error=exc)
            return
        started = self.answer_handshake(facts)
        if started is None:
            return
        directory = started[1]
        self.store = checkpoints.CheckpointStore(directory, rank=self.group.rank,
                                                 binding=self.binding) if directory else None
        try:
            status = self.serve()
        finally:
            if self.store is not None:
                self.store.close()
        if status == "done" and directory:
            checkpoints.remove(directory)

    def serve(self) -> str:
        """Compute this rank's share of every :meth:`map` until rank 0 stops the job; return the
        status it stopped with."""
        while True:
            msg = _broadcast(self.group)
            if msg[0] == "stop":
                self._phase = "stopped"
                return str(msg[1])
            if msg[0] == "forget":
                if self.store is not None:
                    self.store.forget()
                continue
            _, name, units, owners, checkpoint, settings = msg
            with _applied(settings):
                mine = self._share(name, units, owners, checkpoint)
            _gather(self.group, mine)

    # ------------------------------------------------------------------ both

    def _share(self, name: str, units: Sequence[Unit], owners: Sequence[int],
               checkpoint: bool) -> dict[str, Any]:
        """This rank's units: ``{"results": {i: (result, resumed)}, "error": None | portable,
        "mismatch": None | why, "verified": n, "ignored": files}``.

        Completed results are saved (``checkpoint``) before the answer goes back, so what a rank
        finished survives the failure of any other. Resumed results are checked
        (:meth:`_verify`) before they go back.
        """
        store = self.store if checkpoint else None
        results: dict[int, tuple[dict[str, np.ndarray], bool]] = {}
        error = mismatch = None
        verified = 0
        mine = sum(1 for owner in owners if owner == self.group.rank)
        try:
            handler = self.handlers[name]
            # Units that say how many images they decode move a bar of images from inside the
            # handler (batch by batch, so a long unit shows its progress); others count units.
            rows = [getattr(u, "decodes", None) for i, u in enumerate(units)
                    if owners[i] == self.group.rank]
            by_rows = bool(rows) and all(isinstance(r, int) for r in rows)
            total, unit_word = (sum(rows), "image") if by_rows else (mine, "unit")
            with progress.counting(total, _UNIT_WORDS.get(name, name), unit_word):
                for i, unit in enumerate(units):
                    if owners[i] != self.group.rank:
                        continue
                    saved = store.get(unit.key) if store is not None and unit.key else None
                    if saved is not None:
                        results[i] = (saved, True)
                        progress.advance(unit.decodes if by_rows else 1)
                        continue
                    value = handler(unit)
                    results[i] = (value, False)
                    if store is not None and unit.key:
                        store.put(unit.key, value)
                    if not by_rows:
                        progress.advance(1)
            if store is not None:
                mismatch, verified = self._verify(name, units, results, handler, store)
        except Exception as exc:  # noqa: BLE001 - sent to rank 0, which raises it
            error = _portable(exc)
        finally:
            if store is not None:
                store.flush()
        return {"results": {} if error or mismatch else results, "error": error,
                "mismatch": mismatch, "verified": verified,
                "ignored": store.ignored if store is not None else 0}

    def _verify(self, name: str, units: Sequence[Unit],
                results: dict[int, tuple[dict[str, np.ndarray], bool]], handler: Handler,
                store: checkpoints.CheckpointStore) -> tuple[str | None, int]:
        """Check this rank's resumed results of one map: ``(why not, units recomputed)``.

        The store's digests first; then every resumed result against what the units computed
        here give (the names per kind of unit, each array's dtype and trailing shape), its
        rows against the unit's ``rows`` (when it has them), finite values; then a random sample (seeded by the run's spot
        seed, :func:`cage.compute.checkpoints.spot_check_count`) is recomputed and compared bit for bit.
        """
        if store.tampered:
            return store.tampered, 0
        resumed = sorted(i for i, (_, was) in results.items() if was)
        if not resumed:
            return None, 0
        seed = hashlib.sha256(f"{self.spot_seed}:{name}:{self.group.rank}:"
                              f"{units[resumed[0]].key}:{len(resumed)}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
        sample = sorted(rng.choice(len(resumed), checkpoints.spot_check_count(len(resumed)),
                                   replace=False).tolist())
        fresh = {resumed[j]: handler(units[resumed[j]]) for j in sample}
        names: dict[str, set[str]] = {}
        arrays: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for i, value in [*((i, v) for i, (v, was) in results.items() if not was),
                         *fresh.items()]:
            names.setdefault(_kind_of(units[i]), set(value))
            for k, a in value.items():
                arrays.setdefault(k, (np.asarray(a).dtype, np.shape(a)[1:]))
        for i in resumed:
            why = _invalid(results[i][0], units[i], names.get(_kind_of(units[i])), arrays)
            if why:
                return f"unit {units[i].key[:12]}: {why}", len(fresh)
        for i, value in fresh.items():
            if not checkpoints.same_arrays(results[i][0], value):
                return (f"unit {units[i].key[:12]} differs from its recomputation "
                        f"(spot check of {len(fresh)} of {len(resumed)} resumed units)"), len(fresh)
        return None, len(fresh)


def _kind_of(unit: Unit) -> str:
    """Units of one map that return the same names: those with the same ``attrs`` (if any)."""
    return repr(getattr(unit, "attrs", None))


def _invalid(value: dict[str, np.ndarray], unit: Unit, names: set[str] | None,
             arrays: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> str | None:
    """Why a resumed result cannot be what ``unit`` computes, or None."""
    if not value:
        return "no arrays"
    if names is not None and set(value) != names:
        return f"arrays {sorted(value)}, not {sorted(names)}"
    attrs = getattr(unit, "attrs", None)
    if attrs is not None and not set(value) <= set(attrs):
        return f"arrays {sorted(value)} for the attributes {list(attrs)}"
    rows = getattr(unit, "rows", None)  # units that say how many rows they compute
    for k, a in value.items():
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            return f"{k} of dtype {a.dtype}"
        if k in arrays and (a.dtype, a.shape[1:]) != arrays[k]:
            return f"{k} of dtype {a.dtype} and shape {a.shape}, not {arrays[k][0]} (n, " \
                   f"{', '.join(map(str, arrays[k][1]))})"
        if rows is not None and (a.ndim == 0 or a.shape[0] != rows):
            return f"{k} of shape {a.shape} for {rows} rows"
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return f"{k} holds NaN or infinite values"
    return None


def _settings() -> tuple[int, bool]:
    import torch

    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()


@contextlib.contextmanager
def _applied(settings: tuple[int, bool]) -> Iterator[None]:
    """Rank 0's torch threads and deterministic-algorithms setting for the block."""
    import torch

    old = _settings()
    if old == settings:  # the first use_deterministic_algorithms call costs seconds
        yield
        return
    torch.set_num_threads(settings[0])
    torch.use_deterministic_algorithms(settings[1])
    try:
        yield
    finally:
        torch.set_num_threads(old[0])
        torch.use_deterministic_algorithms(old[1])


#: How progress bars name each kind of unit of work.
_UNIT_WORDS = {"score": "decoding and scoring (eq. 9)", "label": "labelling prior samples",
               "manipulate": "manipulating and checking pair images"}


def _portable(exc: BaseException | None) -> tuple[str, str, bool] | None:
    """An exception as ``(class name, message, user-facing)``: every exception pickles so."""
    if exc is None:
        return None
    return type(exc).__name__, str(exc), isinstance(exc, CageEvalError)


def _rebuild(error: tuple[str, str, bool], rank: int, group: Group) -> Exception:
    """The exception rank ``rank`` sent: a user-facing one as the same class (its message says
    what to do), anything else as a :class:`DistributedError` naming the rank."""
    name, message, user_facing = error
    cls = getattr(errors, name, None)
    if user_facing and isinstance(cls, type) and issubclass(cls, CageEvalError):
        return cls(message)
    return DistributedError(f"rank {rank} of {group.world_size} failed: {name}: {message}")


# --------------------------------------------------------------------------- the active workers

_ACTIVE: list[Workers] = []


@contextlib.contextmanager
def active(workers: Workers) -> Iterator[Workers]:
    """Make ``workers`` what :func:`current` returns for the block (code deep in an experiment
    kind, such as pair making, shards through them)."""
    _ACTIVE.append(workers)
    try:
        yield workers
    finally:
        _ACTIVE.remove(workers)


def current() -> Workers | None:
    """The workers of the run in progress in this process, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def ready(generator: Any, observation_classifier: Any) -> None:
    """Say that the generator and the observation classifier are loaded (an experiment kind's
    setup calls it before it labels samples with them): the other ranks set up and serve from
    here on, so that the labelling is dealt over them too. Outside a run, or called again, it does
    nothing; the pipeline calls it itself after ``setup`` when the kind did not."""
    workers = current()
    if workers is None or workers.on_ready is None:
        return
    hook, workers.on_ready = workers.on_ready, None
    hook(generator, observation_classifier)
