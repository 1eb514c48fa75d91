"""``RUN/turkle_ledger.sqlite``: which Turkle server, project and batch a run was published to.

One ``publication`` row per run, written *before* the create calls (state ``creating``: server
URL, assignments, hours, image mode, SHA-256 of the input CSV and of the template) and updated
right after each call with the project id and the batch id (state ``published`` once the batch
exists), plus an ``events`` log. It never holds a token, password or cookie.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cage_eval import runs
from cage_eval.errors import RunDirError
from crowds.transactions import immediate_transaction

LEDGER_SCHEMA_VERSION = 1
CREATING = "creating"
PUBLISHED = "published"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS publication (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    run_id               TEXT NOT NULL,
    server_url           TEXT NOT NULL,
    project_name         TEXT NOT NULL,
    batch_name           TEXT NOT NULL,
    project_id           INTEGER,
    batch_id             INTEGER,
    assignments_per_task INTEGER NOT NULL,
    allotted_hours       INTEGER NOT NULL,
    images               TEXT NOT NULL,
    n_tasks              INTEGER NOT NULL,
    input_sha256         TEXT NOT NULL,
    template_sha256      TEXT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('creating', 'published')),
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    event  TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Publication:
    """The ``publication`` row of ``RUN/turkle_ledger.sqlite``."""

    run_id: str
    server_url: str
    project_name: str
    batch_name: str
    project_id: int | None
    batch_id: int | None
    assignments_per_task: int
    allotted_hours: int
    images: str
    n_tasks: int
    input_sha256: str
    template_sha256: str
    state: str
    created_at: str
    updated_at: str


class TurkleLedger:
    """``RUN/turkle_ledger.sqlite``: one publication per run, plus an event log. No secrets."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, run_dir: Path, *, create: bool = False) -> TurkleLedger:
        """Open the ledger of ``run_dir`` (creating it when ``create``)."""
        path = Path(run_dir) / runs.TURKLE_LEDGER
        if not path.exists() and not create and (Path(run_dir) / runs.LEDGER).is_file():
            raise RunDirError(f"{path}: missing: this run was published on MTurk "
                              f"({runs.LEDGER}), not on Turkle; use `cage-eval status {run_dir}` "
                              f"and `cage-eval collect {run_dir}`")
        if not path.exists() and not create:
            raise RunDirError(f"{path}: missing; publish the run first with "
                              f"`cage-eval turkle publish {run_dir}`")
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                             (str(LEDGER_SCHEMA_VERSION),))
            elif version[0] != str(LEDGER_SCHEMA_VERSION):
                conn.close()
                raise RunDirError(f"{path}: schema_version {version[0]} (expected "
                                  f"{LEDGER_SCHEMA_VERSION}); use the cage-eval version that "
                                  "published this run")
        except sqlite3.DatabaseError as exc:
            raise RunDirError(f"{path}: not a readable ledger ({exc}); restore it from a "
                              "backup (it maps this run to its Turkle batch)") from None
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TurkleLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publication(self) -> Publication | None:
        cur = self._conn.execute("SELECT run_id, server_url, project_name, batch_name, project_id, "
                                 "batch_id, assignments_per_task, allotted_hours, images, n_tasks, "
                                 "input_sha256, template_sha256, state, created_at, updated_at "
                                 "FROM publication WHERE id = 1")
        row = cur.fetchone()
        return Publication(*row) if row else None

    def start(self, pub: Publication) -> None:
        """Record a publication about to be created (state ``creating``)."""
        with self._tx() as conn:
            conn.execute("INSERT INTO publication VALUES (1,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (pub.run_id, pub.server_url, pub.project_name, pub.batch_name,
                          pub.project_id, pub.batch_id, pub.assignments_per_task,
                          pub.allotted_hours, pub.images, pub.n_tasks, pub.input_sha256,
                          pub.template_sha256, pub.state, pub.created_at, pub.updated_at))
            self._log(conn, "start", f"server {pub.server_url}, {pub.n_tasks} tasks x "
                                     f"{pub.assignments_per_task} assignments")

    def set_project(self, project_id: int, *, adopted: bool) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE publication SET project_id=?, updated_at=? WHERE id=1",
                         (project_id, utc_now()))
            self._log(conn, "project-adopted" if adopted else "project-created", str(project_id))

    def set_batch(self, batch_id: int, *, adopted: bool) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE publication SET batch_id=?, state=?, updated_at=? WHERE id=1",
                         (batch_id, PUBLISHED, utc_now()))
            self._log(conn, "batch-adopted" if adopted else "batch-created", str(batch_id))

    def log(self, event: str, detail: str = "") -> None:
        with self._tx() as conn:
            self._log(conn, event, detail)

    def events(self) -> list[tuple[str, str, str]]:
        return list(self._conn.execute("SELECT at, event, detail FROM events ORDER BY id"))

    @staticmethod
    def _log(conn: sqlite3.Connection, event: str, detail: str) -> None:
        conn.execute("INSERT INTO events (at, event, detail) VALUES (?, ?, ?)",
                     (utc_now(), event, detail))

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._conn)


def ledger_url(run_dir: Path) -> str:
    """The Turkle server URL a run was published to (from its ledger)."""
    with TurkleLedger.open(run_dir) as ledger:
        pub = ledger.publication()
    if pub is None:
        raise RunDirError(f"{Path(run_dir) / runs.TURKLE_LEDGER}: no publication recorded; "
                          f"run `cage-eval turkle publish {run_dir}`")
    return pub.server_url
