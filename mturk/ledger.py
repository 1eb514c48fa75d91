"""The publishing ledger, ``RUN/ledger.sqlite``: the real guard against duplicate HITs.

One row per HIT item, written *before* each create call (state ``creating``, attempt counted) and
*after* it (state ``created`` with the HITId). A rerun after a crash at any point therefore knows
exactly which items may already exist on MTurk (``creating``: looked up before anything is created)
and which certainly do not (``pending``). MTurk's own ``UniqueRequestToken`` guard expires after
24 hours; this file does not.

The ledger records the environment (``sandbox`` / ``production``) and the run it belongs to and
refuses the other environment. It never stores credentials, endpoints' secrets or request
signatures: only IDs, states, settings and AWS error codes/messages.

Concurrency: one SQLite connection shared by the publisher's threads behind a lock, in WAL mode with
``synchronous=NORMAL`` (each committed transaction survives the process being killed; only an
operating-system crash can lose the last few, and those items are then simply looked up again).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cage_eval.errors import RunDirError
from cage_eval.files import FILE_MODE
from cage_eval.runs import LEDGER, RAW_ANSWERS_DIR, RESULTS, TURKLE_LEDGER
from crowds.transactions import immediate_transaction

LEDGER_SCHEMA_VERSION = 1

PENDING = "pending"
CREATING = "creating"
CREATED = "created"
FAILED = "failed"
STATES = (PENDING, CREATING, CREATED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hits (
    item_id     TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    token       TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'creating', 'created', 'failed')),
    hit_id      TEXT UNIQUE,
    hit_type_id TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT,
    updated_at  TEXT NOT NULL,
    last_error  TEXT,
    expired_at  TEXT
);
CREATE TABLE IF NOT EXISTS reviews (
    assignment_id TEXT PRIMARY KEY,
    hit_id        TEXT NOT NULL,
    worker_id     TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('approved', 'rejected')),
    feedback      TEXT,
    at            TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    item_id TEXT,
    event   TEXT NOT NULL,
    detail  TEXT
);
"""


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class HitRow:
    """One ledger row."""

    item_id: str
    kind: str
    token: str
    state: str
    hit_id: str | None
    hit_type_id: str | None
    attempts: int
    created_at: str | None
    last_error: str | None
    expired_at: str | None



