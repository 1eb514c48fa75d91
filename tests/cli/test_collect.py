"""``cage-eval status / collect / review / expire`` through click's CliRunner."""

import csv

from click.testing import CliRunner
from fake_mturk import FakeMTurk
from mturk_helpers import (
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    PUBLISH_OPTIONS,
    tree_bytes,
)

from cage_eval import runs
from cage_eval.cli import cli
from hitgen.items import read_hit_items
from mturk.ledger import Ledger


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def test_status_collect_review_expire(aws_env, run_dir, fake):
    assert invoke("publish", run_dir, *PUBLISH_OPTIONS, "--attention-rate", "0.25",
                  "--endpoint-url", fake.url).exit_code == 0
    items = {it.item_id: it for it in read_hit_items(run_dir)}
    with Ledger.open(run_dir) as ledger:
        rows = ledger.rows()
    bad = []  # AWORKER0 fails both attention checks: the fair-rejection rule allows rejecting them
    for row in rows:
        item = items[row.item_id]
        for w in range(3):
            choice = item.expected or "top"
            if item.kind == "attention" and w == 0:
                choice = "bottom" if item.expected == "top" else "top"
                bad += [fake.add_assignment(row.hit_id, "AWORKER0", {"choice": choice, "item_id": item.item_id,
                                                                    "elapsed_ms": "800"})]
                continue
            fake.add_assignment(row.hit_id, f"AWORKER{w}", {"choice": choice, "item_id": item.item_id,
                                                            "elapsed_ms": "800"})
    url = ("--endpoint-url", fake.url)

    status = invoke("status", run_dir, *url)
    assert status.exit_code == 0, status.output
    assert "HITs: 10 of 10 published (0 uncertain, 0 not yet created); 0 expired\n" in status.stdout
    assert ("Assignments: 30 submitted, 0 approved, 0 rejected, 0 in progress, 0 still available\n"
            in status.stdout)
    assert "Cost so far: $0.00 paid, $1.80 committed (of $1.80 if every assignment is approved)" in status.stdout
    offline = invoke("status", run_dir, "--offline")
    assert offline.exit_code == 0 and "Estimated total: $1.80" in offline.stdout

    collected = invoke("collect", run_dir, *url)
    assert collected.exit_code == 0, collected.output
    assert collected.stdout == (f"Collected 30 assignments from 10 HITs (30 submitted, 0 approved, 0 rejected)\n"
                                f"Wrote {run_dir / runs.RESULTS}\n")
    with open(run_dir / runs.RESULTS, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == runs.RESULTS_COLUMNS and len(list(reader)) == 30

    no_feedback = invoke("review", run_dir, "--reject-failed-attention", "--yes", *url)
    assert no_feedback.exit_code == 1
    assert no_feedback.stderr == "Error: rejecting assignments needs --feedback TEXT: MTurk requires a reason that the worker will see\n"
    dry = invoke("review", run_dir, "--reject-failed-attention", "--dry-run", *url)
    assert dry.exit_code == 0 and f"reject {bad[0]} (worker AWORKER0" in dry.stdout
    assert "2 of 2 attention check(s) failed; rejection allowed" in dry.stdout
    assert all(a["AssignmentStatus"] == "Submitted" for a in fake.assignments.values())
    declined = invoke("review", run_dir, "--reject-failed-attention", "--feedback", "Wrong answer on "
                      "the attention check.", *url, input="n\n")
    assert declined.exit_code == 1 and "Approve 28 and reject 2 assignments on the MTurk sandbox?" in declined.output
    reviewed = invoke("review", run_dir, "--reject-failed-attention", "--feedback",
                      "Wrong answer on the attention check.", "--yes", *url)
    assert reviewed.exit_code == 0, reviewed.output
    assert reviewed.stdout.endswith("Approved 28, rejected 2\n")
    assert {fake.assignments[a]["AssignmentStatus"] for a in bad} == {"Rejected"}

    status = invoke("status", run_dir, *url)
    assert "Assignments: 0 submitted, 28 approved, 2 rejected" in status.stdout
    assert "Cost so far: $1.68 paid, $1.68 committed" in status.stdout

    expired = invoke("expire", run_dir, *url)
    assert expired.exit_code == 0 and expired.stdout == "Expired 10 HITs (0 were already expired)\n"
    assert all(h["HITStatus"] == "Reviewable" for h in fake.hits.values())
    assert invoke("expire", run_dir, *url).stdout == "Expired 0 HITs (10 were already expired)\n"

    again = invoke("collect", run_dir, *url)
    assert "(0 submitted, 28 approved, 2 rejected)" in again.stdout
    blob = tree_bytes(run_dir)
    assert DUMMY_ACCESS_KEY.encode() not in blob and DUMMY_SECRET_KEY.encode() not in blob


def test_commands_need_a_ledger(run_dir):
    for command in ("status", "collect", "review", "expire"):
        result = invoke(command, run_dir)
        assert result.exit_code == 1, command
        assert result.stderr == (f"Error: {run_dir / runs.LEDGER}: missing; nothing was published from "
                                 f"this run yet (run `cage-eval publish {run_dir}` first)\n")


def test_collect_with_expired_credentials_writes_nothing(aws_env, run_dir, fake):
    assert invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url).exit_code == 0
    with FakeMTurk(credential_error="ExpiredTokenException", max_lifetime_s=60) as expired:
        result = invoke("collect", run_dir, "--endpoint-url", expired.url)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "AWS refused the credentials (ExpiredTokenException" in result.stderr
    assert not (run_dir / runs.RESULTS).exists()
