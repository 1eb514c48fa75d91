"""Ledger records read back row by row: what each write stores, what it must not touch, and the
audit trail it leaves (mturk.ledger; the higher-level paths are in test_mturk_ledger.py)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

import pytest

from cage_eval.errors import RunDirError
from mturk.ledger import CREATED, CREATING, FAILED, PENDING, Ledger, utc_now


def _items(n, start=0):
    return [(f"h{i:015x}", "pair" if i % 4 else "attention", f"cage-eval-{i}")
            for i in range(start, start + n)]


@pytest.fixture
def ledger(tmp_path):
    with Ledger.create(tmp_path, environment="sandbox", run_id="r1", settings={"reward": "0.05"},
                       items=_items(3)) as led:
        yield led


def _table(led, sql, *params):
    conn = sqlite3.connect(led.path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def _events(led, item_id=None):
    rows = _table(led, "SELECT item_id, event, detail FROM events ORDER BY seq")
    return [(r["event"], r["detail"]) for r in rows if item_id is None or r["item_id"] == item_id]


def test_utc_now_is_iso_seconds_in_utc():
    stamp = datetime.fromisoformat(utc_now())
    assert stamp.utcoffset().total_seconds() == 0 and stamp.microsecond == 0


def test_created_ledger_holds_pending_rows_meta_and_one_event(ledger):
    rows = ledger.rows()
    assert [(r.item_id, r.kind, r.token) for r in rows] == _items(3)
    assert all(r.state == PENDING and r.attempts == 0 and r.hit_id is None for r in rows)
    stored = _table(ledger, "SELECT updated_at FROM hits")
    assert all(datetime.fromisoformat(r["updated_at"]) for r in stored)
    assert ledger.meta("schema_version") == "1" and ledger.meta("nothing") is None
    assert (ledger.environment, ledger.run_id, ledger.settings) == ("sandbox", "r1", {"reward": "0.05"})
    assert ledger.hit_type_id is None
    assert datetime.fromisoformat(ledger.meta("created_at")).utcoffset().total_seconds() == 0
    assert _events(ledger) == [("ledger-created", "sandbox")]


def test_settings_are_stored_as_canonical_json(tmp_path):
    """Sorted keys: the same settings always give the same stored text, whatever their order."""
    settings = {"reward": "0.05", "assignments": 3, "auto_approve_s": 259200}
    with Ledger.create(tmp_path, environment="sandbox", run_id="r1", settings=settings,
                       items=_items(1)) as led:
        assert led.meta("settings") == json.dumps(dict(sorted(settings.items())))
        assert led.settings == settings


def test_add_items_adds_only_new_rows_and_counts_them(ledger):
    assert ledger.add_items(_items(5)) == 2                 # items 0-2 exist already
    assert ledger.add_items(_items(5)) == 0
    assert ledger.add_items(_items(2, start=10)) == 2
    rows = ledger.rows()
    assert [r.item_id for r in rows] == [i for i, _, _ in _items(5) + _items(2, start=10)]
    assert {r.state for r in rows} == {PENDING}
    assert all(r["updated_at"] for r in _table(ledger, "SELECT updated_at FROM hits"))
    assert ledger.counts() == {PENDING: 7, CREATING: 0, CREATED: 0, FAILED: 0}


def test_rows_by_state_and_counts(ledger):
    a, b, c = (i for i, _, _ in _items(3))
    ledger.mark_creating(a, "3T")
    ledger.mark_created(a, "3HITA", "3T")
    ledger.mark_creating(b, "3T")
    assert [r.item_id for r in ledger.rows(state=CREATED)] == [a]
    assert [r.item_id for r in ledger.rows(state=CREATING)] == [b]
    assert [r.item_id for r in ledger.rows(state=PENDING)] == [c]
    assert ledger.counts() == {PENDING: 1, CREATING: 1, CREATED: 1, FAILED: 0}


def test_created_row_keeps_the_given_time_or_gets_now(ledger):
    a, b, _ = (i for i, _, _ in _items(3))
    for item in (a, b):
        ledger.mark_creating(item, "3T")
    ledger.mark_created(a, "3HITA", "3T", created_at="2026-11-28T16:38:44+00:00", how="reconciled")
    ledger.mark_created(b, "3HITB", "3T")
    ra, rb = ledger.rows(state=CREATED)
    assert ra.created_at == "2026-11-28T16:38:44+00:00" and ra.hit_type_id == "3T"
    assert datetime.fromisoformat(rb.created_at).year >= 2026
    assert _events(ledger, a)[-1] == ("reconciled", "3HITA")
    assert _events(ledger, b)[-1] == ("created", "3HITB")
    assert ledger.item_for_hit() == {"3HITA": a, "3HITB": b}


def test_a_failure_after_creation_never_undoes_it(ledger):
    a = _items(1)[0][0]
    ledger.mark_creating(a, "3T")
    ledger.mark_created(a, "3HITA", "3T")
    ledger.mark_failed(a, "ServiceFault: late answer", maybe_created=False)
    row = ledger.rows()[0]
    assert (row.state, row.hit_id, row.last_error) == (CREATED, "3HITA", None)
    assert _events(ledger, a)[-1] == ("create-failed", "ServiceFault: late answer")


def test_failures_are_recorded_truncated_and_retryable(ledger):
    a, b, _ = (i for i, _, _ in _items(3))
    long = "RequestError: " + "x" * 1000
    ledger.mark_creating(a, "3T")
    ledger.mark_failed(a, long, maybe_created=False)
    ledger.mark_creating(b, "3T")
    ledger.mark_failed(b, "ThrottlingException: slow down", maybe_created=True)
    ra, rb, _ = ledger.rows()
    assert (ra.state, ra.last_error) == (FAILED, long[:500])
    assert (rb.state, rb.last_error) == (CREATING, "ThrottlingException: slow down")
    assert _events(ledger, a)[-1] == ("create-failed", long[:500])
    ledger.mark_creating(a, "3T2")                            # a failed item may be tried again
    ra = ledger.rows()[0]
    assert (ra.state, ra.attempts, ra.hit_type_id) == (CREATING, 2, "3T2")
    with pytest.raises(ValueError, match="not in the ledger"):
        ledger.mark_creating("h" + "f" * 15, "3T")


def test_expiry_marks_only_that_hit(ledger):
    a, b, _ = (i for i, _, _ in _items(3))
    for item, hit in ((a, "3HITA"), (b, "3HITB")):
        ledger.mark_creating(item, "3T")
        ledger.mark_created(item, hit, "3T")
    ledger.mark_expired("3HITB")
    ra, rb = ledger.rows(state=CREATED)
    assert ra.expired_at is None and datetime.fromisoformat(rb.expired_at)
    assert _events(ledger)[-1] == ("expired", "3HITB")


def test_meta_is_set_once_per_key_and_logged_when_asked(ledger):
    ledger.set_meta("hit_type_id", "3T1")
    ledger.set_meta("hit_type_id", "3T2", event="hit-type-created")
    assert ledger.hit_type_id == "3T2"
    assert _table(ledger, "SELECT COUNT(*) AS n FROM meta WHERE key = 'hit_type_id'")[0]["n"] == 1
    assert _events(ledger)[1:] == [("hit-type-created", "3T2")]
    ledger.log("note", item_id="h0", detail="why")
    assert _table(ledger, "SELECT item_id, event, detail FROM events ORDER BY seq DESC LIMIT 1") == [
        {"item_id": "h0", "event": "note", "detail": "why"}]


def test_a_second_review_of_an_assignment_replaces_the_first(ledger):
    ledger.record_review("3A1", "3H1", "W1", "approved", None)
    ledger.record_review("3A1", "3H1", "W1", "rejected", "failed the check")
    ledger.record_review("3A2", "3H1", "W2", "approved", "thanks")
    assert ledger.reviews() == {"3A1": "rejected", "3A2": "approved"}
    rows = _table(ledger, "SELECT assignment_id, hit_id, worker_id, action, feedback, at "
                          "FROM reviews ORDER BY assignment_id")
    assert [(r["assignment_id"], r["hit_id"], r["worker_id"], r["feedback"]) for r in rows] == [
        ("3A1", "3H1", "W1", "failed the check"), ("3A2", "3H1", "W2", "thanks")]
    assert all(datetime.fromisoformat(r["at"]) for r in rows)


def test_schema_version_mismatch_is_refused(tmp_path):
    Ledger.create(tmp_path, environment="sandbox", run_id="r1", settings={},
                  items=_items(1)).close()
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RunDirError, match=r"schema_version is '99' \(expected 1\)"):
        Ledger.open(tmp_path)


def test_leftovers_of_a_crashed_create_are_cleared(tmp_path):
    for name in (".ledger.sqlite.partial", ".ledger.sqlite.partial-wal",
                 ".ledger.sqlite.partial-shm", ".ledger.sqlite.k3j9x.partial",
                 ".ledger.sqlite.k3j9x.partial-journal"):
        (tmp_path / name).write_bytes(b"half a ledger")
    Ledger.create(tmp_path, environment="production", run_id="r2", settings={},
                  items=_items(2)).close()
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
    with Ledger.open(tmp_path, environment="production", run_id="r2") as led:
        assert len(led.rows()) == 2


def test_a_failed_create_leaves_no_ledger(tmp_path):
    duplicate = _items(1) + _items(1)                      # same item twice: PRIMARY KEY fails
    with pytest.raises(sqlite3.IntegrityError):
        Ledger.create(tmp_path, environment="sandbox", run_id="r1", settings={}, items=duplicate)
    assert list(tmp_path.iterdir()) == []
