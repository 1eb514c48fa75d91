"""``RUN/prolific_ledger.sqlite``: the run's Prolific study, its sessions, reviews and bonuses.

Every call that changes something on Prolific is written here *before* it is made (state
``creating`` / ``publishing`` / ``approving`` / ``paying``) and *after* it answered, so a rerun after
a crash, or after an answer that was lost while the server acted, knows what may exist and
looks it up instead of doing it twice. It never holds the API token.

Tables: ``meta`` (schema version, run id, settings JSON, digest of the HIT items), ``study`` (one
row), ``sessions`` (one row per SESSION_ID = Prolific submission id: PID, status, what the
gateway recorded), ``reviews``, ``return_requests``, ``bonuses``, ``events``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cage_eval import runs
from cage_eval.errors import RunDirError

LEDGER = runs.PROLIFIC_LEDGER
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS study (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    state       TEXT NOT NULL CHECK (state IN ('creating', 'draft', 'publishing', 'published')),
    study_id    TEXT,
    places      INTEGER NOT NULL,
    batch_id    INTEGER,
    registered  INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id   TEXT PRIMARY KEY,
    pid          TEXT NOT NULL,
    status       TEXT,
    started_at   TEXT,
    completed_at TEXT,
    study_code   TEXT,
    ip_hash      TEXT,
    answered     INTEGER NOT NULL DEFAULT 0,
    released_at  TEXT,
    updated_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    session_id  TEXT PRIMARY KEY,
    action      TEXT NOT NULL CHECK (action IN ('APPROVE', 'REJECT')),
    state       TEXT NOT NULL CHECK (state IN ('calling', 'done')),
    category    TEXT,
    message     TEXT,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS return_requests (
    session_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('calling', 'done', 'unknown')),
    reason      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bonuses (
    digest      TEXT PRIMARY KEY,
    csv         TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('creating', 'created', 'paying', 'paid')),
    bonus_id    TEXT,
    fees        TEXT,
    total       TEXT,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StudyRow:
    """The ``study`` row."""

    state: str
    study_id: str | None
    places: int
    batch_id: int | None
    registered: bool
    attempts: int


class ProlificLedger:
    """Access to ``RUN/prolific_ledger.sqlite`` (one connection, autocommit, WAL)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / LEDGER).is_file()

    @classmethod
    def open(cls, run_dir: Path, *, create: bool = False, run_id: str | None = None) -> ProlificLedger:
        """Open (or create) the ledger; refuse another run's or another version's."""
        path = Path(run_dir) / LEDGER
        if not path.exists() and not create:
            raise RunDirError(f"{path}: missing; nothing was published on Prolific from this run "
                              f"(run `cage-eval prolific publish {run_dir}` first)")
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise RunDirError(f"{path}: not a readable ledger ({exc}); restore it from a backup "
                              "(it maps the run to its Prolific study)") from None
        if not meta:
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("run_id", run_id or "")])
        elif meta.get("schema_version") != str(SCHEMA_VERSION):
            conn.close()
            raise RunDirError(f"{path}: schema_version {meta.get('schema_version')} (expected "
                              f"{SCHEMA_VERSION}); use the cage-eval version that made it")
        elif run_id is not None and meta.get("run_id") not in ("", run_id):
            conn.close()
            raise RunDirError(f"{path}: belongs to run {meta.get('run_id')!r}, but manifest.json "
                              f"says {run_id!r}; the ledger was copied from another run")
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProlificLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- meta and events

    def meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                           "value = excluded.value", (key, value))

    @property
    def settings(self) -> dict[str, Any] | None:
        raw = self.meta("settings")
        return None if raw is None else json.loads(raw)

    def log(self, event: str, detail: str = "") -> None:
        self._conn.execute("INSERT INTO events (at, event, detail) VALUES (?, ?, ?)",
                           (utc_now(), event, detail[:500]))

    def events(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._conn.execute(
            "SELECT event, detail FROM events ORDER BY id")]

    # ----------------------------------------------------------------- the study

    def study(self) -> StudyRow | None:
        row = self._conn.execute("SELECT state, study_id, places, batch_id, registered, attempts "
                                 "FROM study WHERE id = 1").fetchone()
        return None if row is None else StudyRow(row[0], row[1], int(row[2]), row[3],
                                                 bool(row[4]), int(row[5]))

    def study_creating(self, places: int, batch_id: int) -> None:
        """Before ``POST /studies/``: a study of this run may exist from now on."""
        self._conn.execute(
            "INSERT INTO study (id, state, places, batch_id, attempts, updated_at) "
            "VALUES (1, 'creating', ?, ?, 1, ?) ON CONFLICT(id) DO UPDATE SET "
            "attempts = attempts + 1, updated_at = excluded.updated_at",
            (places, batch_id, utc_now()))
        self.log("create-study-call", f"{places} places")

    def study_created(self, study_id: str, *, how: str) -> None:
        self._conn.execute("UPDATE study SET state = 'draft', study_id = ?, updated_at = ? "
                           "WHERE id = 1", (study_id, utc_now()))
        self.log(f"study-{how}", study_id)

    def study_registered(self) -> None:
        self._conn.execute("UPDATE study SET registered = 1, updated_at = ? WHERE id = 1",
                           (utc_now(),))
        self.log("gateway-registered")

    def study_state(self, state: str, detail: str = "") -> None:
        self._conn.execute("UPDATE study SET state = ?, updated_at = ? WHERE id = 1",
                           (state, utc_now()))
        self.log(f"study-{state}", detail)

    def study_places(self, places: int) -> None:
        self._conn.execute("UPDATE study SET places = ?, updated_at = ? WHERE id = 1",
                           (places, utc_now()))
        self.log("places-set", str(places))

    # ----------------------------------------------------------------- sessions

    def upsert_session(self, session_id: str, pid: str, **values: Any) -> None:
        cols = ["status", "started_at", "completed_at", "study_code", "ip_hash", "answered"]
        given = {k: v for k, v in values.items() if k in cols and v is not None}
        self._conn.execute("INSERT INTO sessions (session_id, pid, updated_at) VALUES (?, ?, ?) "
                           "ON CONFLICT(session_id) DO NOTHING", (session_id, pid, utc_now()))
        if given:
            sets = ", ".join(f"{k} = ?" for k in given)
            self._conn.execute(f"UPDATE sessions SET {sets}, updated_at = ? WHERE session_id = ?",
                               (*given.values(), utc_now(), session_id))

    def session_released(self, session_id: str) -> None:
        self._conn.execute("UPDATE sessions SET released_at = COALESCE(released_at, ?) "
                           "WHERE session_id = ?", (utc_now(), session_id))

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute(
            "SELECT * FROM sessions ORDER BY started_at, session_id")]

    # ----------------------------------------------------------------- reviews

    def review(self, session_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM reviews WHERE session_id = ?",
                                 (session_id,)).fetchone()
        return None if row is None else dict(row)

    def review_calling(self, session_id: str, action: str, category: str | None,
                       message: str | None) -> None:
        self._conn.execute(
            "INSERT INTO reviews VALUES (?, ?, 'calling', ?, ?, ?) ON CONFLICT(session_id) DO "
            "UPDATE SET action = excluded.action, state = 'calling', category = "
            "excluded.category, message = excluded.message, updated_at = excluded.updated_at",
            (session_id, action, category, message, utc_now()))
        self.log(f"{action.lower()}-call", session_id)

    def review_done(self, session_id: str) -> None:
        self._conn.execute("UPDATE reviews SET state = 'done', updated_at = ? "
                           "WHERE session_id = ?", (utc_now(), session_id))
        self.log("reviewed", session_id)

    def session_status(self, session_id: str, status: str) -> None:
        """The submission's status as Prolific answered a review call."""
        self._conn.execute("UPDATE sessions SET status = ?, updated_at = ? WHERE session_id = ?",
                           (status, utc_now(), session_id))

    # ----------------------------------------------------------------- return requests

    def return_request(self, session_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM return_requests WHERE session_id = ?",
                                 (session_id,)).fetchone()
        return None if row is None else dict(row)

    def return_request_state(self, session_id: str, state: str, reason: str = "") -> None:
        """``calling`` before ``POST .../request-return/``, ``done`` after it answered,
        ``unknown`` when the answer was lost (never asked again: a participant gets the request
        at most once)."""
        self._conn.execute(
            "INSERT INTO return_requests VALUES (?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE "
            "SET state = excluded.state, updated_at = excluded.updated_at",
            (session_id, state, reason, utc_now()))
        self.log(f"return-request-{state}", session_id)

    # ----------------------------------------------------------------- bonuses

    def bonus(self, digest: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM bonuses WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else dict(row)

    def all_bonuses(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute("SELECT * FROM bonuses ORDER BY updated_at")]

    def bonus_state(self, digest: str, state: str, *, csv: str = "", amount: int = 0,
                    bonus_id: str | None = None, fees: str | None = None,
                    total: str | None = None) -> None:
        self._conn.execute(
            "INSERT INTO bonuses (digest, csv, amount, state, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(digest) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at", (digest, csv, amount, state, utc_now()))
        if bonus_id is not None:
            self._conn.execute("UPDATE bonuses SET bonus_id = ?, fees = ?, total = ? "
                               "WHERE digest = ?", (bonus_id, fees, total, digest))
        self.log(f"bonus-{state}", f"{digest[:12]} {bonus_id or ''}")
