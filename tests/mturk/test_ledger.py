"""The SQLite publishing ledger: environments, states, concurrency, no secrets."""

import sqlite3
import threading

import pytest

from cage_eval.errors import RunDirError
from mturk.ledger import CREATED, CREATING, FAILED, PENDING, Ledger


def items(n):
    return [(f"h{i:015x}", "pair", f"cage-eval-{i}") for i in range(n)]


def make(tmp_path, n=4, env="sandbox"):
    return Ledger.create(tmp_path, environment=env, run_id="abc", settings={"reward": "0.05"},
                         items=items(n))


def test_create_and_reopen(tmp_path):
    with make(tmp_path) as ledger:
        assert ledger.environment == "sandbox" and ledger.run_id == "abc"
        assert ledger.counts() == {PENDING: 4, CREATING: 0, CREATED: 0, FAILED: 0}
        assert ledger.settings == {"reward": "0.05"}
    with Ledger.open(tmp_path, environment="sandbox", run_id="abc") as ledger:
        assert len(ledger.rows()) == 4
    assert not list(tmp_path.glob(".ledger.sqlite.partial*"))
    with pytest.raises(RunDirError, match="already exists"):
        make(tmp_path)


def test_refuses_the_other_environment_and_another_run(tmp_path):
    make(tmp_path, env="production").close()
    with pytest.raises(RunDirError, match="published to the MTurk production; it cannot be used "
                                          "with the MTurk sandbox"):
        Ledger.open(tmp_path, environment="sandbox")
    with pytest.raises(RunDirError, match="belongs to run 'abc'"):
        Ledger.open(tmp_path, run_id="other")


def test_missing_and_damaged(tmp_path):
    with pytest.raises(RunDirError, match="nothing was published"):
        Ledger.open(tmp_path)
    (tmp_path / "ledger.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RunDirError, match="not a readable cage-eval ledger"):
        Ledger.open(tmp_path)


def test_before_and_after_each_create(tmp_path):
    with make(tmp_path) as ledger:
        item = items(1)[0][0]
        ledger.mark_creating(item, "3TYPE")
        row = ledger.rows(state=CREATING)[0]
        assert row.item_id == item and row.attempts == 1 and row.hit_id is None
        ledger.mark_failed(item, "ServiceFault: try again", maybe_created=True)
        assert ledger.rows(state=CREATING)[0].last_error.startswith("ServiceFault")
        ledger.mark_creating(item, "3TYPE")
        ledger.mark_created(item, "3HIT", "3TYPE")
        row = ledger.rows(state=CREATED)[0]
        assert (row.hit_id, row.attempts, row.last_error) == ("3HIT", 2, None)
        with pytest.raises(ValueError, match="already created"):
            ledger.mark_creating(item, "3TYPE")
        ledger.mark_creating(items(2)[1][0], "3TYPE")
        ledger.mark_failed(items(2)[1][0], "RequestError: bad", maybe_created=False)
        assert ledger.counts() == {PENDING: 2, CREATING: 0, CREATED: 1, FAILED: 1}
        assert ledger.item_for_hit() == {"3HIT": item}
        ledger.mark_expired("3HIT")
        assert ledger.rows(state=CREATED)[0].expired_at is not None
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    events = [e for (e,) in conn.execute("SELECT event FROM events ORDER BY seq")]
    conn.close()
    assert events[:5] == ["ledger-created", "create-call", "create-failed", "create-call", "created"]


def test_concurrent_writers_lose_nothing(tmp_path):
    n = 400
    with make(tmp_path, n=n) as ledger:
        ids = [i for i, _, _ in items(n)]

        def work(chunk):
            for item in chunk:
                ledger.mark_creating(item, "3TYPE")
                ledger.mark_created(item, f"3HIT{item}", "3TYPE")

        threads = [threading.Thread(target=work, args=(ids[k::8],)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ledger.counts()[CREATED] == n
        assert len(set(ledger.item_for_hit())) == n
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_reviews_recorded(tmp_path):
    with make(tmp_path) as ledger:
        ledger.record_review("3A1", "3H1", "W1", "approved", None)
        ledger.record_review("3A2", "3H1", "W2", "rejected", "failed the check")
        assert ledger.reviews() == {"3A1": "approved", "3A2": "rejected"}