class Ledger:
    """Thread-safe access to ``RUN/ledger.sqlite``. Use :meth:`create` / :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        """True when the run already has a ledger."""
        return (Path(run_dir) / LEDGER).is_file()

    @classmethod
    def open(cls, run_dir: Path, *, environment: str | None = None, run_id: str | None = None) -> Ledger:
        """Open an existing ledger, refusing another environment or run.

        Raises
        ------
        RunDirError
            No ledger (nothing was published), a damaged file, or another environment / run.
        """
        path = Path(run_dir) / LEDGER
        if not path.is_file() and (Path(run_dir) / TURKLE_LEDGER).is_file():
            raise RunDirError(f"{path}: missing: this run was published on a local Turkle server "
                              f"({TURKLE_LEDGER}), not on MTurk; use `cage-eval turkle status "
                              f"{run_dir}` and `cage-eval turkle collect {run_dir}`")
        if not path.is_file():
            raise RunDirError(f"{path}: missing; nothing was published from this run yet "
                              f"(run `cage-eval publish {run_dir}` first)")
        try:
            conn = cls._connect(path)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise RunDirError(f"{path}: not a readable cage-eval ledger ({exc}); restore it from "
                              "a backup; do not delete it while HITs are live") from None
        ledger = cls(path, conn)
        if meta.get("schema_version") != str(LEDGER_SCHEMA_VERSION):
            conn.close()
            raise RunDirError(f"{path}: field schema_version is {meta.get('schema_version')!r} "
                              f"(expected {LEDGER_SCHEMA_VERSION}); use the cage-eval version that made it")
        if environment is not None and meta.get("environment") != environment:
            conn.close()
            raise RunDirError(
                f"{path}: this run was published to the MTurk {meta.get('environment')}; it cannot "
                f"be used with the MTurk {environment} (a ledger never mixes environments). To "
                f"publish the same pairs there, copy the run directory without {LEDGER}, "
                f"{RESULTS} and {RAW_ANSWERS_DIR}/"
            )
        if run_id is not None and meta.get("run_id") != run_id:
            conn.close()
            raise RunDirError(f"{path}: belongs to run {meta.get('run_id')!r}, but manifest.json "
                              f"says {run_id!r}; the ledger was copied from another run")
        return ledger

    @classmethod
    def create(cls, run_dir: Path, *, environment: str, run_id: str, settings: dict[str, Any],
               items: Iterable[tuple[str, str, str]], page: dict[str, Any] | None = None) -> Ledger:
        """Create the ledger with one ``pending`` row per ``(item_id, kind, token)``.

        Written in one transaction into a temporary file of its own, then linked into place (which
        fails if another process created the ledger meanwhile), so a crash never leaves a
        half-made ledger and two creators never overwrite each other. ``page`` records the digests
        of what workers read (:func:`mturk.publish.page_record`).
        """
        path = Path(run_dir) / LEDGER
        if path.exists():
            raise RunDirError(f"{path}: already exists; open it instead of creating it")
        # What a creator killed mid-way left behind (its temporary file and SQLite's -wal/-shm
        # companions). Publishing holds the run's lock (cage_eval.files.run_lock), so no other
        # creator is at work on this run.
        for stale in Path(run_dir).glob(f".{LEDGER}.*partial*"):
            stale.unlink(missing_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{LEDGER}.", suffix=".partial", dir=run_dir)
        os.fchmod(fd, FILE_MODE)  # an ordinary file, as sqlite3 would create it
        os.close(fd)
        tmp = Path(name)
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            now = utc_now()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("schema_version", str(LEDGER_SCHEMA_VERSION)),
                ("environment", environment),
                ("run_id", run_id),
                ("settings", json.dumps(settings, sort_keys=True)),
                ("page", json.dumps(page or {}, sort_keys=True)),
                ("created_at", now),
            ])
            conn.executemany(
                "INSERT INTO hits (item_id, kind, token, state, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(item_id, kind, token, PENDING, now) for item_id, kind, token in items],
            )
            conn.execute("INSERT INTO events (at, event, detail) VALUES (?, 'ledger-created', ?)",
                         (now, environment))
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            tmp.unlink(missing_ok=True)
            raise
        conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise RunDirError(f"{path}: was created by another process meanwhile; run the "
                              "command again") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(run_dir, environment=environment, run_id=run_id)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate_transaction(self._conn) as conn:
            yield conn

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        """One metadata value."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str, *, event: str | None = None) -> None:
        """Set one metadata value (and log an event)."""
        with self._transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
            if event:
                conn.execute("INSERT INTO events (at, event, detail) VALUES (?, ?, ?)",
                             (utc_now(), event, value))

    @property
    def environment(self) -> str:
        """``sandbox`` or ``production``."""
        return str(self.meta("environment"))

    @property
    def run_id(self) -> str:
        """The run this ledger belongs to."""
        return str(self.meta("run_id"))

    @property
    def settings(self) -> dict[str, Any]:
        """The HIT settings the run was published with."""
        return json.loads(self.meta("settings") or "{}")

    @property
    def page(self) -> dict[str, Any]:
        """Digests of the HIT texts and templates the run was published with ({} if unknown)."""
        return json.loads(self.meta("page") or "{}")

    @property
    def hit_type_id(self) -> str | None:
        """The HIT type, once created."""
        return self.meta("hit_type_id")

    def log(self, event: str, *, item_id: str | None = None, detail: str | None = None) -> None:
        """Append one audit event."""
        with self._transaction() as conn:
            conn.execute("INSERT INTO events (at, item_id, event, detail) VALUES (?, ?, ?, ?)",
                         (utc_now(), item_id, event, detail))

    # ------------------------------------------------------------------ HIT rows

    def rows(self, *, state: str | None = None) -> list[HitRow]:
        """All rows (optionally in one state), in item order."""
        sql = ("SELECT item_id, kind, token, state, hit_id, hit_type_id, attempts, created_at, "
               "last_error, expired_at FROM hits")
        params: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            params = (state,)
        with self._lock:
            return [HitRow(**dict(r)) for r in self._conn.execute(sql + " ORDER BY rowid", params)]

    def counts(self) -> dict[str, int]:
        """Number of rows per state (every state present, possibly 0)."""
        with self._lock:
            got = dict(self._conn.execute("SELECT state, COUNT(*) FROM hits GROUP BY state").fetchall())
        return {s: int(got.get(s, 0)) for s in STATES}

    def add_items(self, items: Iterable[tuple[str, str, str]]) -> int:
        """Add ``pending`` rows for items not yet in the ledger; return how many were added."""
        now = utc_now()
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO hits (item_id, kind, token, state, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(item_id, kind, token, PENDING, now) for item_id, kind, token in items],
            )
            return conn.total_changes - before

    def mark_creating(self, item_id: str, hit_type_id: str) -> None:
        """Before a create call: the HIT may exist on MTurk from now on."""
        now = utc_now()
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE hits SET state = 'creating', hit_type_id = ?, attempts = attempts + 1, "
                "updated_at = ? WHERE item_id = ? AND state != 'created'",
                (hit_type_id, now, item_id))
            if cur.rowcount != 1:
                raise ValueError(f"item {item_id!r} is not in the ledger or already created")
            conn.execute("INSERT INTO events (at, item_id, event) VALUES (?, ?, 'create-call')",
                         (now, item_id))

    def mark_created(self, item_id: str, hit_id: str, hit_type_id: str, *, created_at: str | None = None,
                     how: str = "created") -> None:
        """After a create call (or a lookup) returned the HIT."""
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE hits SET state = 'created', hit_id = ?, hit_type_id = ?, "
                "created_at = COALESCE(?, ?), updated_at = ?, last_error = NULL WHERE item_id = ?",
                (hit_id, hit_type_id, created_at, now, now, item_id))
            conn.execute("INSERT INTO events (at, item_id, event, detail) VALUES (?, ?, ?, ?)",
                         (now, item_id, how, hit_id))

    def mark_failed(self, item_id: str, error: str, *, maybe_created: bool) -> None:
        """After a create call failed. ``maybe_created`` keeps the row ``creating`` (look it up later)."""
        now = utc_now()
        state = CREATING if maybe_created else FAILED
        with self._transaction() as conn:
            conn.execute("UPDATE hits SET state = ?, last_error = ?, updated_at = ? "
                         "WHERE item_id = ? AND state != 'created'", (state, error[:500], now, item_id))
            conn.execute("INSERT INTO events (at, item_id, event, detail) VALUES (?, ?, 'create-failed', ?)",
                         (now, item_id, error[:500]))

    def mark_expired(self, hit_id: str) -> None:
        """After ``update_expiration_for_hit`` moved the HIT's expiry into the past."""
        now = utc_now()
        with self._transaction() as conn:
            conn.execute("UPDATE hits SET expired_at = ?, updated_at = ? WHERE hit_id = ?",
                         (now, now, hit_id))
            conn.execute("INSERT INTO events (at, event, detail) VALUES (?, 'expired', ?)", (now, hit_id))

    def item_for_hit(self) -> dict[str, str]:
        """``{HITId: item_id}`` for every created HIT."""
        with self._lock:
            return {r["hit_id"]: r["item_id"] for r in
                    self._conn.execute("SELECT hit_id, item_id FROM hits WHERE hit_id IS NOT NULL")}

    # ------------------------------------------------------------------ reviews

    def record_review(self, assignment_id: str, hit_id: str, worker_id: str, action: str,
                      feedback: str | None) -> None:
        """Record that an assignment was approved or rejected by cage-eval."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO reviews (assignment_id, hit_id, worker_id, action, feedback, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(assignment_id) DO UPDATE SET "
                "action = excluded.action, feedback = excluded.feedback, at = excluded.at",
                (assignment_id, hit_id, worker_id, action, feedback, utc_now()))

    def reviews(self) -> dict[str, str]:
        """``{AssignmentId: action}`` of every review cage-eval made."""
        with self._lock:
            return {r["assignment_id"]: r["action"] for r in
                    self._conn.execute("SELECT assignment_id, action FROM reviews")}
