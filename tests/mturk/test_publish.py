"""Publishing against a local MTurk-protocol endpoint with injected faults, crashes and kills."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from crowd_fixtures import make_run_dir
from fake_mturk import FakeMTurk
from mturk_helpers import PUBLISH_OPTIONS, environ_with

from cage_eval.errors import BackendError, ConfigError, SpendingRefused
from mturk.aws import make_client
from mturk.environments import SANDBOX
from mturk.hits import HitSettings
from mturk.ledger import CREATED, CREATING, Ledger
from mturk.publish import _ITEM_ID, PublishRequest, prepare, publish

ROOT = Path(__file__).resolve().parents[2]


def request(**kw):
    base = dict(settings=HitSettings(reward="0.05", assignments=3, lifetime_s=259200, duration_s=600,
                                     auto_approve_s=259200), concurrency=8)
    base.update(kw)
    return PublishRequest(**base)


def no_sleep(_seconds):
    pass


def assert_exactly_once(server, run, n_items):
    """Every item has exactly one HIT on the server, and the ledger agrees."""
    hits = server.hits_by_annotation("cage-eval:5e1f0c2a9b7d4e33")
    per_item = Counter(tuple(_ITEM_ID.findall(h["Question"]))[0] for h in hits)
    assert len(hits) == n_items and set(per_item.values()) == {1}
    with Ledger.open(run) as ledger:
        rows = ledger.rows()
        assert [r.state for r in rows] == [CREATED] * n_items
        assert {r.hit_id for r in rows} == {h["HITId"] for h in hits}
        for r in rows:
            assert r.item_id in server.hits[r.hit_id]["Question"]


def test_completes_exactly_under_latency_throttling_and_5xx(aws_env, tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=4)
    with FakeMTurk(latency_s=0.01, throttle_rate=0.15, fault_rate=0.05, fault_after_create_rate=0.1,
                   seed=3, max_lifetime_s=120) as server:
        client = make_client(endpoint_url=server.url, max_pool_connections=8)
        plan = prepare(run, request(attention_rate=0.25), SANDBOX)
        assert len(plan.items) == 20
        report = publish(plan, client, sleep=no_sleep)
        assert report.created_total == 20 and not report.failed
        assert sum(server.faults.values()) > 0 and server.create_calls > 20
        assert_exactly_once(server, run, 20)
        # A second run changes nothing and creates nothing.
        calls = server.create_calls
        again = publish(prepare(run, request(), SANDBOX), client, sleep=no_sleep)
        assert again.previously_created == 20 and again.created_now == 0
        assert server.create_calls == calls


@pytest.mark.parametrize("style", ["hit-id", "processed"])
def test_already_exists_is_resolved_by_lookup(aws_env, run_dir, style):
    # Every create succeeds on the server but answers 500; botocore retries with the same token
    # and MTurk answers "already exists" (with the HITId) or "already been processed" (without).
    with FakeMTurk(fault_after_create_rate=1.0, duplicate_style=style, max_lifetime_s=120) as server:
        client = make_client(endpoint_url=server.url, max_pool_connections=8)
        report = publish(prepare(run_dir, request(), SANDBOX), client, sleep=no_sleep)
        assert report.already_existed == 8 and report.created_now == 0
        assert_exactly_once(server, run_dir, 8)
        looked_up = server.calls["GetHIT"] if style == "hit-id" else server.calls["ListHITs"]
        assert looked_up >= 1


def test_crash_between_create_and_ledger_write_after_token_expiry(aws_env, run_dir, fake):
    client = make_client(endpoint_url=fake.url)
    publish(prepare(run_dir, request(), SANDBOX), client, sleep=no_sleep)
    # Simulate a crash after MTurk created three HITs but before the ledger learned their IDs,
    # and a rerun more than 24 hours later (MTurk no longer knows the tokens).
    conn = sqlite3.connect(run_dir / "ledger.sqlite")
    conn.execute("UPDATE hits SET state = 'creating', hit_id = NULL WHERE rowid IN (2, 5, 7)")
    conn.commit()
    conn.close()
    fake.token_ttl_s = 0
    report = publish(prepare(run_dir, request(), SANDBOX), client, sleep=no_sleep)
    assert report.reconciled == 3 and report.created_now == 0
    assert_exactly_once(fake, run_dir, 8)


def test_sigkill_mid_run_then_rerun_leaves_no_duplicates(aws_env, tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=3)          # 12 items
    with FakeMTurk(hang_after_creates=5, max_lifetime_s=120) as server:
        cmd = [sys.executable, "-m", "cage_eval.cli", "publish", str(run), *PUBLISH_OPTIONS,
               "--endpoint-url", server.url, "--concurrency", "4"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environ_with(aws_env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while len(server.hits) < 6 + 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # let the answered creates reach the ledger
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert len(server.hits) >= 6
        with Ledger.open(run) as ledger:
            counts = ledger.counts()
        assert counts[CREATING] >= 1 and counts[CREATED] <= 5   # killed between create and record
        server.hang_after_creates = None
        client = make_client(endpoint_url=server.url)
        report = publish(prepare(run, request(), SANDBOX), client, sleep=no_sleep)
        assert report.reconciled >= 1 and report.already_existed == 0
        assert report.reconciled == len(server.hits) - counts[CREATED] - report.created_now
        assert_exactly_once(server, run, 12)


def test_balance_too_low_spends_and_writes_nothing(aws_env, run_dir):
    with FakeMTurk(balance="1.00", max_lifetime_s=60) as server:
        client = make_client(endpoint_url=server.url)
        with pytest.raises(SpendingRefused, match=r"balance is \$1.00, less than the \$1.44"):
            publish(prepare(run_dir, request(), SANDBOX), client)
        assert server.create_calls == 0
    assert not (run_dir / "ledger.sqlite").exists() and not (run_dir / "hit_items.csv").exists()


def test_expired_credentials(aws_env, run_dir):
    with FakeMTurk(credential_error="ExpiredTokenException", max_lifetime_s=60) as server:
        client = make_client(endpoint_url=server.url)
        with pytest.raises(BackendError, match="AWS refused the credentials.*ExpiredTokenException"):
            publish(prepare(run_dir, request(), SANDBOX), client)
    assert not (run_dir / "ledger.sqlite").exists()


def test_rerun_with_other_settings_or_environment_is_refused(aws_env, run_dir, fake):
    client = make_client(endpoint_url=fake.url)
    publish(prepare(run_dir, request(), SANDBOX), client)
    other = request(settings=HitSettings(reward="0.06", assignments=3, lifetime_s=259200,
                                         duration_s=600, auto_approve_s=259200))
    with pytest.raises(ConfigError, match="published with reward='0.05'"):
        prepare(run_dir, other, SANDBOX)
    from cage_eval.errors import RunDirError
    from mturk.environments import PRODUCTION

    with pytest.raises(RunDirError, match="published to the MTurk sandbox"):
        prepare(run_dir, request(), PRODUCTION)


def test_max_cost_and_estimate(run_dir):
    from decimal import Decimal

    plan = prepare(run_dir, request(), SANDBOX)
    assert plan.estimate.total == Decimal("1.44")     # 0.05 * 3 * 8 * 1.2
    with pytest.raises(SpendingRefused, match=r"above --max-cost \$1.00"):
        prepare(run_dir, request(max_cost=Decimal("1.00")), SANDBOX)
    assert not os.path.exists(run_dir / "ledger.sqlite")
